"""The reduced drill (`make drill` in small): a few cases of every section, through the same
trial functions as benchmarks/drill, plus the harness's own checks (it must see a lost row, a
duplicated issue, a leaked secret in any form).

Not slow: bad settings (CLI child processes that stop at preflight), fault injection on three
connectors (their load step in-process against faulty fakes), the harness unit checks, and one
bundle of nightly runs shared by the bad-input and secret-scan sections (see `bundle`). The crash
trial (a kill point against the bundle's reference run) and lone bad inputs are under -m slow.
"""

from __future__ import annotations

import base64
from pathlib import Path

import duckdb
import pytest

from benchmarks.drill import badinput, badsettings, common, crash, faults, secrets
from tests.fakes.faults import KINDS, inject_faults
from tests.fakes.server import FakeServer, Response

SETTINGS_CASES = [
    "malformed-toml",
    "unknown-top-level-key",
    "all-weights-zero",
    "env-override-wrong-type",
]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("drill")
    return {"work": str(root), "world": str(common.world_template(root))}


# ----------------------------------------------------------------------------- the harness
def test_doubles_compare_exactly_and_json_key_order_is_not_a_difference(tmp_path: Path) -> None:
    def make(name: str, x: float, doc: str, run_id: str = "r1", qid: str = "q1") -> dict:
        path = tmp_path / f"{name}.duckdb"
        con = duckdb.connect(str(path))
        con.execute("create schema marts")
        con.execute("create table marts.t (x double, evidence json, run_id varchar)")
        con.execute("insert into marts.t values (?, ?, ?)", [x, doc, run_id])
        con.execute("create schema quality")
        con.execute("create table quality.quarantine (quarantine_id varchar, reason varchar)")
        con.execute("insert into quality.quarantine values (?, 'bad line (f.jsonl #3)')", [qid])
        con.close()
        return common.table_hashes(path)

    a = make("a", 120498.60000000002, '{"arr": 98287.49, "n": 3}')
    # Run ids and path-derived quarantine ids legitimately differ; JSON key order is not a value.
    b = make("b", 120498.60000000002, '{"n": 3, "arr": 98287.49}', run_id="r2", qid="q2")
    last_bit = make("last_bit", 120498.6, '{"arr": 98287.49, "n": 3}')
    json_bit = make("json_bit", 120498.60000000002, '{"n": 3, "arr": 98287.48999999999}')
    assert a == b
    assert a["marts.t"] != last_bit["marts.t"]  # reruns must give the same bits
    assert a["marts.t"] != json_bit["marts.t"]


def test_snapshot_diff_sees_lost_duplicated_and_changed_rows_and_issues(tmp_path: Path) -> None:
    def make(name: str, rows: list[tuple]) -> Path:
        path = tmp_path / f"{name}.duckdb"
        con = duckdb.connect(str(path))
        con.execute("create schema raw")
        con.execute("create table raw.t (id int, v varchar, _loaded_at timestamp, run_id varchar)")
        con.executemany("insert into raw.t values (?, ?, now(), ?)", rows)
        con.close()
        return path

    want = common.table_hashes(make("want", [(1, "a", "r1"), (2, "b", "r1")]))
    same = common.table_hashes(make("same", [(2, "b", "r9"), (1, "a", "r8")]))  # order, run ids
    lost = common.table_hashes(make("lost", [(1, "a", "r1")]))
    dup = common.table_hashes(make("dup", [(1, "a", "r1"), (2, "b", "r1"), (2, "b", "r2")]))
    changed = common.table_hashes(make("changed", [(1, "a", "r1"), (2, "c", "r1")]))
    issue = "---\ntitle: t\n---\n<!-- feedback-loop:fingerprint=health:x -->\nbody\n"
    assert common.diff_snapshots(same, want, {"x.md": issue}, {"x.md": issue}) == []
    assert "lost or duplicated" in common.diff_snapshots(lost, want, {}, {})[0]
    assert "lost or duplicated" in common.diff_snapshots(dup, want, {}, {})[0]
    assert "different content" in common.diff_snapshots(changed, want, {}, {})[0]
    twice = {"x.md": issue, "y.md": issue}
    problems = common.diff_snapshots(want, want, twice, {"x.md": issue})
    assert any("duplicated issues" in p for p in problems)
    assert any("extra issue y.md" in p for p in problems)
    assert common.diff_snapshots(want, want, {}, {"x.md": issue}) == ["tracker: issue x.md lost"]


def test_kill_points_are_seeded_reachable_and_spread_over_targets() -> None:
    counts = {"load._merge_raw": 3, "writeback._apply_item": 2, "db.publish_snapshot": 1, "x": 0}
    first = crash.choose_points(counts, 6, seed=1)
    assert first == crash.choose_points(counts, 6, seed=1)
    assert len(set(first)) == 6
    for point in first:
        target, n, when = point.split(":")
        assert 1 <= int(n) <= counts[target] and when in ("before", "after")
    assert {p.split(":")[0] for p in first} == {t for t, c in counts.items() if c}


def test_secret_needles_cover_raw_substrings_base64_and_url_forms() -> None:
    secret = "zdCanary7Q4mX9/pL2+vR8=wK5"
    got = secrets.forms(secret, "agent@acme.test/token")
    values = set(got.values())
    assert secret in values and "zdCanary7Q4mX9%2FpL2%2BvR8%3DwK5" in values
    header = base64.b64encode(f"agent@acme.test/token:{secret}".encode()).decode()
    assert header in values
    # Every needle betrays the secret: none is drawn from the user-only part of the header.
    user_only = base64.b64encode(b"agent@acme.test/token:")[:28].decode()
    assert not [v for v in values if v in user_only]
    assert all(len(v) >= 12 for v in values)


def test_accounting_check_reads_load_and_validation_lines() -> None:
    # The lines as the nightly logs them today (a Prefect log prefix, verdicts, thousands).
    ok = (
        "12:00:01.000 | INFO    | Task run 'load-sources-8f0' - posthog: 3 file(s)/page(s) "
        "loaded, 0 skipped as unchanged, 1 rejected whole; 10 records read -> 7 new, "
        "0 updated, 1 unchanged, 1 superseded, 0 dropped, 1 quarantined\n"
        "12:00:02.000 | INFO    | Task run 'validate-staging-4c7' - staging.stg_usage_events: "
        "PASS — 1,000 in = 990 accepted + 10 quarantined"
    )
    assert badinput.accounting_problems(ok, expect=True) == []
    bad = ok.replace("7 new", "6 new").replace("990 accepted", "980 accepted")
    assert len(badinput.accounting_problems(bad)) == 2
    # A log without any count line (a changed format) is a problem, not a silent pass.
    assert badinput.accounting_problems("run finished", expect=True) != []


def test_fault_injector_fails_a_seeded_share_and_cuts_200_bodies() -> None:
    import requests

    with FakeServer() as srv:
        srv.route("GET", r"/page", Response.json({"rows": list(range(200))}))
        inj = inject_faults(srv, rate=0.5, seed=3, kinds=("503", "truncated-200"))
        outcomes = []
        for _ in range(40):
            try:
                r = requests.get(srv.url + "/page", timeout=5)
                outcomes.append(r.status_code if r.status_code != 200 else len(r.json()["rows"]))
            except requests.RequestException as exc:
                outcomes.append(type(exc).__name__)
    assert inj.served == 40 and 8 <= len(inj.injected) <= 32
    assert {k for k, _ in inj.injected} <= {"503", "truncated-200"}
    assert outcomes.count(503) == sum(k == "503" for k, _ in inj.injected)
    assert outcomes.count(200) == 40 - len(inj.injected)  # whole pages only when not faulted
    assert set(KINDS) >= {"429", "reset", "stall-close"}


# ---------------------------------------------------------------------------- reduced drill
@pytest.mark.parametrize("name", SETTINGS_CASES)
def test_bad_settings_stop_with_one_line_and_exit_2(work: dict, name: str) -> None:
    case = next(c for c in badsettings.CASES if c.name == name)
    trial = badsettings.trial({**work, "case": case})
    assert trial.passed, trial.detail


@pytest.mark.parametrize("vendor", ["posthog", "zendesk", "github"])
def test_faulty_vendor_api_loads_what_a_clean_api_loads(work: dict, vendor: str) -> None:
    # 40 %: enough faults in a short load for every kind to come up (one deck of kinds).
    trial = faults.trial({**work, "vendor": vendor, "seed": 11, "rate": 0.4})
    # The trial really was attacked: at least a fifth of the requests, truncated 200s included.
    assert trial.extra["faults"] >= 0.2 * trial.extra["requests"], trial.detail
    assert "truncated-200" in trial.detail, trial.detail
    assert trial.passed, trial.detail


# One nightly-based bundle shared by the sections, two CLI children at a time (threads only
# wait on them): (A) the secret scan's two runs, whose world also carries a group of bad-input
# files (judged apart: the scan does not look at them, they are no secret); (B) a clean
# reference run (the bar for the bad inputs; the slow crash trial is judged against it too).
KILL_POINT = "load._merge_raw:2:after"
BUNDLE_INPUTS = [
    "ph-invalid-utf8-line",
    "ph-gzip-named-jsonl",
    "zd-page-without-tickets",
    "zd-unknown-priority",
    "gh-rate-limit-message",
    "gh-page-as-object",
]


@pytest.fixture(scope="module", autouse=True)
def _bundle_started(request: pytest.FixtureRequest, work: dict):
    """Start the bundle's runs as soon as the module starts (when a selected test needs them):
    the cheap tests above then run while the nightly children do."""
    from concurrent.futures import ThreadPoolExecutor

    if not any("bundle" in getattr(i, "fixturenames", ()) for i in request.session.items):
        yield None
        return

    def crash_side() -> dict:
        return {"ref": crash.reference(Path(work["work"]), Path(work["world"]))}

    with ThreadPoolExecutor(2) as pool:
        yield (
            pool.submit(secrets.trial, {**work, "inputs": BUNDLE_INPUTS}),
            pool.submit(crash_side),
        )


@pytest.fixture(scope="module")
def bundle(_bundle_started) -> dict:
    scan, side = _bundle_started
    return {"secrets": scan.result(), **side.result()}


# A killed run and its rerun cost two more nightly runs: under -m slow (tests/test_crash.py kills
# the load, write-back and snapshot in the default suite; make drill kills at 20 points).
@pytest.mark.slow
def test_crash_at_a_kill_point_loses_duplicates_and_changes_nothing(
    bundle: dict, work: dict
) -> None:
    assert bundle["ref"]["state"] == "completed", bundle["ref"]["stderr_tail"][-600:]
    trial = crash.trial({**work, "point": KILL_POINT, "ref": bundle["ref"]})
    problems = trial.extra.get("problems")
    assert problems is not None, trial.detail  # the kill point was reached, the rerun judged
    assert problems == [], problems  # every table and issue exactly as the uninterrupted run


def test_bad_inputs_do_not_stop_other_sources_or_later_runs(bundle: dict) -> None:
    scan = bundle["secrets"]
    runs, markers = scan.extra["runs"], scan.extra["markers"]
    assert sorted(markers) == sorted(BUNDLE_INPUTS)
    db = Path(scan.extra["dir"]) / "feedback.duckdb"
    # The bar: every record the clean reference run loaded from the world's files is loaded.
    problems = badinput.judge_group(db, runs, markers, bundle["ref"]["keys"])
    assert problems == []


def test_secret_scan_finds_no_canary_or_planted_pii(bundle: dict) -> None:
    trial = bundle["secrets"]
    assert "echo requests" in trial.detail and " 0 echo requests" not in trial.detail
    assert trial.passed, trial.detail


@pytest.mark.slow
@pytest.mark.parametrize("name", ["zd-tie-with-deletion", "ph-huge-line"])
def test_bad_input_alone_does_not_stop_other_sources_or_later_runs(work: dict, name: str) -> None:
    ref = crash.reference(Path(work["work"]), Path(work["world"]))
    counts = {t: v[0] for t, v in ref["tables"].items()}
    trial = badinput.trial({**work, "case": name, "ref_counts": counts})
    assert trial.passed, trial.detail
