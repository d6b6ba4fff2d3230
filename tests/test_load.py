"""Landing vendor exports in raw.*: parsing, merge on stable id, quarantine, idempotency."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tasks import contracts, load, screening
from tests.conftest import (
    github_issue,
    posthog_event,
    write_json,
    write_jsonl,
    zendesk_page,
    zendesk_ticket,
)


def quarantine(con, source):
    return con.execute(
        "select rule, record_key, payload from quality.quarantine where source = ? order by rule",
        [source],
    ).fetchall()


def test_posthog_lines_quarantine_bad_lines_and_keep_good_ones(con, tmp_path):
    good = [posthog_event(f"u-{i}") for i in range(5)]
    no_id = posthog_event("x")
    del no_id["uuid"]
    write_jsonl(
        tmp_path / "ph" / "events-2026-11-20.jsonl",
        [*good, '{"uuid": "broken", "event": ', no_id, good[1], "[1, 2]"],
    )
    stats = load.load_source(con, contracts.POSTHOG_EVENTS, str(tmp_path / "ph" / "*.jsonl"), "r1")

    assert stats.records_read == 9
    assert stats.n_inserted == 5
    assert stats.quarantine_reasons == {
        "invalid_json": 1,
        "missing_id": 1,
        "duplicate": 1,
        "not_an_object": 1,
    }
    assert stats.records_read == stats.n_landed + stats.n_quarantined  # nothing silently lost
    rules = [r[0] for r in quarantine(con, "posthog")]
    assert rules == ["duplicate", "invalid_json", "missing_id", "not_an_object"]
    ids = {r[0] for r in con.sql("select event_id from raw.posthog__events").fetchall()}
    assert ids == {f"u-{i}" for i in range(5)}


def test_reload_of_unchanged_files_is_skipped_and_idempotent(con, tmp_path):
    f = write_jsonl(tmp_path / "ph" / "e.jsonl", [posthog_event("a"), "{bad"])
    pattern = str(tmp_path / "ph" / "*.jsonl")
    load.load_source(con, contracts.POSTHOG_EVENTS, pattern, "r1")
    again = load.load_source(con, contracts.POSTHOG_EVENTS, pattern, "r2")
    assert (again.files_loaded, again.files_skipped) == (0, 1)

    # A touched (re-exported) file is read again, but merges to the same rows.
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    third = load.load_source(con, contracts.POSTHOG_EVENTS, pattern, "r3")
    assert (third.files_loaded, third.n_inserted, third.n_unchanged) == (1, 0, 1)
    assert con.sql("select count(*) from raw.posthog__events").fetchall()[0][0] == 1
    assert con.sql("select count(*) from quality.quarantine").fetchall()[0][0] == 1
    assert con.sql("select count(*) from ops.loaded_files").fetchall()[0][0] == 1


def test_zendesk_repeated_ticket_newest_version_wins(con, tmp_path):
    write_json(
        tmp_path / "zd" / "tickets-page-0001.json",
        zendesk_page(
            [zendesk_ticket(1, "2026-11-20T10:00:00Z", "open"), zendesk_ticket(2)], "c1", False
        ),
    )
    write_json(
        tmp_path / "zd" / "tickets-page-0002.json",
        zendesk_page(
            [
                zendesk_ticket(1, "2026-11-21T10:00:00Z", "solved"),
                zendesk_ticket(3, status="deleted"),
            ],
            "c2",
            True,
        ),
    )
    stats = load.load_source(con, contracts.ZENDESK_TICKETS, str(tmp_path / "zd" / "*.json"), "r1")
    assert (stats.records_read, stats.n_inserted, stats.n_superseded) == (4, 3, 1)
    rows = dict(
        con.sql("select ticket_id, payload ->> 'status' from raw.zendesk__tickets").fetchall()
    )
    assert rows == {1: "solved", 2: "open", 3: "deleted"}
    cursor = con.sql("select cursor_value from ops.sync_state where source = 'zendesk'").fetchall()
    assert cursor[0][0].startswith("2026-11-21")

    # A later export with an older version of ticket 1 must not roll it back.
    write_json(
        tmp_path / "zd" / "tickets-page-0003.json",
        zendesk_page([zendesk_ticket(1, "2026-11-19T10:00:00Z", "new")], "c3", True),
    )
    late = load.load_source(con, contracts.ZENDESK_TICKETS, str(tmp_path / "zd" / "*.json"), "r2")
    assert (late.n_unchanged, late.n_updated) == (1, 0)
    assert (
        con.sql(
            "select payload ->> 'status' from raw.zendesk__tickets where ticket_id = 1"
        ).fetchall()[0][0]
        == "solved"
    )


def test_zendesk_invalid_page_is_quarantined_whole_and_others_load(con, tmp_path):
    write_json(tmp_path / "zd" / "p1.json", zendesk_page([zendesk_ticket(1)], "c1", False))
    (tmp_path / "zd" / "p2.json").write_text('{"tickets": [{"id": 2', encoding="utf-8")
    stats = load.load_source(con, contracts.ZENDESK_TICKETS, str(tmp_path / "zd" / "*.json"), "r1")
    assert stats.n_inserted == 1
    assert stats.quarantine_reasons == {"invalid_json_file": 1}
    assert quarantine(con, "zendesk")[0][0] == "invalid_json_file"


def test_github_pull_requests_dropped_and_missing_node_id_quarantined(con, tmp_path):
    write_json(
        tmp_path / "gh" / "issues-page-001.json",
        [github_issue(1), github_issue(2, pr=True), github_issue(3, node_id=""), github_issue(4)],
    )
    stats = load.load_source(con, contracts.GITHUB_ISSUES, str(tmp_path / "gh" / "*.json"), "r1")
    assert (stats.n_inserted, stats.n_dropped, stats.n_quarantined) == (2, 1, 1)
    assert stats.records_read == stats.n_landed + stats.n_dropped + stats.n_quarantined
    assert quarantine(con, "github")[0][0] == "missing_id"


def test_failed_batch_commits_nothing(con, tmp_path, monkeypatch):
    write_jsonl(tmp_path / "ph" / "e.jsonl", [posthog_event("a")])

    def boom(*_a, **_k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(load.cursor, "_advance_cursor", boom)
    with pytest.raises(load.LoadError, match="nothing committed"):
        load.load_source(con, contracts.POSTHOG_EVENTS, str(tmp_path / "ph" / "*.jsonl"), "r1")
    assert con.sql("select count(*) from raw.posthog__events").fetchall()[0][0] == 0
    assert con.sql("select count(*) from ops.loaded_files").fetchall()[0][0] == 0
    monkeypatch.undo()
    stats = load.load_source(con, contracts.POSTHOG_EVENTS, str(tmp_path / "ph" / "*.jsonl"), "r2")
    assert stats.n_inserted == 1


def test_posthog_lines_land_once_and_repeats_resolve_across_files_and_loads(con, tmp_path):
    """The direct landing path: rows that need a decision leave raw before commit."""
    ph = tmp_path / "ph"
    write_jsonl(
        ph / "e1.jsonl",
        [posthog_event("a", event="first"), posthog_event(" b "), posthog_event("c")],
    )
    write_jsonl(
        ph / "e2.jsonl",
        [
            # repeat of a within the batch, same timestamp: the later file wins, e1's copy is
            # quarantined (the same copy a load of e1 and e2 in two batches keeps)
            posthog_event("a", event="second"),
            posthog_event("b"),  # the trimmed id of " b " in e1: a repeat too
            {"uuid": "  ", "event": "blank"},
            "not json",
        ],
    )
    stats = load.load_source(con, contracts.POSTHOG_EVENTS, str(ph / "*.jsonl"), "r1")
    assert (stats.records_read, stats.n_inserted) == (7, 3)
    assert stats.quarantine_reasons == {"duplicate": 2, "missing_id": 1, "invalid_json": 1}
    rows = dict(con.sql("select event_id, event from raw.posthog__events").fetchall())
    assert rows == {"a": "second", "b": "export_started", "c": "export_started"}
    assert (
        con.sql("select count(*) from raw.posthog__events where _batch_id like '%!%'").fetchall()[
            0
        ][0]
        == 0
    )
    files = con.sql(
        "select regexp_extract(path, '[^/]+$'), n_records, n_quarantined from ops.loaded_files "
        "order by 1"
    ).fetchall()
    assert files == [("e1.jsonl", 3, 2), ("e2.jsonl", 4, 2)]
    dup = con.sql(
        "select payload from quality.quarantine where rule = 'duplicate' and record_key = 'b'"
    ).fetchall()
    assert '"uuid":" b "' in dup[0][0]

    # Next export: a changed version of c (newer), a of e1 again (same timestamp, later file:
    # it wins), an older changed b.
    write_jsonl(
        ph / "e3.jsonl",
        [
            posthog_event("c", event="changed", ts="2026-11-21T10:00:00+00:00"),
            posthog_event("a", event="first"),
            posthog_event("b", event="older", ts="2026-11-19T10:00:00+00:00"),
            posthog_event("d"),
        ],
    )
    again = load.load_source(con, contracts.POSTHOG_EVENTS, str(ph / "*.jsonl"), "r2")
    assert (again.n_inserted, again.n_updated, again.n_unchanged) == (1, 2, 1)
    rows = dict(con.sql("select event_id, event from raw.posthog__events").fetchall())
    assert rows == {"a": "first", "b": "export_started", "c": "changed", "d": "export_started"}
    assert con.sql("select count(*), count(distinct event_id) from raw.posthog__events").fetchall()[
        0
    ] == (4, 4)


def test_files_cursor_is_the_newest_landed_and_an_unreadable_timestamp_does_not_replace(
    con, tmp_path
):
    ph = tmp_path / "ph"
    write_jsonl(
        ph / "e1.jsonl",
        [posthog_event("a", ts="2026-11-21T10:00:00+00:00"), posthog_event("b")],
    )
    load.load_source(con, contracts.POSTHOG_EVENTS, str(ph / "*.jsonl"), "r1")
    # A re-export of a without a readable timestamp: an unreadable timestamp is the oldest
    # (_VERSION_ORDER), so the stored version stays, as it would with both files in one batch.
    write_jsonl(ph / "e2.jsonl", [posthog_event("a", event="fixed", ts="soon")])
    again = load.load_source(con, contracts.POSTHOG_EVENTS, str(ph / "*.jsonl"), "r2")
    assert (again.n_updated, again.n_unchanged) == (0, 1)
    assert con.sql("select event from raw.posthog__events where event_id = 'a'").fetchall() == [
        ("export_started",)
    ]
    cursor = con.sql(
        "select cursor_value from ops.sync_state "
        "where source = 'posthog' and stream = 'files:events'"
    ).fetchall()[0][0]
    newest = con.sql(
        "select max(try_cast(cursor_at as timestamptz))::varchar from raw.posthog__events"
    ).fetchall()[0][0]
    assert cursor == newest and cursor.startswith("2026-11-21")


def test_query_pages_read_in_one_pass_and_pages_it_cannot_read_are_set_aside(con, tmp_path):
    from tasks.clients.posthog import POSTHOG_QUERY_EVENTS
    from tasks.contracts import LandedPage

    def row(uuid, props='{"$pathname": "/a"}'):
        return [uuid, "viewed", "u1", "2026-11-20T10:00:00.000000+00:00", props]

    good = {"results": [row("a"), None, row("b", props={"$pathname": "/b"}), row("a")]}
    pages = [
        LandedPage(json.dumps(good).encode(), {"n": 1}, 4),
        LandedPage(b'{"results": [["c", "viewed"', {"n": 2}, 1),
        LandedPage(b"\xef\xbb\xbf" + json.dumps({"results": [row("d")]}).encode(), {"n": 3}, 1),
    ]
    stats = load.load_pages(con, POSTHOG_QUERY_EVENTS, pages, "r1", tmp_path / "land")
    assert stats.n_inserted == 2
    # A page it cannot read stops the load before it (the cursor stays after page 1, so the
    # next run fetches page 2 again); the page after it is not read this run.
    assert stats.quarantine_reasons == {"missing_id": 1, "duplicate": 1, "invalid_json_file": 1}
    assert stats.files_rejected == 1
    assert load.read_state(con, "posthog", "events") == {"n": 1}
    bom = load.load_pages(con, POSTHOG_QUERY_EVENTS, pages[2:], "r1b", tmp_path / "land")
    assert (bom.files_rejected, bom.quarantine_reasons) == (1, {"invalid_json_file": 1})
    assert load.read_state(con, "posthog", "events") == {"n": 1}
    reasons = [r[0] for r in con.sql("select reason from quality.quarantine order by 1").fetchall()]
    assert any(r.endswith("000000.json #2)") for r in reasons)  # the null row, page position 2
    # the earlier copy of a (same timestamp: the later position wins)
    assert any(r.endswith("000000.json #1)") for r in reasons)
    props = dict(
        con.sql(
            """select event_id, properties ->> '$."$pathname"' from raw.posthog__events"""
        ).fetchall()
    )
    assert props == {"a": "/a", "b": "/b"}

    # Without the unreadable pages the same records load through the one-pass read alike.
    con.execute("delete from raw.posthog__events")
    again = load.load_pages(con, POSTHOG_QUERY_EVENTS, pages[:1], "r2", tmp_path / "land")
    assert (again.n_inserted, again.quarantine_reasons) == (2, {"missing_id": 1, "duplicate": 1})


def _raw_rows(con, table: str) -> list:
    cols = [
        c
        for (c,) in con.execute(
            "select column_name from information_schema.columns where table_schema = 'raw' "
            "and table_name = ? and column_name not in ('_batch_id', '_loaded_at') "
            "order by ordinal_position",
            [table],
        ).fetchall()
    ]
    sel = ", ".join(f"{c}::varchar" for c in cols)
    return con.execute(f"select {sel} from raw.{table} order by all").fetchall()


@pytest.mark.parametrize(
    "spec_name, table",
    [("POSTHOG_EVENTS", "posthog__events"), ("ZENDESK_TICKETS", "zendesk__tickets")],
)
def test_repeats_resolve_the_same_in_any_batch_split_and_order(tmp_path, spec_name, table):
    """The copy kept does not depend on which files share a batch nor on their load order:
    vendor timestamp, then the later file, then the later line (PostHog too, whose losing copies
    in a batch are quarantined)."""
    import duckdb

    from tasks import db

    spec = getattr(contracts, spec_name)
    src = tmp_path / "src"
    early, late = "2026-11-20T10:00:00+00:00", "2026-11-21T10:00:00+00:00"
    if spec is contracts.POSTHOG_EVENTS:
        files = {
            "e1.jsonl": [posthog_event("a", event="a-e1", ts=late), posthog_event("b", "b-e1")],
            "e2.jsonl": [posthog_event("a", event="a-e2"), posthog_event("b", event="b-e2")],
            "e3.jsonl": [posthog_event("b", event="b-e3"), posthog_event("c", event="c-e3")],
        }
        for name, rows in files.items():
            write_jsonl(src / name, rows)
        pattern = "*.jsonl"
    else:

        def t(i, subject, ts):
            return zendesk_ticket(i, updated=ts, subject=subject)

        pages = {
            "p1.json": [t(1, "1-p1", late), t(2, "2-p1", early)],
            "p2.json": [t(1, "1-p2", early), t(2, "2-p2", early), t(2, "2-p2b", early)],
            "p3.json": [t(2, "2-p3", early), t(3, "3-p3", early)],
        }
        for name, tickets in pages.items():
            write_json(src / name, zendesk_page(tickets, "c", True))
        pattern = "*.json"
    names = sorted(p.name for p in src.iterdir())

    def load_in(groups: list[list[str]]) -> list:
        d = tmp_path / ("w-" + "-".join("_".join(g) for g in groups))
        c = duckdb.connect(str(d) + ".duckdb")
        db.ensure_schema(c)
        for i, group in enumerate(groups):
            for name in group:  # only this group's files are visible to this load
                (d / name).parent.mkdir(parents=True, exist_ok=True)
                (d / name).write_bytes((src / name).read_bytes())
            load.load_source(c, spec, str(d / pattern), f"r{i}")
        rows = [tuple(str(v).replace(str(d), "<D>") for v in r) for r in _raw_rows(c, table)]
        c.close()
        return rows

    one_batch = load_in([names])
    assert one_batch == load_in([[n] for n in names])
    assert one_batch == load_in([[n] for n in reversed(names)])
    assert one_batch == load_in([[names[2], names[0]], [names[1]]])
    text = " ".join(str(r) for r in one_batch)
    if spec is contracts.POSTHOG_EVENTS:
        # a: the newer timestamp (e1); b: same timestamp everywhere, the last file (e3).
        assert "a-e1" in text and "b-e3" in text and "a-e2" not in text and "b-e2" not in text
    else:
        # 1: the newer updated_at (p1); 2: same updated_at, the last page (p3).
        assert "1-p1" in text and "2-p3" in text and "1-p2" not in text and "2-p2" not in text


# HogQL result rows: ordinary ones, and every shape the record SQL must survive (nulls, short and
# long rows, non-array rows, non-string cells, properties that are not JSON, JSON scalars, odd
# numbers and escapes, duplicates of one uuid).
_HOGQL_ROWS = [
    ["u1", "e", "d", "2026-11-20T10:00:00+00:00", '{"a": 1, "b" : [2.50, -0.0, 1e400]}'],
    ["u2", None, None, None, None],
    ["u3", "e", "d", "2026-11-20T10:00:01+00:00", "not json"],
    ["u4", "e", "d", "2026-11-20T10:00:02+00:00", "null"],
    ["u5", "e", "d", "t", "5"],
    ["u6", "e", "d", "t", '"str"'],
    ["u7", 5, True, 1.5, {"obj": [1, {"x": None}]}],
    [" u8 ", "é😀\\", "\u0001ctl", 'ts"q/', ""],
    ["u9"],
    [],
    None,
    {"a": 1},
    "s",
    7,
    ["u10", "e", "d", "t", '{"dup":1,"dup":2,"n":12345678901234567890123}', "extra"],
    ["u11", "e", "d", {"t": 1}, [1, 2]],
    ["u12", "e", "d", "t", '  {"sp" :  true, "c": "x\\u00e9/\\"q"}  '],
    ["u1", "e2", "d", "2026-11-20T11:00:00+00:00", "{}"],
]


def test_posthog_query_record_fields_equal_the_record_sql_object(tmp_path, monkeypatch):
    """The PostHog query spec's one-parse typed fields land exactly what its record_sql object
    gave: raw rows, quarantine rows and counts, on the fast page path and the staging path."""
    import dataclasses

    import duckdb

    from tasks import db
    from tasks.clients.posthog import POSTHOG_QUERY_EVENTS
    from tasks.contracts import LandedPage

    assert POSTHOG_QUERY_EVENTS.record_fields
    old_spec = dataclasses.replace(POSTHOG_QUERY_EVENTS, record_fields=None)
    pages = [
        {"results": _HOGQL_ROWS[:9]},
        {"results": _HOGQL_ROWS[9:]},
        {"results": [["u20", "e", "d", "t", "{}"]]},
    ]

    def land(spec, name) -> tuple[list, list, dict]:
        con = duckdb.connect(str(tmp_path / f"{name}.duckdb"))
        db.ensure_schema(con)
        bodies = [json.dumps(p).encode() for p in pages]
        stats = load.load_pages(
            con,
            spec,
            [LandedPage(b, {"n": i}, 1) for i, b in enumerate(bodies)],
            "r1",
            tmp_path / "landing",
        )
        raw = con.sql(
            "select * exclude (_batch_id, _loaded_at) from raw.posthog__events order by all"
        ).fetchall()
        rejects = con.sql(
            "select quarantine_id, rule, record_key, reason, payload from quality.quarantine "
            "order by all"
        ).fetchall()
        con.close()
        counts = stats.as_dict()
        for k in ("seconds", "batches"):
            counts.pop(k, None)
        return raw, rejects, counts

    fast = land(old_spec, "old"), land(POSTHOG_QUERY_EVENTS, "new")
    assert fast[1] == fast[0]
    assert len(fast[0][0]) >= 10 and fast[0][1]
    # The staging path (read_text + json_extract), taken when read_json refuses a batch.
    monkeypatch.setattr(load.parse, "_read_pages", lambda *a: False)
    staged = land(old_spec, "old-staged"), land(POSTHOG_QUERY_EVENTS, "new-staged")
    assert staged[1] == staged[0]
    assert staged[0] == fast[0]


def test_posthog_query_pages_land_direct_as_on_the_staging_path(tmp_path, monkeypatch):
    """Pages of clean rows land straight in raw (read once as record_type, _land_direct) with
    the raw rows, merge outcomes, quarantine rows and counts of the staging path; a batch with
    a row the type does not fit, a repeated id or no usable id takes the staging path."""
    import dataclasses

    import duckdb

    from tasks import db
    from tasks.clients.posthog import POSTHOG_QUERY_EVENTS
    from tasks.contracts import LandedPage

    clean = [r for r in _HOGQL_ROWS[:-1] if isinstance(r, list) and r and r[0] != " u8 "]
    pages = [
        clean,
        # u1 updated, u3 re-delivered unchanged, u4 an older version (the stored row stays)
        [
            ["u1", "e2", "d", "2026-11-20T11:00:00+00:00", "{}"],
            _HOGQL_ROWS[2],
            ["u4", "old", "d", "2026-11-19T10:00:02+00:00", "{}"],
            ["u13", "e", "d", "2026-11-20T12:00:00+00:00", '{"k": "v"}'],
        ],
        [["u14", "e", "d", "t", "{}"], {"a": 1}],  # a row that is not an array
        [["u15", "e", "d", "t", "{}"], ["u15", "e", "d", "t", '{"x": 1}']],  # a repeat
        [["u16", "e", "d", "t", "{}"], [" u8 ", "e", "d", "t", "{}"], []],  # ids to decide
        [["u17", "e", "d", "2026-11-21T00:00:00+00:00", "[1]"]],
    ]
    direct: list[bool] = []
    land_direct = load.direct._land_direct

    def spy(*args, **kwargs):
        try:
            out = land_direct(*args, **kwargs)
        except Exception:
            direct.append(False)
            raise
        direct.append(True)
        return out

    monkeypatch.setattr(load.direct, "_land_direct", spy)

    def land(spec, name) -> tuple[list, list, dict]:
        con = duckdb.connect(str(tmp_path / f"{name}.duckdb"))
        db.ensure_schema(con)
        stats = load.load_pages(
            con,
            spec,
            [
                LandedPage(json.dumps({"results": p}).encode(), {"n": i}, 1)
                for i, p in enumerate(pages)
            ],
            "r1",
            tmp_path / "landing",
            batch_bytes=1,
        )
        raw = con.sql(
            "select * exclude (_batch_id, _loaded_at) from raw.posthog__events order by all"
        ).fetchall()
        rejects = con.sql(
            "select quarantine_id, rule, record_key, reason, payload from quality.quarantine "
            "order by all"
        ).fetchall()
        state = load.read_state(con, spec.source, spec.stream)
        con.close()
        counts = stats.as_dict()
        counts.pop("seconds")
        return raw, rejects, counts | {"state": state}

    assert POSTHOG_QUERY_EVENTS.record_type
    staged = land(dataclasses.replace(POSTHOG_QUERY_EVENTS, record_type=None), "staged")
    assert direct == []
    landed = land(POSTHOG_QUERY_EVENTS, "direct")
    assert direct == [True, True, False, False, False, True]
    assert landed == staged
    assert landed[2]["n_updated"] == 1 and landed[2]["n_unchanged"] == 2
    assert landed[2]["state"] == {"n": 5} and landed[1]


def test_posthog_repeats_within_a_file_land_as_in_read_order(tmp_path, monkeypatch):
    """An id repeated within one file: the batch lands as the order-preserving insert lands
    it, whether the copies are exact repeats of a line (landed without the ordered retry) or
    differ (retried in order)."""
    import functools

    import duckdb

    from tasks import db

    a, b = posthog_event("a"), posthog_event("b")
    b_later = posthog_event("b", event="other_event")
    c_null = posthog_event("c", ts=None)
    write_jsonl(
        tmp_path / "ph" / "events-1.jsonl",
        [a, posthog_event("x1"), a, b, b_later, c_null, c_null, "{bad", posthog_event("x2")],
    )
    write_jsonl(tmp_path / "ph" / "events-2.jsonl", [a, posthog_event("x3"), c_null])

    def land(name: str) -> tuple:
        con = duckdb.connect(str(tmp_path / f"{name}.duckdb"))
        db.ensure_schema(con)
        stats = load.load_source(
            con, contracts.POSTHOG_EVENTS, str(tmp_path / "ph" / "*.jsonl"), "r"
        )
        raw = con.sql(
            "select * exclude (_batch_id, _loaded_at) from raw.posthog__events order by all"
        ).fetchall()
        rejects = con.sql(
            "select quarantine_id, rule, record_key, reason, payload from quality.quarantine "
            "order by all"
        ).fetchall()
        con.close()
        counts = stats.as_dict()
        counts.pop("seconds")
        return raw, rejects, counts

    retries = []
    land_direct = load.direct._land_direct

    def counting(*args, **kwargs):
        retries.append(kwargs.get("ordered", False))
        return land_direct(*args, **kwargs)

    monkeypatch.setattr(load.direct, "_land_direct", counting)
    got = land("default")
    assert retries == [False, True]  # b's copies differ: retried in order
    monkeypatch.setattr(load.direct, "_land_direct", functools.partial(land_direct, ordered=True))
    assert got == land("ordered")
    assert got[2]["quarantine_reasons"] == {"duplicate": 5, "invalid_json": 1}

    # Only exact repeats: no retry, the same outcome as in order.
    write_jsonl(tmp_path / "ph" / "events-1.jsonl", [a, posthog_event("x1"), a, c_null, c_null])
    (tmp_path / "default.duckdb").unlink()
    (tmp_path / "ordered.duckdb").unlink()
    retries.clear()
    monkeypatch.setattr(load.direct, "_land_direct", counting)
    got = land("default")
    assert retries == [False]
    monkeypatch.setattr(load.direct, "_land_direct", functools.partial(land_direct, ordered=True))
    assert got == land("ordered")
    assert got[2]["quarantine_reasons"] == {"duplicate": 4}


def test_page_screen_one_parse_agrees_with_the_close_look(tmp_path):
    """_page_rejects answers {} from one json_type per page only when every page has its list;
    a batch with any other page (invalid JSON, an error body, the list an object) gets the close
    look, which names exactly the pages at fault."""
    import duckdb

    from tasks.clients.posthog import POSTHOG_QUERY_EVENTS

    con = duckdb.connect()
    bodies = {
        "ok": '{"results": [["u1"]]}',
        "ok2": '{"results": [], "hasMore": false}',
        "truncated": '{"results": [["u1"]',
        "error": '{"error": "rate limited"}',
        "object": '{"results": {"u1": 1}}',
        "trailing": '{"results": []} x',
    }
    paths = {}
    for name, body in bodies.items():
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(body)
    spec = POSTHOG_QUERY_EVENTS
    assert screening.page_rejects(con, spec, [paths["ok"], paths["ok2"]]) == {}
    got = screening.page_rejects(con, spec, list(paths.values()))
    assert {Path(f).stem: rule for f, (rule, _) in got.items()} == {
        "truncated": "invalid_json_file",
        "error": "error_page",
        "object": "unexpected_page_shape",
        "trailing": "invalid_json_file",
    }


# --------------------------------------------------------------------------------------------
# Fetching ahead (load_pages): the next pages are requested while a batch lands
# --------------------------------------------------------------------------------------------


class _Pages:
    """A page generator that records how far it got and whether it was closed."""

    def __init__(self, n: int, fail_after: int | None = None) -> None:
        self.n, self.fail_after = n, fail_after
        self.produced = 0
        self.closed = False

    def __iter__(self):
        try:
            for i in range(self.n):
                if self.fail_after is not None and i == self.fail_after:
                    raise ConnectionError(f"page {i} failed")
                self.produced += 1
                yield i
        finally:
            self.closed = True


def test_fetch_ahead_keeps_order_stays_within_its_depth_and_raises_errors_in_place():
    import time as _time

    src = _Pages(10)
    ahead = load.pages._FetchAhead(src, depth=2)
    got = []
    for page in ahead:
        _time.sleep(0.01)  # the producer has time to run ahead as far as it may
        # in hand + at most 2 queued (the producer waits for room before it fetches)
        assert src.produced <= page + 1 + 2
        got.append(page)
    ahead.close()
    assert got == list(range(10)) and src.closed

    failing = _Pages(10, fail_after=3)
    ahead = load.pages._FetchAhead(failing, depth=2)
    seen = []
    with pytest.raises(ConnectionError, match="page 3 failed"):
        for page in ahead:
            seen.append(page)
    ahead.close()
    assert seen == [0, 1, 2]  # every page fetched before the failure is handed over first


def test_fetch_ahead_holds_at_most_its_bytes_of_pages_but_always_one():
    import time as _time

    from tasks.contracts import LandedPage

    produced = []

    def pages(sizes):
        for i, n in enumerate(sizes):
            produced.append(i)
            yield LandedPage(b"x" * n, {"i": i}, 1, True)

    # 100-byte pages against a 250-byte cap: three wait at most (the cap is reached at 300)
    ahead = load.pages._FetchAhead(pages([100] * 10), depth=8, max_bytes=250)
    it = iter(ahead)
    first = next(it)
    _time.sleep(0.2)
    assert first.state == {"i": 0} and len(produced) == 1 + 3
    assert [p.state["i"] for p in it] == list(range(1, 10))
    ahead.close()

    # a page larger than the cap still comes through, one at a time
    produced.clear()
    ahead = load.pages._FetchAhead(pages([1000] * 3), depth=8, max_bytes=250)
    it = iter(ahead)
    next(it)
    _time.sleep(0.2)
    assert len(produced) == 2
    assert len(list(it)) == 2
    ahead.close()


def test_fetch_ahead_close_stops_the_producer_and_runs_in_the_callers_context():
    import contextvars

    var = contextvars.ContextVar("run", default="none")
    var.set("flow-run-1")
    seen_context = []

    def pages():
        for i in range(1000):
            seen_context.append(var.get())
            yield i

    src = pages()
    ahead = load.pages._FetchAhead(src, depth=2)
    first = next(iter(ahead))
    ahead.close()  # joins the thread: nothing is fetched after close returns
    n = len(seen_context)
    assert first == 0 and n <= 4
    assert set(seen_context) == {"flow-run-1"}
    assert src.gi_frame is None  # the generator was closed
    assert len(seen_context) == n


def test_load_pages_with_a_failing_fetch_commits_the_pages_before_it(con, tmp_path):
    from tasks.clients.posthog import POSTHOG_QUERY_EVENTS
    from tasks.contracts import LandedPage

    def page(i):
        rows = [[f"e{i}", "viewed", "u1", "2026-11-20T10:00:00.000000+00:00", "{}"]]
        return LandedPage(json.dumps({"results": rows}).encode(), {"page": i}, 1, True)

    def pages():
        yield page(1)
        yield page(2)
        raise ConnectionError("page 3: connection reset")

    with pytest.raises(ConnectionError, match="page 3"):
        load.load_pages(con, POSTHOG_QUERY_EVENTS, pages(), "r1", tmp_path / "land", batch_bytes=1)
    assert load.read_state(con, "posthog", "events") == {"page": 2}
    ids = con.sql("select event_id from raw.posthog__events order by 1").fetchall()
    assert ids == [("e1",), ("e2",)]
    assert not list((tmp_path / "land").iterdir())  # no page left on disk


def test_a_page_the_connector_checked_still_goes_through_the_byte_screen(con, tmp_path):
    from tasks.clients.posthog import POSTHOG_QUERY_EVENTS, parse_page
    from tasks.contracts import LandedPage

    body = b"<html><body>502 Bad Gateway</body></html>"
    stats = load.load_pages(
        con, POSTHOG_QUERY_EVENTS, [LandedPage(body, {"n": 1}, 0, True)], "r1", tmp_path / "l"
    )
    assert (stats.files_rejected, stats.quarantine_reasons) == (1, {"html_file": 1})
    assert load.read_state(con, "posthog", "events") is None
    # The connector claims the check only for bodies the loader's own JSON reader (DuckDB's)
    # read as an object with a `results` list; a lone surrogate only Python's parser accepts.
    strict = parse_page(b'{"results": [["a", "e", "u", "2026-11-20T10:00:00Z", "{}"]]}')
    lenient = parse_page(b'{"results": [["a", "e", "u", "2026-11-20T10:00:00Z", "\\ud800"]]}')
    assert strict.strict and not lenient.strict
    assert (strict.n, strict.first[0], lenient.n) == (1, "a", 1)


def test_posthog_page_summary_reads_the_ends_count_and_more_and_names_bad_pages():
    from tasks.clients.http import InvalidResponseError
    from tasks.clients.posthog import COLUMNS, parse_page

    rows = [[f"u{i}", "e", "d", f"2026-11-20T10:00:0{i}Z", "{}"] for i in range(3)]
    body = json.dumps({"columns": COLUMNS, "hasMore": True, "results": rows}).encode()
    page = parse_page(body)
    assert (page.n, page.first, page.last, page.more, page.strict) == (
        3,
        rows[0],
        rows[2],
        True,
        True,
    )
    assert parse_page(b'{"results": []}')[:4] == (0, None, None, None)
    bad = {
        b'{"results": {"a": 1}}': "no `results` list",
        b'[["a"]]': "no `results` list",
        b'{"results": [["a", "e"]]}': "not a 5-column array",
        b'{"columns": ["uuid"], "results": []}': "unexpected result columns",
        b'{"results": [["a", "e", "u", "t", "{}"]': "not valid JSON",
        b'{"results": ["\xff"]}': "not valid JSON",
    }
    for text, problem in bad.items():
        with pytest.raises(InvalidResponseError, match=problem):
            parse_page(text)


def _posthog_rows(con):
    return sorted(
        con.sql(
            "select event_id, event, properties::varchar, _source_file from raw.posthog__events"
        ).fetchall()
    )


def test_rows_a_batch_sets_aside_go_after_its_commit_even_if_the_process_died_in_between(
    con, tmp_path, monkeypatch
):
    """A bad line, a missing id, a losing repeat and an unchanged re-delivery are deleted
    after the batch commits (not in its transaction: DuckDB would re-append the batch). A
    process that dies in between leaves them committed with '<batch>!…' ids and a row in
    ops.load_purges; the next load deletes them before anything else, and raw is then what a
    load that never died gives."""
    ph = tmp_path / "ph"
    write_jsonl(ph / "e1.jsonl", [posthog_event("a"), posthog_event("b")])
    no_id = posthog_event("x")
    del no_id["uuid"]
    write_jsonl(
        ph / "e2.jsonl",
        [posthog_event("b"), posthog_event("c"), posthog_event("c", event="later"), no_id, "{"],
    )
    clean = tmp_path / "clean.duckdb"
    from tasks import db

    with db.warehouse(clean) as other:
        db.ensure_schema(other)
        load.load_source(other, contracts.POSTHOG_EVENTS, str(ph / "e1.jsonl"), "r1")
        want_stats = load.load_source(other, contracts.POSTHOG_EVENTS, str(ph / "*.jsonl"), "r2")
        want = _posthog_rows(other)
        assert other.sql("select count(*) from ops.load_purges").fetchall() == [(0,)]
    assert want_stats.quarantine_reasons == {"duplicate": 1, "missing_id": 1, "invalid_json": 1}
    assert want_stats.n_unchanged == 1  # b, delivered again unchanged

    load.load_source(con, contracts.POSTHOG_EVENTS, str(ph / "e1.jsonl"), "r1")

    def killed(*_args):
        raise KeyboardInterrupt  # where a kill after the commit would stop the process

    monkeypatch.setattr(load.purge, "_purge_after_commit", killed)
    with pytest.raises(KeyboardInterrupt):
        load.load_source(con, contracts.POSTHOG_EVENTS, str(ph / "*.jsonl"), "r2")
    monkeypatch.undo()
    set_aside = con.sql(
        "select count(*) from raw.posthog__events where _batch_id like '%!%'"
    ).fetchall()[0][0]
    assert set_aside == 4  # the unparsed line, the missing id, c's losing copy, b again
    assert con.sql("select count(*) from ops.load_purges").fetchall() == [(1,)]
    # committed with its batch: the files, the quarantine, the cursor
    assert con.sql("select count(*) from ops.loaded_files").fetchall() == [(2,)]
    assert con.sql("select count(*) from quality.quarantine").fetchall() == [(3,)]

    again = load.load_source(con, contracts.POSTHOG_EVENTS, str(ph / "*.jsonl"), "r3")
    assert (again.files_loaded, again.files_skipped) == (0, 2)
    assert con.sql("select count(*) from ops.load_purges").fetchall() == [(0,)]
    assert _posthog_rows(con) == want
