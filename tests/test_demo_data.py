"""Tests for the deterministic demo data generator (formats, planted truth, malformed records)."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import date
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

from tasks.demo_data import FEATURES, ROLES, DemoConfig, generate_demo_data

CATALOG = Path(__file__).resolve().parents[1] / "features.yaml"
END = date(2026, 11, 24)
REG_START = date(2026, 11, 11)  # END - 13 days: the last 14 days hold the regression
PH_COLUMNS = {
    "uuid": "VARCHAR",
    "event": "VARCHAR",
    "distinct_id": "VARCHAR",
    "timestamp": "VARCHAR",
    "properties": "JSON",
}


def _small(out: Path, **kw: Any) -> DemoConfig:
    base: dict[str, Any] = {"end_date": END, "days": 60, "users": 800, "accounts": 80}
    base.update(kw)
    return DemoConfig(out_dir=out, **base)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("demo")
    messages: list[str] = []
    manifest = generate_demo_data(_small(out), progress=messages.append)
    assert messages, "progress callback was not used"
    return out, manifest


@pytest.fixture(scope="module")
def catalog() -> list[dict[str, Any]]:
    return yaml.safe_load(CATALOG.read_text())["features"]


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _event_feature(cat: list[dict[str, Any]], event: str, path: str | None) -> str | None:
    for f in cat:
        if any(fnmatchcase(event.lower(), g) for g in f["events"]):
            return f["key"]
        if path and any(fnmatchcase(path.lower(), g) for g in f["paths"]):
            return f["key"]
    return None


def _ticket_feature(cat: list[dict[str, Any]], tags: list[str], subject: str) -> str | None:
    low = [t.lower() for t in tags]
    for f in cat:
        if any(t in low for t in f["ticket_tags"]):
            return f["key"]
    for f in cat:
        if any(k in subject.lower() for k in f["ticket_keywords"]):
            return f["key"]
    return None


def _tickets(out: Path) -> list[dict[str, Any]]:
    versions = []
    for page in sorted((out / "zendesk").glob("tickets-page-*.json")):
        versions.extend(json.loads(page.read_text())["tickets"])
    return versions


def _latest_tickets(out: Path) -> list[dict[str, Any]]:
    latest: dict[int, dict[str, Any]] = {}
    for t in _tickets(out):
        if "id" in t and (
            t["id"] not in latest
            or t["generated_timestamp"] >= latest[t["id"]]["generated_timestamp"]
        ):
            latest[t["id"]] = t
    return list(latest.values())


def _issues(out: Path) -> list[dict[str, Any]]:
    items = []
    for page in sorted((out / "github").glob("issues-page-*.json")):
        items.extend(json.loads(page.read_text()))
    return items


# ------------------------------------------------------------------ determinism and sizing


def test_same_parameters_give_identical_files(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate_demo_data(_small(a, days=45, users=300, accounts=30))
    generate_demo_data(_small(b, days=45, users=300, accounts=30))
    generate_demo_data(_small(c, days=45, users=300, accounts=30, seed=7))
    ha, hb, hc = _hashes(a), _hashes(b), _hashes(c)
    assert ha == hb
    assert len(ha) > 45
    assert ha != hc


def test_event_target_is_met_and_scales_users(tmp_path: Path) -> None:
    m = generate_demo_data(_small(tmp_path / "big", days=45, users=300, events=90_000))
    assert m["params"]["users"] == 600  # 90_000 // 150
    assert abs(m["rows"]["posthog_lines"] - 90_000) / 90_000 < 0.02
    # A target below one event per feature use thins out activity instead.
    m = generate_demo_data(_small(tmp_path / "tiny", days=45, users=300, events=8_000))
    assert abs(m["rows"]["posthog_lines"] - 8_000) / 8_000 < 0.05


def test_rejects_window_too_short_for_the_regression(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        generate_demo_data(_small(tmp_path, days=30))


# ------------------------------------------------------------------ formats


def test_posthog_lines_are_valid_events(
    demo: tuple[Path, dict[str, Any]], catalog: list[dict[str, Any]]
) -> None:
    out, manifest = demo
    files = sorted((out / "posthog").glob("events-*.jsonl"))
    assert len(files) == 60 == manifest["files"]["posthog"]
    assert files[-1].name == f"events-{END.isoformat()}.jsonl"
    invalid = {(r["file"], r["line"]) for r in manifest["malformed"] if r["kind"] == "invalid_json"}
    ts_re = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$")
    n_lines = mapped = 0
    names: set[str] = set()
    for f in files:
        day = f.name[len("events-") : -len(".jsonl")]
        for i, line in enumerate(f.read_text().splitlines(), start=1):
            n_lines += 1
            if (f"posthog/{f.name}", i) in invalid:
                with pytest.raises(json.JSONDecodeError):
                    json.loads(line)
                continue
            ev = json.loads(line)
            props = ev["properties"]
            if isinstance(ev["timestamp"], str):
                assert ts_re.match(ev["timestamp"]) and ev["timestamp"].startswith(day)
            assert re.fullmatch(r"user-\d{5}", ev["distinct_id"])
            assert re.fullmatch(r"acct-\d{4}", props["$groups"]["company"])
            assert props["$pathname"].startswith("/")
            names.add(ev["event"])
            mapped += _event_feature(catalog, ev["event"], props["$pathname"]) is not None
    assert n_lines == manifest["rows"]["posthog_lines"]
    assert len(invalid) == 1
    assert 0.84 <= mapped / n_lines <= 0.91  # catalog coverage is deliberately below 100%
    assert {
        "$pageview",
        "$autocapture",
        "user_logged_in",
        "export_failed",
        "assistant_answer_rated",
        "sync_completed",
        "invoice_downloaded",
    } <= names


def test_zendesk_pages_follow_the_incremental_cursor_format(
    demo: tuple[Path, dict[str, Any]], catalog: list[dict[str, Any]]
) -> None:
    out, manifest = demo
    pages = sorted((out / "zendesk").glob("tickets-page-*.json"))
    assert len(pages) == manifest["files"]["zendesk"] > 5
    previous_ts = 0
    for n, page in enumerate(pages, start=1):
        doc = json.loads(page.read_text())
        assert {"tickets", "after_cursor", "before_cursor", "after_url", "end_of_stream"} <= set(
            doc
        )
        assert doc["end_of_stream"] is (n == len(pages))
        assert doc["after_url"].endswith(f"cursor={doc['after_cursor']}")
        assert len(doc["tickets"]) == 100 or n == len(pages)
        for t in doc["tickets"]:
            assert t["generated_timestamp"] >= previous_ts  # ordered by update time
            previous_ts = t["generated_timestamp"]
            assert t["via"]["channel"] in {"email", "web", "chat", "api"}
    versions = _tickets(out)
    latest = _latest_tickets(out)
    assert len(versions) == manifest["rows"]["zendesk_ticket_versions"]
    repeated = len(versions) - len(latest) - 1  # the ticket without id is not in `latest`
    assert 0.18 <= repeated / len(latest) <= 0.32
    by_id: dict[int, list[dict[str, Any]]] = {}
    for t in versions:
        by_id.setdefault(t.get("id", -1), []).append(t)
    changed = [v for v in by_id.values() if len(v) == 2]
    assert all(a["updated_at"] < b["updated_at"] for a, b in changed)
    assert sum(a["status"] != b["status"] for a, b in changed) / len(changed) > 0.9
    statuses = {t["status"] for t in latest}
    assert statuses <= {"new", "open", "pending", "hold", "solved", "closed", "deleted"}
    assert 0.005 <= sum(t["status"] == "deleted" for t in latest) / len(latest) <= 0.04
    assert {t["priority"] for t in latest} <= {"urgent", "high", "normal", "low", None, "critical"}

    kinds = {"tag": 0, "keyword": 0, "none": 0}
    for t in latest:
        tag_hit = _ticket_feature(catalog, t["tags"], "") is not None
        feat = _ticket_feature(catalog, t["tags"], t["subject"])
        kinds["tag" if tag_hit else "keyword" if feat else "none"] += 1
    share = {k: v / len(latest) for k, v in kinds.items()}
    assert 0.62 <= share["tag"] <= 0.78
    assert 0.14 <= share["keyword"] <= 0.26
    assert 0.06 <= share["none"] <= 0.14


def test_ticket_descriptions_carry_the_pii_that_redaction_must_remove(
    demo: tuple[Path, dict[str, Any]],
) -> None:
    out, manifest = demo
    text = "\n".join(t["description"] for t in _latest_tickets(out))
    assert re.search(r"[a-z]+\.[a-z]+@example\.com", text)
    assert re.search(r"\+1 \d{3} 555 0\d{3}", text)
    assert re.search(r"\(\d{3}\) 555-0\d{3}", text)
    assert re.search(r"\+44 20 7946 0\d{3}", text)
    assert "4111 1111 1111 1111" in text
    assert re.search(r"Hi, this is [A-Z][a-z]+ [A-Z][a-z]+ from ", text)
    clean = json.dumps(manifest)
    assert "@example" not in clean and "4111 1111" not in clean
    assert not re.search(r"\b555[ -]0\d{3}\b|7946 0\d{3}|Hi, this is", clean)


def test_github_pages_are_issue_list_arrays_with_pull_requests(
    demo: tuple[Path, dict[str, Any]],
) -> None:
    out, manifest = demo
    pages = sorted((out / "github").glob("issues-page-*.json"))
    assert len(pages) == manifest["files"]["github"]
    items = _issues(out)
    assert all(isinstance(json.loads(p.read_text()), list) for p in pages)
    assert all(len(json.loads(p.read_text())) <= 100 for p in pages)
    assert len(items) == manifest["rows"]["github_items"]
    updated = [i["updated_at"] for i in items]
    assert updated == sorted(updated)
    prs = [i for i in items if "pull_request" in i]
    assert len(prs) == manifest["rows"]["github_pull_requests"]
    assert 0.1 <= len(prs) / len(items) <= 0.2
    assert all("/pull/" in i["html_url"] for i in prs)
    node_ids = [i["node_id"] for i in items if "node_id" in i]
    assert len(node_ids) == len(set(node_ids)) == len(items) - 1
    labels = {lab["name"] for i in items for lab in i["labels"]}
    assert {"bug", "area:exports", "area:assistant", "severity:critical", "severity:low"} <= labels
    for i in items:
        assert (
            i["html_url"] == f"https://github.com/acme/analytics/"
            f"{'pull' if 'pull_request' in i else 'issues'}/{i['number']}"
        )
        assert set(i["reactions"]) >= {"+1", "total_count"}
        assert (i["closed_at"] is None) == (i["state"] == "open") or i["state"] == "archived"


# ------------------------------------------------------------------ planted truth


def _weekly_feature_users(out: Path, catalog: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Share of weekly active users per feature; index 0 = the last 7 days of the window."""
    con = duckdb.connect()
    con.sql(
        f"create table rel as select event, properties ->> '$.\"$pathname\"' as path, distinct_id, "
        f"(date '{END}' - try_cast(\"timestamp\" as timestamptz)::date) // 7 as wk "
        f"from read_json('{out}/posthog/*.jsonl', format='newline_delimited', "
        f"columns={PH_COLUMNS}, ignore_errors=true) "
        f'where try_cast("timestamp" as timestamptz) is not null and distinct_id is not null'
    )
    pairs = con.sql("select distinct event, path from rel").fetchall()
    mapping = [(e, p, _event_feature(catalog, e, p)) for e, p in pairs]
    con.sql("create table fmap (event varchar, path varchar, feature varchar)")
    con.executemany("insert into fmap values (?, ?, ?)", mapping)
    rows = con.sql(
        "with e as (select rel.*, fmap.feature from rel join fmap using (event, path)), "
        "wau as (select wk, count(distinct distinct_id) n from e group by wk) "
        "select e.feature, e.wk, count(distinct e.distinct_id) / any_value(wau.n) "
        "from e join wau using (wk) where e.feature is not null and e.wk < 6 group by all"
    ).fetchall()
    shares: dict[str, list[float]] = {f: [0.0] * 6 for f in FEATURES}
    for feature, wk, share in rows:
        shares[feature][wk] = share
    return shares


def test_planted_usage_truth(
    demo: tuple[Path, dict[str, Any]], catalog: list[dict[str, Any]]
) -> None:
    out, manifest = demo
    assert manifest["planted"] == {
        **ROLES,
        "regression_start": REG_START.isoformat(),
        "regression_bug_numbers": manifest["planted"]["regression_bug_numbers"],
    }
    shares = _weekly_feature_users(out, catalog)
    recent = {f: sum(s[:2]) / 2 for f, s in shares.items()}
    before = {f: sum(s[2:6]) / 4 for f, s in shares.items()}
    drop = 1 - recent["exports"] / before["exports"]
    assert 0.30 <= drop <= 0.60, f"exports weekly users drop {drop:.0%}"
    for f in FEATURES:
        if f != "exports":  # small features get an absolute tolerance for sampling noise
            tolerance = max(0.3 * before[f], 0.02)
            assert abs(recent[f] - before[f]) < tolerance, f"{f} should be stable"
    assert max(before, key=before.__getitem__) == "dashboards"
    assert 0.58 <= before["dashboards"] <= 0.75
    assert min(before, key=before.__getitem__) == "ai_assistant"
    assert before["ai_assistant"] <= 0.05
    for f in ("exports", "alerts", "sharing", "search", "integrations", "billing"):
        assert 0.08 <= before[f] <= 0.45, f"{f} adoption {before[f]:.0%}"


def test_planted_failure_share_rises(demo: tuple[Path, dict[str, Any]]) -> None:
    out, _ = demo
    rows = duckdb.sql(
        f"select try_cast(\"timestamp\" as timestamptz)::date >= date '{REG_START}' as recent, "
        f"count(*) filter (event = 'export_failed') / count(*) "
        f"from read_json('{out}/posthog/*.jsonl', format='newline_delimited', "
        f"columns={PH_COLUMNS}, ignore_errors=true) "
        f"where event like 'export\\_%' escape '\\' and try_cast(\"timestamp\" as timestamptz) "
        f"is not null group by all"
    ).fetchall()
    fail = dict(rows)
    assert fail[False] < 0.06 and fail[True] > 3 * fail[False]


def test_planted_ticket_truth(
    demo: tuple[Path, dict[str, Any]], catalog: list[dict[str, Any]]
) -> None:
    out, _ = demo
    per_feature: dict[str | None, list[int]] = {}
    for t in _latest_tickets(out):
        if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", t["created_at"]):
            continue
        recent = date.fromisoformat(t["created_at"][:10]) >= REG_START
        feat = _ticket_feature(catalog, t["tags"], t["subject"])
        per_feature.setdefault(feat, [0, 0])[recent] += 1
    total = {f: sum(v) for f, v in per_feature.items()}
    assert max((f for f in total if f), key=total.__getitem__) == "dashboards"
    days_before = 60 - 14
    rate_before = per_feature["exports"][0] / days_before
    rate_recent = per_feature["exports"][1] / 14
    assert 3.0 <= rate_recent / rate_before <= 8.0
    dash_before = per_feature["dashboards"][0] / days_before
    assert 0.6 <= (per_feature["dashboards"][1] / 14) / dash_before <= 1.5  # steady
    assert total["ai_assistant"] < min(total[f] for f in FEATURES if f != "ai_assistant")
    exports_tagged = [
        t
        for t in _latest_tickets(out)
        if {"exports", "csv"} & set(t["tags"]) and t["created_at"] >= REG_START.isoformat()
    ]
    assert len(exports_tagged) >= 0.8 * per_feature["exports"][1]


def test_planted_bug_truth(demo: tuple[Path, dict[str, Any]]) -> None:
    out, manifest = demo
    issues = [i for i in _issues(out) if "pull_request" not in i]
    fresh_severe: dict[str, list[int]] = {}
    open_dashboards: list[set[str]] = []
    for i in issues:
        names = {lab["name"] for lab in i["labels"]}
        area = next((n for n in names if n.startswith("area:")), None)
        severe = names & {"severity:critical", "severity:high"}
        if severe and i["state"] == "open" and i["created_at"] >= REG_START.isoformat():
            fresh_severe.setdefault(area or "", []).append(i["number"])
        if area == "area:dashboards" and i["state"] == "open" and "bug" in names:
            open_dashboards.append(names)
    assert set(fresh_severe) == {"area:exports"}
    assert 3 <= len(fresh_severe["area:exports"]) <= 5
    assert sorted(fresh_severe["area:exports"]) == manifest["planted"]["regression_bug_numbers"]
    assert 1 <= len(open_dashboards) <= 8
    assert all(n & {"severity:medium", "severity:low"} for n in open_dashboards)


# ------------------------------------------------------------------ malformed records


def test_manifest_malformed_records_exist_where_stated(demo: tuple[Path, dict[str, Any]]) -> None:
    out, manifest = demo
    bad = manifest["malformed"]
    assert {(r["source"], r["kind"]) for r in bad} == {
        ("posthog", "invalid_json"),
        ("posthog", "missing_id"),
        ("posthog", "duplicate"),
        ("posthog", "wrong_type"),
        ("zendesk", "missing_id"),
        ("zendesk", "unknown_enum"),
        ("zendesk", "wrong_type"),
        ("github", "missing_id"),
        ("github", "unknown_enum"),
    }
    for r in bad:
        path = out / r["file"]
        if r["source"] == "posthog":
            lines = path.read_text().splitlines()
            line = lines[r["line"] - 1]
            if r["kind"] == "invalid_json":
                with pytest.raises(json.JSONDecodeError):
                    json.loads(line)
                assert r["record_id"] in line
                continue
            ev = json.loads(line)
            if r["kind"] == "missing_id":
                assert "uuid" not in ev and r["record_id"] is None
            elif r["kind"] == "wrong_type":
                assert ev["timestamp"] == 1234 and ev["uuid"] == r["record_id"]
            elif r["kind"] == "duplicate":
                assert ev["uuid"] == r["record_id"]
                assert line == lines[r["duplicate_of_line"] - 1]
                assert sum(r["record_id"] in x for x in lines) == 2
        elif r["source"] == "zendesk":
            t = json.loads(path.read_text())["tickets"][r["index"]]
            if r["kind"] == "missing_id":
                assert "id" not in t and r["record_id"] is None
            elif r["kind"] == "unknown_enum":
                assert t["id"] == r["record_id"] and t["priority"] == "critical"
            else:
                assert t["id"] == r["record_id"] and t["created_at"] == "yesterday"
        else:
            item = json.loads(path.read_text())[r["index"]]
            assert "pull_request" not in item and item["number"] == r["number"]
            if r["kind"] == "missing_id":
                assert "node_id" not in item and r["record_id"] is None
            else:
                assert item["node_id"] == r["record_id"] and item["state"] == "archived"
    # Exactly one of each defect: no accidental ones elsewhere.
    assert sum(t.get("priority") == "critical" for t in _tickets(out)) == 1
    assert sum("id" not in t for t in _tickets(out)) == 1
    assert sum(i["state"] not in ("open", "closed") for i in _issues(out)) == 1


def test_append_day_adds_only_new_files_of_that_day(tmp_path: Path) -> None:
    """A night with new data: one more day after the window, as new files in the same formats;
    every existing file keeps its bytes, and the day is the same whichever copy it is added to."""
    from datetime import timedelta

    from tasks.demo_data import append_day

    a, b = tmp_path / "a", tmp_path / "b"
    generate_demo_data(_small(a))
    generate_demo_data(_small(b))
    before = _hashes(a)
    day = END + timedelta(days=1)
    messages: list[str] = []
    manifest = append_day(a, day, progress=messages.append)
    after = _hashes(a)
    assert {k: after[k] for k in before} == before, "an existing file changed"
    iso = day.isoformat()
    new = set(after) - set(before)
    assert new == {*manifest["files"], f"_appended-{iso}.json"}
    assert f"posthog/events-{iso}.jsonl" in new
    assert any(f.startswith(f"zendesk/tickets-{iso}-page-") for f in new)
    assert f"github/issues-{iso}.json" in new

    con = duckdb.connect()
    ts = con.sql(
        "select min(timestamp), max(timestamp), count(*), count(distinct uuid) from read_json(?, "
        "format='newline_delimited', columns=?)",
        params=[str(a / f"posthog/events-{iso}.jsonl"), PH_COLUMNS],
    ).fetchall()[0]
    assert ts[0].startswith(iso) and ts[1].startswith(iso), ts
    assert ts[2] == manifest["rows"]["posthog_lines"] == ts[3] > 100
    tickets = [
        t
        for f in sorted(new)
        if f.startswith("zendesk/")
        for t in json.loads((a / f).read_text())["tickets"]
    ]
    assert tickets and all(t["created_at"].startswith(iso) for t in tickets)
    old_ids = {t.get("id") for t in _tickets(a) if not t["created_at"].startswith(iso)}
    assert not old_ids & {t["id"] for t in tickets}, "an appended ticket reuses an id"
    issues = json.loads((a / f"github/issues-{iso}.json").read_text())
    assert all(i["created_at"].startswith(iso) for i in issues)

    assert append_day(b, day) == manifest
    assert {k: v for k, v in _hashes(b).items() if k in new} == {k: after[k] for k in new}
    with pytest.raises(FileExistsError):
        append_day(a, day)
    with pytest.raises(ValueError, match="inside the window"):
        append_day(a, END)
