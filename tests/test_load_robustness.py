"""The loader under bad input: files and pages set aside whole (recorded, never retried until they
change, no raw text kept), invalid UTF-8 lines quarantined alone, gzip read by magic bytes, pages
checked against the vendor's documented shape, deterministic newest-wins, conserved quarantine."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from pathlib import Path

import duckdb
import pytest

from tasks import contracts, load, screening
from tasks.clients.mixpanel import MIXPANEL_EVENTS
from tests.conftest import (
    github_issue,
    posthog_event,
    write_json,
    write_jsonl,
    zendesk_page,
    zendesk_ticket,
)

SECRET = "jane.doe@example.com"  # stands for personal data inside a bad line or file


def conserved(stats: load.LoadStats) -> bool:
    """rows in = landed + superseded + dropped + quarantined."""
    return stats.records_read == (
        stats.n_landed + stats.n_superseded + stats.n_dropped + stats.n_quarantined
    )


def quarantine_rows(con, source: str) -> list[tuple]:
    return con.execute(
        "select rule, reason, payload, source_file from quality.quarantine where source = ? "
        "order by rule, reason",
        [source],
    ).fetchall()


def loaded_files(con, source: str) -> dict[str, tuple]:
    return {
        Path(p).name: (status, rule, sha)
        for p, status, rule, sha in con.execute(
            "select path, status, reject_rule, sha256 from ops.loaded_files where source = ?",
            [source],
        ).fetchall()
    }


def test_invalid_utf8_line_is_quarantined_alone_and_the_rest_of_the_batch_loads(con, tmp_path):
    ph = tmp_path / "ph"
    write_jsonl(ph / "a.jsonl", [posthog_event("a1"), posthog_event("a2")])
    bad_line = (
        json.dumps(posthog_event("b2", user=SECRET)).encode().replace(b"Firefox", b"Fire\xff")
    )
    (ph / "b.jsonl").write_bytes(
        json.dumps(posthog_event("b1")).encode()
        + b"\n"
        + bad_line
        + b"\n"
        + json.dumps(posthog_event("b3")).encode()
        + b"\n"
    )
    write_jsonl(ph / "c.jsonl", [posthog_event("c1")])

    stats = load.load_source(con, contracts.POSTHOG_EVENTS, str(ph / "*.jsonl"), "r1")

    assert (stats.files_loaded, stats.files_rejected, stats.records_read) == (3, 0, 6)
    assert (stats.n_inserted, stats.quarantine_reasons) == (5, {"invalid_utf8": 1})
    assert conserved(stats)
    ids = {r[0] for r in con.sql("select event_id from raw.posthog__events").fetchall()}
    assert ids == {"a1", "a2", "b1", "b3", "c1"}
    ((rule, reason, payload, source_file),) = quarantine_rows(con, "posthog")
    assert rule == "invalid_utf8" and reason.endswith("(b.jsonl #2)")
    assert "line 2 is not valid UTF-8" in reason and "Fire\\xff" in payload
    assert SECRET not in payload and "[email]" in payload  # kept redacted, like landed text
    assert source_file == str(ph / "b.jsonl")
    files = con.sql(
        "select regexp_extract(path, '[^/]+$'), status, n_records, n_quarantined "
        "from ops.loaded_files order by 1"
    ).fetchall()
    assert files == [
        ("a.jsonl", "loaded", 2, 0),
        ("b.jsonl", "loaded", 3, 1),
        ("c.jsonl", "loaded", 1, 0),
    ]


def test_gzip_is_read_by_its_magic_bytes_whatever_the_file_is_called(con, tmp_path):
    ph, zd = tmp_path / "ph", tmp_path / "zd"
    ph.mkdir()
    zd.mkdir()
    lines = [json.dumps(posthog_event(f"g{i}")) for i in range(3)] + ["{not json"]
    (ph / "events.jsonl").write_bytes(gzip.compress("\n".join(lines).encode() + b"\n"))
    page = zendesk_page([zendesk_ticket(1), zendesk_ticket(2)], "c1", True)
    (zd / "page.json").write_bytes(gzip.compress(json.dumps(page).encode()))

    events = load.load_source(con, contracts.POSTHOG_EVENTS, str(ph / "*.jsonl"), "r1")
    tickets = load.load_source(con, contracts.ZENDESK_TICKETS, str(zd / "*.json"), "r1")

    assert (events.n_inserted, events.quarantine_reasons) == (3, {"invalid_json": 1})
    assert (tickets.n_inserted, tickets.files_rejected) == (2, 0)
    # Rows and quarantine name the file as it is on disk, not the decompressed copy.
    assert con.sql("select distinct _source_file from raw.posthog__events").fetchall() == [
        (str(ph / "events.jsonl"),)
    ]
    assert con.sql("select distinct _source_file from raw.zendesk__tickets").fetchall() == [
        (str(zd / "page.json"),)
    ]
    ((_, reason, _, source_file),) = quarantine_rows(con, "posthog")
    assert reason.endswith("(events.jsonl #4)") and source_file == str(ph / "events.jsonl")


def test_binary_html_and_corrupt_gzip_files_are_rejected_whole_once(con, tmp_path):
    ph = tmp_path / "ph"
    write_jsonl(ph / "a-good.jsonl", [posthog_event("a1")])
    (ph / "b-binary.jsonl").write_bytes(b"\x00\x01PK" + SECRET.encode() + b"\x00" * 20)
    (ph / "c-html.jsonl").write_text(
        f"<!DOCTYPE html><html><body>Sign in {SECRET}</body></html>\n", encoding="utf-8"
    )
    (ph / "d-broken.jsonl").write_bytes(gzip.compress(SECRET.encode() * 50)[:30])
    pattern = str(ph / "*.jsonl")

    stats = load.load_source(con, contracts.POSTHOG_EVENTS, pattern, "r1")

    assert (stats.files_seen, stats.files_loaded, stats.files_rejected) == (4, 1, 3)
    assert stats.quarantine_reasons == {"undecodable_file": 2, "html_file": 1}
    assert stats.n_inserted == 1 and conserved(stats)
    rows = quarantine_rows(con, "posthog")
    assert len(rows) == 3
    for _rule, reason, payload, source_file in rows:
        assert SECRET not in reason and SECRET not in payload  # no raw text is kept
        sha = hashlib.sha256(Path(source_file).read_bytes()).hexdigest()
        assert json.loads(payload)["sha256"] == sha
    assert any("NUL byte at byte 0" in r[1] for r in rows)
    assert len(stats.warnings) == 3 and not any(SECRET in w for w in stats.warnings)
    files = loaded_files(con, "posthog")
    assert files["a-good.jsonl"][:2] == ("loaded", None)
    assert files["b-binary.jsonl"][:2] == ("rejected", "undecodable_file")
    assert files["c-html.jsonl"][:2] == ("rejected", "html_file")
    assert files["d-broken.jsonl"][:2] == ("rejected", "undecodable_file")

    # Not retried: unchanged, or only touched (same bytes), they stay set aside.
    again = load.load_source(con, contracts.POSTHOG_EVENTS, pattern, "r2")
    assert (again.files_skipped, again.files_rejected, again.records_read) == (4, 0, 0)
    html = ph / "c-html.jsonl"
    os.utime(html, ns=(html.stat().st_atime_ns, html.stat().st_mtime_ns + 10**9))
    touched = load.load_source(con, contracts.POSTHOG_EVENTS, pattern, "r3")
    assert (touched.files_skipped, touched.records_read) == (4, 0)
    # A fixed file is read again and replaces its rejected record.
    write_jsonl(html, [posthog_event("c1")])
    fixed = load.load_source(con, contracts.POSTHOG_EVENTS, pattern, "r4")
    assert (fixed.files_loaded, fixed.n_inserted, fixed.files_rejected) == (1, 1, 0)
    assert loaded_files(con, "posthog")["c-html.jsonl"][:2] == ("loaded", None)
    assert con.sql("select count(*) from quality.quarantine").fetchall()[0][0] == 3


@pytest.mark.parametrize(
    ("spec", "name", "body", "rule"),
    [
        (
            contracts.GITHUB_ISSUES,
            "rate.json",
            {"message": "API rate limit exceeded"},
            "error_page",
        ),
        (
            contracts.ZENDESK_TICKETS,
            "no-list.json",
            {"count": 0, "end_of_stream": True},
            "unexpected_page_shape",
        ),
        (contracts.ZENDESK_TICKETS, "object.json", {"tickets": {"id": 1}}, "unexpected_page_shape"),
        (contracts.ZENDESK_TICKETS, "err.json", {"error": "RecordNotFound"}, "error_page"),
        (
            contracts.GITHUB_ISSUES,
            "html.json",
            "<html><body>Bad gateway</body></html>",
            "html_file",
        ),
        (contracts.GITHUB_ISSUES, "cut.json", '[{"node_id": "I_1", "title": ', "invalid_json_file"),
    ],
)
def test_export_pages_not_in_the_vendor_shape_are_quarantined_not_counted_as_loaded(
    con, tmp_path, spec, name, body, rule
):
    folder = tmp_path / spec.source
    good = (
        [github_issue(1)]
        if spec is contracts.GITHUB_ISSUES
        else zendesk_page([zendesk_ticket(1)], "c1", True)
    )
    write_json(folder / "a-good.json", good)
    bad = folder / name
    bad.write_text(body if isinstance(body, str) else json.dumps(body), encoding="utf-8")

    stats = load.load_source(con, spec, str(folder / "*.json"), "r1")

    assert (stats.files_loaded, stats.files_rejected, stats.n_inserted) == (1, 1, 1)
    assert stats.quarantine_reasons == {rule: 1} and conserved(stats)
    ((got, reason, payload, _),) = quarantine_rows(con, spec.source)
    assert got == rule and reason.endswith(f"({name})")
    assert json.loads(payload) == {
        "sha256": hashlib.sha256(bad.read_bytes()).hexdigest(),
        "size_bytes": bad.stat().st_size,
    }
    assert loaded_files(con, spec.source)[name][:2] == ("rejected", rule)
    assert any(name in w and rule in w for w in stats.warnings)
    assert load.load_source(con, spec, str(folder / "*.json"), "r2").files_skipped == 2


def _vendor_specs():
    from tasks.clients.freshdesk import FRESHDESK_TICKETS
    from tasks.clients.intercom import INTERCOM_CONVERSATIONS
    from tasks.clients.jira import JIRA_ISSUES
    from tasks.clients.linear import LINEAR_ISSUES
    from tasks.clients.posthog import POSTHOG_QUERY_EVENTS
    from tasks.clients.sentry import SENTRY_ISSUES
    from tasks.clients.zendesk import ZENDESK_TICKETS_SPEC

    # (spec, an empty page in the documented shape, an error body the vendor sends)
    return [
        (ZENDESK_TICKETS_SPEC, {"tickets": [], "end_of_stream": True}, {"error": "Unavailable"}),
        (contracts.GITHUB_ISSUES, [], {"message": "API rate limit exceeded"}),
        (
            INTERCOM_CONVERSATIONS,
            {"type": "conversation.list", "conversations": []},
            {"type": "error.list", "errors": [{"code": "rate_limit_exceeded"}]},
        ),
        (FRESHDESK_TICKETS, [], {"code": "access_denied", "message": "You are not authorized"}),
        (JIRA_ISSUES, {"issues": [], "isLast": True}, {"errorMessages": ["Bad JQL"], "errors": {}}),
        (
            LINEAR_ISSUES,
            {"data": {"issues": {"nodes": [], "pageInfo": {}}}},
            {"data": None, "errors": [{"message": "ratelimited"}]},
        ),
        (SENTRY_ISSUES, [], {"detail": "Invalid token"}),
        (POSTHOG_QUERY_EVENTS, {"results": [], "columns": []}, {"detail": "Throttled"}),
    ]


@pytest.mark.parametrize("case", range(8))
def test_connector_page_in_the_wrong_shape_stops_the_load_before_it(con, tmp_path, case):
    from tasks.contracts import LandedPage
    from tasks.redact import register_duckdb

    register_duckdb(con, "test-salt")
    spec, empty, error = _vendor_specs()[case]
    pages = [
        LandedPage(json.dumps(empty).encode(), {"page": 1}, 0),
        LandedPage(json.dumps(error).encode(), {"page": 2}, 0),
        LandedPage(json.dumps(empty).encode(), {"page": 3}, 0),
    ]
    stats = load.load_pages(con, spec, pages, "r1", tmp_path / "land")

    # The page before commits with its cursor; the error page is quarantined; nothing after it.
    assert (stats.files_seen, stats.files_loaded, stats.files_rejected) == (2, 1, 1)
    assert stats.quarantine_reasons == {"error_page": 1} and conserved(stats)
    assert load.read_state(con, spec.source, spec.stream) == {"page": 1}
    ((rule, reason, payload, _),) = quarantine_rows(con, spec.source)
    assert rule == "error_page" and "instead of" in reason and "sha256" in payload
    assert not list((tmp_path / "land").iterdir())  # no landed page lingers

    # The documented shape passes; a body without the list, or HTML, is set aside.
    missing = LandedPage(json.dumps({"unrelated": 1}).encode(), {"page": 9}, 0)
    html = LandedPage(b"<html>502 Bad Gateway</html>", {"page": 9}, 0)
    for page, want in ((missing, "unexpected_page_shape"), (html, "html_file")):
        got = load.load_pages(con, spec, [page], "r2", tmp_path / "land")
        assert got.quarantine_reasons == {want: 1}
        assert load.read_state(con, spec.source, spec.stream) == {"page": 1}


def _zendesk_files(folder: Path) -> list[Path]:
    t = "2026-11-20T10:00:00Z"
    later = "2026-11-21T10:00:00Z"
    return [
        write_json(
            folder / "p1.json",
            zendesk_page(
                [
                    zendesk_ticket(1, t, "deleted"),  # open at the same time in p2: deleted wins
                    zendesk_ticket(6, t, "deleted"),  # open later in this file: deleted wins
                    zendesk_ticket(6, t, "open"),
                    zendesk_ticket(2, t, subject="first file"),  # same time in p3: p3 wins
                    zendesk_ticket(3, t, subject="first copy"),  # later copy in p1 wins
                    zendesk_ticket(3, t, subject="second copy"),
                    zendesk_ticket(4, "not a time", subject="unreadable"),  # any time beats it
                    {"subject": "no id"},  # quarantined in every order
                ],
                "c1",
                False,
            ),
        ),
        write_json(
            folder / "p2.json",
            zendesk_page(
                [
                    zendesk_ticket(1, t, "open"),
                    zendesk_ticket(4, t, subject="readable"),
                    zendesk_ticket(5, later, "solved"),
                    {"subject": "no id"},
                ],
                "c2",
                False,
            ),
        ),
        write_json(
            folder / "p3.json",
            zendesk_page(
                [zendesk_ticket(2, t, subject="third file"), zendesk_ticket(5, t, "open")],
                "c3",
                True,
            ),
        ),
    ]


def _mixpanel_files(folder: Path) -> list[Path]:
    def ev(insert_id: str, extra: str) -> dict:
        return {
            "event": "export_started",
            "properties": {
                "time": 1763632800,
                "distinct_id": "u1",
                "$insert_id": insert_id,
                "extra": extra,
            },
        }

    return [
        write_jsonl(folder / "m1.jsonl", [ev("x", "m1 first"), ev("x", "m1 second"), "{bad"]),
        write_jsonl(folder / "m2.jsonl", [ev("y", "m2"), "{bad", ev("x", "m2")]),
    ]


def _table_state(con, raw_table: str) -> tuple[list, list]:
    raw = con.sql(f"select * exclude (_batch_id, _loaded_at) from {raw_table} order by all")
    quarantine = con.sql(
        "select quarantine_id, stage, source, table_name, record_key, rule, reason, payload, "
        "source_file from quality.quarantine order by all"
    )
    return raw.fetchall(), quarantine.fetchall()


@pytest.mark.parametrize(
    ("spec", "make", "suffix"),
    [
        (contracts.ZENDESK_TICKETS, _zendesk_files, "json"),
        (MIXPANEL_EVENTS, _mixpanel_files, "jsonl"),
    ],
    ids=["zendesk", "mixpanel"],
)
def test_newest_wins_gives_identical_tables_in_any_file_order_and_batch_split(
    tmp_path, spec, make, suffix
):
    from tasks import db

    files = make(tmp_path / "files")
    orders = {
        "one batch": [[str(tmp_path / "files" / f"*.{suffix}")]],
        "each file, by name": [[str(f)] for f in files],
        "each file, reversed": [[str(f)] for f in reversed(files)],
        "last first, then the rest": [[str(files[-1])], [str(f) for f in files[:-1]]],
    }
    states = {}
    for name, loads in orders.items():
        c = duckdb.connect(str(tmp_path / f"{len(states)}.duckdb"))
        db.ensure_schema(c)
        read = accepted = quarantined = 0
        for run, patterns in enumerate(loads):
            for pattern in patterns:
                st = load.load_source(c, spec, pattern, f"r{run}")
                assert conserved(st)
                read += st.records_read
                quarantined += st.n_quarantined
                accepted += st.n_landed + st.n_superseded
        states[name] = _table_state(c, spec.raw_table)
        # rows in = accepted + quarantined, and every quarantined row is its own row
        assert read == accepted + quarantined
        assert len(states[name][1]) == quarantined
        c.close()
    first = next(iter(states.values()))
    for name, state in states.items():
        assert state == first, name

    raw = {r[0]: r for r in first[0]}
    if spec.source == "zendesk":
        status = {k: json.loads(r[2])["status"] for k, r in raw.items()}
        subject = {k: json.loads(r[2])["subject"] for k, r in raw.items()}
        assert status[1] == "deleted"  # tombstone beats the live version at the same time
        assert subject[2] == "third file"  # then the later file
        assert subject[3] == "second copy"  # then the later position in the file
        assert subject[4] == "readable"  # an unreadable timestamp loses to any readable one
        assert status[5] == "solved"  # a newer timestamp beats everything
        assert status[6] == "deleted"  # deleted wins over a later position too
    else:
        extras = sorted(json.loads(r[2])["properties"]["extra"] for r in raw.values())
        assert extras == ["m2", "m2"]  # x: the later file's copy; y: its only copy


def test_identical_bad_lines_are_each_their_own_quarantine_row(con, tmp_path):
    no_id = {"event": "x", "distinct_id": SECRET}
    ph = tmp_path / "ph"
    write_jsonl(ph / "a.jsonl", [no_id, no_id, "{oops", "{oops", posthog_event("a1")])
    write_jsonl(ph / "b.jsonl", ["{oops", posthog_event("b1")])
    pattern = str(ph / "*.jsonl")

    stats = load.load_source(con, contracts.POSTHOG_EVENTS, pattern, "r1")

    assert stats.quarantine_reasons == {"missing_id": 2, "invalid_json": 3}
    assert stats.records_read == stats.n_landed + stats.n_quarantined
    n_rows = con.sql("select count(*) from quality.quarantine").fetchall()[0][0]
    assert n_rows == stats.n_quarantined == 5
    # Re-reading a touched file finds the same rows (no new ones).
    f = ph / "a.jsonl"
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    load.load_source(con, contracts.POSTHOG_EVENTS, pattern, "r2")
    assert con.sql("select count(*) from quality.quarantine").fetchall()[0][0] == 5


def test_unparsed_lines_are_kept_only_redacted_in_the_quarantine(con, tmp_path):
    ph = tmp_path / "ph"
    broken = '{"event": "x", "note": "Hi, this is Chen Tanaka, mail ' + SECRET + '"'
    write_jsonl(ph / "a.jsonl", [broken, posthog_event("a1")])

    stats = load.load_source(con, contracts.POSTHOG_EVENTS, str(ph / "*.jsonl"), "r1")

    assert stats.quarantine_reasons == {"invalid_json": 1} and conserved(stats)
    ((rule, _reason, payload, _file),) = quarantine_rows(con, "posthog")
    assert rule == "invalid_json"
    assert SECRET not in payload and "Tanaka" not in payload
    assert "[email]" in payload and "[name]" in payload


def test_load_error_never_quotes_the_input(con, tmp_path, monkeypatch):
    """A batch DuckDB cannot read (here: the screen bypassed) fails with a message that names
    the file and the problem but not the line, and does not chain DuckDB's message."""
    ph = tmp_path / "ph"
    ph.mkdir()
    (ph / "e.jsonl").write_bytes(
        json.dumps(posthog_event("a")).encode()
        + b'\n{"distinct_id": "'
        + SECRET.encode()
        + b'\xff"}\n'
    )
    monkeypatch.setattr(
        screening, "screen_files", lambda con, spec, paths, *_: screening.Screen(paths)
    )
    with pytest.raises(load.LoadError) as info:
        load.load_source(con, contracts.POSTHOG_EVENTS, str(ph / "*.jsonl"), "r1")
    message = str(info.value)
    assert "e.jsonl" in message and "nothing committed" in message
    assert SECRET not in message and "Original Line" not in message
    assert info.value.__cause__ is None


def test_load_step_logs_and_report_show_rejected_files(con, tmp_path):
    from tasks import reporting, steps

    ph = tmp_path / "ph"
    write_jsonl(ph / "a.jsonl", [posthog_event("a1")])
    (ph / "b.jsonl").write_bytes(b"\x00binary")
    stats = load.load_source(con, contracts.POSTHOG_EVENTS, str(ph / "*.jsonl"), "r1")

    class Logger:
        def __init__(self):
            self.lines = []

        def info(self, msg, *args):
            self.lines.append(("info", msg % args))

        def warning(self, msg, *args):
            self.lines.append(("warning", msg % args))

    logger = Logger()
    steps._log_stats(logger, "posthog", stats)
    assert any(level == "warning" and "b.jsonl" in text for level, text in logger.lines)
    assert any("1 rejected whole" in text for _, text in logger.lines)
    summary = {
        "run_id": "r1",
        "as_of": "2026-11-20",
        "window_days": 28,
        "dry_run": True,
        "dq_verdict": "warn",
        "db_path": "w.duckdb",
        "snapshot_path": "s.duckdb",
        "tracker_dir": "t",
        "loads": {"posthog": stats.as_dict()},
        "validation": [],
        "coverage": [],
        "suggestions": [],
        "timings": {},
    }
    report = reporting.summary_markdown(summary)
    assert "| rejected |" in report and "| posthog | 1 | 0 | 1 | 2 |" in report


def test_quality_gate_warns_about_files_set_aside_in_this_run(con, tmp_path):
    from tasks import quality

    write_json(tmp_path / "gh" / "a.json", [github_issue(1)])
    write_json(tmp_path / "gh" / "b.json", {"message": "Bad credentials"})
    load.load_source(con, contracts.GITHUB_ISSUES, str(tmp_path / "gh" / "*.json"), "run-7")
    verdicts = [
        quality.TableVerdict("raw_github__issues", "bugs", "pass", 1, 1, 0, layer="raw"),
        quality.TableVerdict("raw_zendesk__tickets", "tickets", "pass", 1, 1, 0, layer="raw"),
    ]
    assert quality.flag_load_rejections(con, "run-7", verdicts) == {"github": 1}
    gh, zd = verdicts
    assert gh.verdict == "warn" and "1 file(s)/page(s) set aside whole" in gh.reason
    assert zd.verdict == "pass"
    # Another run that set nothing aside has nothing to say.
    later = [quality.TableVerdict("raw_github__issues", "bugs", "pass", 1, 1, 0, layer="raw")]
    assert quality.flag_load_rejections(con, "run-8", later) == {}
    assert later[0].verdict == "pass"


def test_an_unreadable_table_file_is_reported_without_its_rows(con, tmp_path):
    folder = tmp_path / "acc"
    folder.mkdir()
    (folder / "ragged.csv").write_text(
        f"account_key,arr,name\nacct-1,1,A\nacct-2,2,{SECRET},extra\n", encoding="utf-8"
    )
    stats = load.load_source(con, contracts.ACCOUNTS, str(folder / "*.csv"), "r1")
    assert stats.quarantine_reasons == {"unreadable_file": 1}
    (error,) = stats.errors
    assert "could not be read as CSV" in error and SECRET not in error
    reason = con.sql("select reason from quality.quarantine").fetchall()[0][0]
    assert SECRET not in reason
