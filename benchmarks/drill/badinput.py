"""Bad-input corpus: one bad file added to one source per case; the run must go on.

Pass = the run is not failed (Degraded allowed), every other source loaded all its rows, the
next run is not stopped by the same file, rows in = accepted + quarantined in every load and
validation line, and the bad file's text (a unique marker) never appears in the logs.

Grouped (`group_trial`): one run carries the bad files of several cases (each with its own file
name, record ids and marker) and is held to a stricter bar: EVERY source, the bad files' own
included, loaded every record of the clean world (by key), the run and the next one are not
failed, every load/validation line adds up and no marker is logged. A group that passes is a
pass of each of its cases (a case stopping its own source would leave that source's clean
records missing); a group that fails is rerun case by case, so a verdict is never blurred."""

from __future__ import annotations

import gzip
import json
import random
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.drill.common import (
    Trial,
    new_trial_dir,
    nightly_args,
    run_cli,
    run_state,
    table_hashes,
    write_config,
)

SECTION = "inputs"
RAW = {
    "posthog": "raw.posthog__events",
    "zendesk": "raw.zendesk__tickets",
    "github": "raw.github__issues",
}
TARGET = {
    "posthog": "posthog/events-2026-11-23-drill.jsonl",
    "zendesk": "zendesk/tickets-page-9999.json",
    "github": "github/issues-page-999.json",
}
KEY = {"posthog": "event_id", "zendesk": "ticket_id", "github": "node_id"}


def target(source: str, slot: int | None = None) -> str:
    """The bad file's path under demo/; `slot` gives each case of a group its own file."""
    if slot is None:
        return TARGET[source]
    stem, ext = TARGET[source].rsplit(".", 1)
    return f"{stem[:-2]}{slot:02d}.{ext}" if source != "posthog" else f"{stem}-{slot:02d}.{ext}"


def _uid(marker: str) -> int:
    """Record ids unique to a case (cases grouped in one run must not supersede each other)."""
    return zlib.crc32(marker.encode()) % 100_000


@dataclass(frozen=True)
class Case:
    name: str
    source: str
    make: Callable[[Path, str], bytes]  # (world dir, marker) -> file bytes


# ------------------------------------------------------------------------ good records, mutated
def _ph_event(world: Path, marker: str, i: int = 0) -> dict:
    first = sorted((world / "posthog").glob("*.jsonl"))[-1]
    rec = json.loads(first.read_text(encoding="utf-8").splitlines()[0])
    rec["uuid"] = f"d7111000-0000-4000-8000-{zlib.crc32(marker.encode()) % 10**8:08d}{i:04d}"
    rec["properties"]["drill_note"] = marker
    return rec


def _ph_lines(recs: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in recs).encode()


def _zd_page(world: Path) -> dict:
    return json.loads(sorted((world / "zendesk").glob("*.json"))[-1].read_text(encoding="utf-8"))


def _zd_ticket(world: Path, marker: str, k: int = 1) -> dict:
    t = dict(_zd_page(world)["tickets"][0])
    t["id"] = 90_000_000 + _uid(marker) * 10 + k
    t["subject"] = f"Drill ticket {marker}"
    return t


def _zd_wrap(world: Path, tickets: list) -> bytes:
    page = _zd_page(world)
    page["tickets"] = tickets
    page["users"] = []
    return json.dumps(page).encode()


def _gh_issue(world: Path, marker: str, k: int = 1) -> dict:
    n = 100_000 + _uid(marker) * 10 + k
    i = dict(json.loads(sorted((world / "github").glob("*.json"))[-1].read_text())[0])
    i["node_id"] = f"I_drill{n}"
    i["id"] = 7_000_000_000 + n
    i["number"] = n
    i["title"] = f"Drill issue {marker}"
    return i


def _changed(rec: dict, changes: dict, marker: str) -> dict:
    """`rec` with each change applied: _DROP removes the field, a callable gets the marker."""
    for k, v in changes.items():
        if v is _DROP:
            rec.pop(k, None)
        else:
            rec[k] = v(marker) if callable(v) else v
    return rec


def _ph_mut(**changes) -> Callable[[Path, str], bytes]:
    def make(world: Path, marker: str) -> bytes:
        rec = _changed(_ph_event(world, marker), changes, marker)
        return _ph_lines([rec, _ph_event(world, marker, 1)])

    return make


def _zd_mut(**changes) -> Callable[[Path, str], bytes]:
    def make(world: Path, marker: str) -> bytes:
        t = _changed(_zd_ticket(world, marker), changes, marker)
        return _zd_wrap(world, [t, _zd_ticket(world, marker, 2)])

    return make


def _gh_mut(**changes) -> Callable[[Path, str], bytes]:
    def make(world: Path, marker: str) -> bytes:
        i = _changed(_gh_issue(world, marker), changes, marker)
        return json.dumps([i, _gh_issue(world, marker, 2)]).encode()

    return make


_DROP = object()


def _deeply_nested(world: Path, marker: str) -> bytes:
    """An event whose properties nest 2,000 objects deep, written as text (json.dumps itself
    stops at Python's recursion limit), then a good event."""
    rec = _ph_event(world, marker)
    rec["properties"] = "@NESTED@"
    nested = '{"n": ' * 2000 + json.dumps({"leaf": marker}) + "}" * 2000
    line = json.dumps(rec).replace('"@NESTED@"', nested)
    return (line + "\n").encode() + _ph_lines([_ph_event(world, marker, 1)])


def _binary(world: Path, marker: str) -> bytes:
    return random.Random(marker).randbytes(4096) + marker.encode() + bytes(range(256))


def _html(world: Path, marker: str) -> bytes:
    return f"<html><head><title>502 Bad Gateway</title></head><body>{marker}</body></html>".encode()


def _zd_tie_with_deletion(world: Path, marker: str) -> bytes:
    t = _zd_page(world)["tickets"][0]
    a, b = dict(t), dict(t)
    a["subject"], b["subject"] = f"tie A {marker}", f"tie B {marker}"
    b["status"] = "deleted"
    return _zd_wrap(world, [a, b, dict(a)])


CASES = [
    # PostHog JSON lines
    Case(
        "ph-invalid-utf8-line",
        "posthog",
        lambda w, m: (
            _ph_lines([_ph_event(w, m)]) + b'{"uuid":"bad","event":"\xff\xfe' + m.encode() + b'"}\n'
        ),
    ),
    Case(
        "ph-gzip-named-jsonl", "posthog", lambda w, m: gzip.compress(_ph_lines([_ph_event(w, m)]))
    ),
    Case("ph-binary-file", "posthog", _binary),
    Case("ph-html-error-page", "posthog", _html),
    Case(
        "ph-truncated-json-line",
        "posthog",
        lambda w, m: (
            _ph_lines([_ph_event(w, m)]) + json.dumps(_ph_event(w, m, 1)).encode()[:120] + b"\n"
        ),
    ),
    Case("ph-empty-file", "posthog", lambda w, m: b""),
    Case(
        "ph-bom",
        "posthog",
        lambda w, m: b"\xef\xbb\xbf" + _ph_lines([_ph_event(w, m), _ph_event(w, m, 1)]),
    ),
    Case(
        "ph-crlf",
        "posthog",
        lambda w, m: _ph_lines([_ph_event(w, m), _ph_event(w, m, 1)]).replace(b"\n", b"\r\n"),
    ),
    Case("ph-huge-line", "posthog", _ph_mut(properties=lambda m: {"blob": m + "x" * 3_000_000})),
    Case("ph-event-as-object", "posthog", _ph_mut(event=lambda m: {"name": m})),
    Case("ph-properties-as-string", "posthog", _ph_mut(properties=lambda m: f"props {m}")),
    Case("ph-numeric-timestamp", "posthog", _ph_mut(timestamp=1795337415)),
    Case(
        "ph-duplicate-identical-bad-lines",
        "posthog",
        lambda w, m: (b'{"uuid": "dup", "event": ' + m.encode() + b"\n") * 3,
    ),
    Case(
        "ph-nul-bytes",
        "posthog",
        lambda w, m: (
            _ph_lines([_ph_event(w, m)])
            + b'{"uuid":"nul\x00'
            + m.encode()
            + b'","event":"x\x00y"}\n'
        ),
    ),
    Case("ph-deeply-nested", "posthog", _deeply_nested),
    Case("ph-wrong-typed-uuid", "posthog", _ph_mut(uuid=12345)),
    Case("ph-missing-uuid", "posthog", _ph_mut(uuid=_DROP)),
    Case("ph-future-timestamp", "posthog", _ph_mut(timestamp="2099-01-01T00:00:00+00:00")),
    Case("ph-ancient-timestamp", "posthog", _ph_mut(timestamp="1970-01-01T00:00:00+00:00")),
    Case("ph-array-line", "posthog", lambda w, m: b'[1, 2, "' + m.encode() + b'"]\n'),
    # Zendesk export pages
    Case(
        "zd-page-without-tickets",
        "zendesk",
        lambda w, m: json.dumps({"error": m, "after_cursor": None, "end_of_stream": True}).encode(),
    ),
    Case(
        "zd-tickets-as-object",
        "zendesk",
        lambda w, m: json.dumps({"tickets": _zd_ticket(w, m), "end_of_stream": True}).encode(),
    ),
    Case("zd-truncated-json", "zendesk", lambda w, m: _zd_wrap(w, [_zd_ticket(w, m)])[:300]),
    Case("zd-empty-file", "zendesk", lambda w, m: b""),
    Case("zd-html-error-page", "zendesk", _html),
    Case("zd-unknown-priority", "zendesk", _zd_mut(priority="URGENT!!")),
    Case("zd-numeric-updated-at", "zendesk", _zd_mut(updated_at=1795337415)),
    Case("zd-string-ticket-id", "zendesk", _zd_mut(id=lambda m: f"abc-{m}")),
    Case("zd-tie-with-deletion", "zendesk", _zd_tie_with_deletion),
    Case(
        "zd-invalid-utf8",
        "zendesk",
        lambda w, m: _zd_wrap(w, [_zd_ticket(w, m)]).replace(
            b"Drill ticket", b"Drill \xff\xfe ticket"
        ),
    ),
    Case("zd-bom", "zendesk", lambda w, m: b"\xef\xbb\xbf" + _zd_wrap(w, [_zd_ticket(w, m)])),
    Case("zd-nul-bytes", "zendesk", lambda w, m: _zd_wrap(w, [_zd_ticket(w, m)]) + b"\x00\x00"),
    # GitHub issue pages
    Case(
        "gh-rate-limit-message",
        "github",
        lambda w, m: json.dumps(
            {
                "message": "API rate limit exceeded for 203.0.113.7 " + m,
                "documentation_url": "https://docs.github.com/rest/overview/resources-in-the-rest-api",
            }
        ).encode(),
    ),
    Case("gh-page-as-object", "github", lambda w, m: json.dumps(_gh_issue(w, m)).encode()),
    Case("gh-truncated-json", "github", lambda w, m: json.dumps([_gh_issue(w, m)]).encode()[:200]),
    Case("gh-binary-file", "github", _binary),
    Case("gh-missing-node-id", "github", _gh_mut(node_id=_DROP)),
    Case("gh-wrong-typed-number", "github", _gh_mut(number=lambda m: f"n-{m}")),
    Case("gh-future-created-at", "github", _gh_mut(created_at="2099-01-01T00:00:00Z")),
    Case("gh-unknown-state", "github", _gh_mut(state="URGENT!!")),
]

_LOAD = re.compile(
    r"(\w[\w ()]*): \d+ file\(s\)/page\(s\) loaded, \d+ skipped as unchanged"
    r"(?:, \d+ rejected whole)?; (\d+) records read "
    r"-> (\d+) new, (\d+) updated, (\d+) unchanged, (\d+) superseded, (\d+) dropped, "
    r"(\d+) quarantined"
)
_VALID = re.compile(
    r"([\w.]+): (?:[A-Z]+ — )?([\d,]+) in = ([\d,]+) accepted \+ ([\d,]+) quarantined"
)


def accounting_problems(log: str, expect: bool = False) -> list[str]:
    """Load and validation lines whose counts do not add up; with `expect`, also say so when
    there is no such line at all (a changed log format must not pass silently)."""
    out = []
    if expect and not (_LOAD.search(log) and _VALID.search(log)):
        out.append("no load/validation count lines found in the log")
    for m in _LOAD.finditer(log):
        read, parts = int(m[2]), [int(x) for x in m.groups()[2:]]
        if read != sum(parts):
            out.append(f"load {m[1].strip()}: {read} read != {sum(parts)} accounted")
    for m in _VALID.finditer(log):
        n_in, acc, q = (int(x.replace(",", "")) for x in m.groups()[1:])
        if n_in != acc + q:
            out.append(f"{m[1]}: {n_in} in != {acc} + {q}")
    return out


def _case(c: Case | str) -> Case:
    # By name: a Case holds lambdas, which cannot cross to a worker process.
    return next(x for x in CASES if x.name == c) if isinstance(c, str) else c


def _marker(case: Case) -> str:
    return f"DRILLRAW{zlib.crc32(case.name.encode()):010d}"


def _error_line(stderr: str) -> str:
    """The line saying what went wrong (not merely the last line of the output)."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for pat in ("Error", "error:", "failed", "Failed", "Traceback"):
        hits = [ln for ln in lines if pat in ln and "Finished in state Completed" not in ln]
        if hits:
            return hits[-1]
    return lines[-1] if lines else ""


def raw_keys(db: Path) -> dict[str, set[str]]:
    """{raw table: set of record keys} of the three file sources."""
    import duckdb

    if not db.exists():
        return {}
    con = duckdb.connect(str(db), read_only=True)
    try:
        out = {}
        for src, table in RAW.items():
            try:
                rows = con.sql(f"select distinct cast({KEY[src]} as varchar) from {table}")
                out[table] = {r[0] for r in rows.fetchall()}
            except duckdb.Error:
                out[table] = set()
        return out
    finally:
        con.close()


def _two_runs(d: Path, markers: list[str]) -> tuple[list[str], dict[str, str]]:
    """Run the nightly twice in `d`; (problems, {marker: where it leaked})."""
    config = write_config(d)
    first = run_cli(d, nightly_args(config))
    problems = []
    state = run_state(first)
    if state not in ("completed", "degraded"):
        problems.append(f"run {state} (exit {first.rc}): {_error_line(first.stderr)[:200]}")
    d.joinpath(".first_state").write_text(state)
    second = run_cli(d, nightly_args(config))
    if run_state(second) not in ("completed", "degraded"):
        problems.append(
            f"next run {run_state(second)} (exit {second.rc}): {_error_line(second.stderr)[:160]}"
        )
    leaks = {}
    for label, run in (("run 1", first), ("run 2", second)):
        problems += [
            f"{label}: {p}" for p in accounting_problems(run.stderr + run.stdout, expect=True)
        ]
        for m in markers:
            if m in run.stderr or m in run.stdout:
                leaks[m] = f"{label}: raw bad text in the logs"
    d.joinpath(".seconds").write_text(str(first.seconds + second.seconds))
    return problems, leaks


def trial(spec: dict) -> Trial:
    case = _case(spec["case"])
    ref_counts: dict[str, int] = spec["ref_counts"]
    d = new_trial_dir(Path(spec["work"]), f"inputs-{case.name}", Path(spec["world"]))
    marker = _marker(case)
    (d / "demo" / target(case.source)).write_bytes(case.make(d / "demo", marker))
    problems, leaks = _two_runs(d, [marker])
    counts = {t: v[0] for t, v in table_hashes(d / "feedback.duckdb").items() if t in RAW.values()}
    for src, table in RAW.items():
        if src != case.source and counts.get(table) != ref_counts.get(table):
            problems.insert(
                1, f"{src} not loaded ({counts.get(table)} rows vs {ref_counts.get(table)})"
            )
    problems += list(leaks.values())
    return Trial(
        SECTION,
        case.name,
        not problems,
        "; ".join(problems[:5]),
        float(d.joinpath(".seconds").read_text()),
    )


def plant(demo: Path, names: list[str]) -> dict[str, str]:
    """Write the bad files of several cases into a world copy (each its own file, ids and
    marker); {case name: marker}."""
    cases = [_case(c) for c in names]
    markers = {c.name: _marker(c) for c in cases}
    # Made from the clean world first, written after (a case reads the world's last page).
    files = {
        demo / target(c.source, slot): c.make(demo, markers[c.name]) for slot, c in enumerate(cases)
    }
    for path, data in files.items():
        path.write_bytes(data)
    return markers


def judge_group(db: Path, runs: list, markers: dict[str, str], ref_keys: dict) -> list[str]:
    """The grouped bar (module doc) over the runs made in one folder after `plant`."""
    problems = []
    for n, run in enumerate(runs, 1):
        state = run_state(run)
        if state not in ("completed", "degraded"):
            problems.append(f"run {n} {state} (exit {run.rc}): {_error_line(run.stderr)[:200]}")
        problems += [
            f"run {n}: {p}" for p in accounting_problems(run.stderr + run.stdout, expect=True)
        ]
        for name, m in markers.items():
            if m in run.stderr or m in run.stdout:
                problems.append(f"run {n}: raw bad text of {name} in the logs")
    got = raw_keys(db)
    for src, table in RAW.items():
        missing = ref_keys.get(table, set()) - got.get(table, set())
        if missing:
            problems.append(f"{src}: {len(missing)} clean records not loaded")
    return problems


def group_trial(spec: dict) -> list[Trial]:
    """Several cases in one pair of runs (see the module doc); on any problem, each case of the
    group is rerun alone and judged by `trial`."""
    import time

    t0 = time.perf_counter()
    names = list(spec["cases"])
    d = new_trial_dir(
        Path(spec["work"]), f"inputs-group{spec.get('group', '')}", Path(spec["world"])
    )
    try:
        markers = plant(d / "demo", names)
    except Exception as exc:  # a case whose file cannot be made: judge each case alone
        return [_alone(spec, n, f"group not run: {exc!r}"[:160]) for n in names]
    config = write_config(d)
    runs = [run_cli(d, nightly_args(config)) for _ in range(2)]
    problems = judge_group(d / "feedback.duckdb", runs, markers, spec["ref_keys"])
    if not problems:
        each = (time.perf_counter() - t0) / len(names)
        return [
            Trial(SECTION, n, True, f"grouped with {len(names) - 1} other case(s)", each)
            for n in names
        ]
    return [_alone(spec, n, f"its group failed: {'; '.join(problems[:2])}") for n in names]


def _alone(spec: dict, name: str, why: str) -> Trial:
    try:
        t = trial({**spec, "case": name})
    except Exception as exc:  # a harness error is this case's failure, never hidden
        return Trial(SECTION, name, False, f"harness error: {exc!r}"[:300] + f" [{why}]")
    t.detail = (t.detail or "passes alone") + f" [{why}]"
    return t
