"""Shared drill machinery: a small seeded world, per-trial temp dirs, CLI child runs, comparison
of warehouses and trackers, and the trial result record."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
AS_OF = "2026-11-24"
END = date(2026, 11, 24)
# A small world: the whole nightly runs in well under a minute on one core.
WORLD = {"days": 60, "users": 200, "accounts": 20, "events": 5000, "seed": 7}
CHILD_TIMEOUT_S = float(os.environ.get("DRILL_CHILD_TIMEOUT", "300"))

# Columns that legitimately differ between two runs over the same data (run ids, wall-clock
# stamps, load bookkeeping, file paths). Everything else must be identical.
EXCLUDED_COLUMNS = frozenset(
    {
        "_source_file",
        "_batch_id",
        "_loaded_at",
        "ingested_at",
        "source_file",
        "run_id",
        "first_run_id",
        "last_run_id",
        "profile_run_id",
        "quarantined_at",
        "validated_at",
        "profiled_at",
        "built_at",
        "loaded_at",
        "batch_id",
        # A load reject's id is a digest over its file's absolute path (like source_file, it
        # differs between two trial folders); its text (reason, payload) is still compared.
        "quarantine_id",
    }
)
# Schemas compared whole, plus single tables of the bookkeeping schemas.
COMPARED_SCHEMAS = ("raw", "staging", "intermediate", "marts")
COMPARED_TABLES = ("quality.quarantine",)


@dataclass
class Trial:
    section: str
    name: str
    passed: bool
    detail: str = ""
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------- world
def world_template(cache: Path) -> Path:
    """The seeded small demo world, generated once into `cache` (byte-identical per params)."""
    out = cache / "world-{days}d-{users}u-{events}e-s{seed}".format(**WORLD)
    if (out / "_manifest.json").exists():
        return out
    from tasks.demo_data import DemoConfig, generate_demo_data

    tmp = Path(tempfile.mkdtemp(dir=cache))
    generate_demo_data(
        DemoConfig(
            out_dir=tmp,
            end_date=END,
            days=WORLD["days"],
            users=WORLD["users"],
            accounts=WORLD["accounts"],
            events=WORLD["events"],
            seed=WORLD["seed"],
        )
    )
    try:
        tmp.rename(out)
    except OSError:  # another process won the race
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def new_trial_dir(root: Path, name: str, world: Path | None) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80]
    d = Path(tempfile.mkdtemp(prefix=f"{safe}-", dir=root))
    if world is not None:
        shutil.copytree(world, d / "demo")
    return d


def config_text(extra_top: str = "", extra_tables: str = "", sources: dict | None = None) -> str:
    src = {
        "posthog_events": "demo/posthog/*.jsonl",
        "zendesk_tickets": "demo/zendesk/*.json",
        "github_issues": "demo/github/*.json",
        "accounts": "demo/accounts/*.csv",
        **(sources or {}),
    }
    lines = [
        'duckdb_path = "feedback.duckdb"',
        'snapshot_path = "feedback_analyst.duckdb"',
        extra_top,
        "[demo]",
        "enabled = false",
        "[sources]",
        *(f'{k} = "{v}"' for k, v in src.items()),
        "[writeback]",
        'tracker_dir = "tracker"',
        extra_tables,
    ]
    return "\n".join(line for line in lines if line) + "\n"


def write_config(trial: Path, text: str | None = None) -> Path:
    path = trial / "config.toml"
    path.write_text(config_text() if text is None else text, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------ runs
@dataclass
class Run:
    rc: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def killed(self) -> bool:
        return self.rc == -9


def prefect_home() -> str:
    """One Prefect home per worker process: its ephemeral API database is migrated once and
    reused by the worker's trials, which run one after another."""
    home = Path(tempfile.gettempdir()) / f"drill-prefect-{os.getpid()}"
    home.mkdir(exist_ok=True)
    return str(home)


def run_cli(
    trial: Path,
    args: list[str],
    env: dict[str, str] | None = None,
    timeout: float = CHILD_TIMEOUT_S,
    hooked: bool = True,
) -> Run:
    """`python -m flows.cli <args>` (through the drill hook) in a child process, cwd = trial."""
    child_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FEEDBACK_LOOP_", "DRILL_")) and k != "PREFECT_API_URL"
    }
    child_env.update(
        {
            "PYTHONPATH": str(REPO),
            "PREFECT_HOME": prefect_home(),
            "PREFECT_LOGGING_COLORS": "false",
            "NO_COLOR": "1",
            "COLUMNS": "160",
        }
    )
    child_env.update(env or {})
    module = "benchmarks.drill.hook" if hooked else "flows.cli"
    logs = trial / "logs"
    logs.mkdir(exist_ok=True)
    n = len(list(logs.glob("*.stderr")))
    out_path, err_path = logs / f"{n:02d}.stdout", logs / f"{n:02d}.stderr"
    t0 = time.perf_counter()
    # Own session: a SIGKILLed CLI leaves its ephemeral Prefect API server (a grandchild)
    # behind; the whole group is ended after the child, and output goes to files, not pipes
    # (an orphan holding a pipe would block the read forever).
    with out_path.open("wb") as fo, err_path.open("wb") as fe:
        proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=trial,
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=fo,
            stderr=fe,
            start_new_session=True,
        )
        try:
            rc = proc.wait(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
            rc = -999
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    out = out_path.read_text(encoding="utf-8", errors="replace")
    err = err_path.read_text(encoding="utf-8", errors="replace")
    if timed_out:
        err += f"\n[drill] child timed out after {timeout:.0f}s"
    run = Run(rc, out, err, time.perf_counter() - t0)
    return run


def nightly_args(config: Path, *extra: str) -> list[str]:
    return ["run", "--config", str(config), "--as-of", AS_OF, *extra]


def run_state(run: Run) -> str:
    """completed / degraded / failed / killed / user-error, from the exit code and the output."""
    if run.killed:
        return "killed"
    if run.rc == 2:
        return "user-error"
    if run.rc == 3:
        return "degraded"
    if run.rc != 0:
        return "failed"
    return "degraded" if "(Degraded)" in run.stderr else "completed"


# ------------------------------------------------------------------------------- comparing
def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def table_hashes(db_path: Path, root: Path | None = None) -> dict[str, tuple[int, str]]:
    """{schema.table: (rows, md5 of the sorted rows)} over COMPARED_SCHEMAS/TABLES, without the
    EXCLUDED_COLUMNS; the trial folder in any text is replaced by <ROOT> first."""
    import duckdb

    if not db_path.exists():
        return {}
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        cols = con.sql(
            "select table_schema, table_name, list(column_name order by ordinal_position), "
            "list(data_type order by ordinal_position) "
            "from information_schema.columns where table_catalog = current_database() "
            "group by all order by 1, 2"
        ).fetchall()
        out = {}
        for schema, table, names, types in cols:
            fq = f"{schema}.{table}"
            if schema not in COMPARED_SCHEMAS and fq not in COMPARED_TABLES:
                continue
            keep = [(c, t) for c, t in zip(names, types, strict=True) if c not in EXCLUDED_COLUMNS]
            if not keep:
                continue
            # Every column exactly, doubles too (their text is the shortest round-trip form, so a
            # last-bit difference shows): float aggregates are summed in a fixed order / as
            # DECIMAL, so two runs over the same data give the same bits.
            exprs = [_q(c) for c, _ in keep]
            if any(t == "JSON" for _, t in keep):
                out[fq] = _json_table_hash(con, f"{_q(schema)}.{_q(table)}", keep, exprs, root)
                continue
            row = "cast(row(" + ", ".join(exprs) + ") as varchar)"
            if root is not None:
                row = f"replace({row}, ?, '<ROOT>')"
            sql = (
                f"select count(*), md5(coalesce(string_agg(r, chr(10) order by r), '')) "
                f"from (select {row} as r from {_q(schema)}.{_q(table)})"
            )
            n, digest = con.execute(sql, [str(root)] if root is not None else []).fetchone()
            out[fq] = (n, digest)
        return out
    finally:
        con.close()


def _norm_json(text: str | None) -> str:
    """JSON text with sorted keys (numbers exactly as written)."""
    if text is None:
        return "null"
    try:
        obj = json.loads(text)
    except ValueError:
        return text
    return json.dumps(obj, sort_keys=True)


def _json_table_hash(con, fq: str, keep: list, exprs: list[str], root: Path | None) -> tuple:
    sel = ", ".join(
        f"cast({_q(c)} as varchar)" if t == "JSON" else f"cast({e} as varchar)"
        for (c, t), e in zip(keep, exprs, strict=True)
    )
    is_json = [t == "JSON" for _, t in keep]
    rows = []
    for r in con.execute(f"select {sel} from {fq}").fetchall():
        text = repr(tuple(_norm_json(v) if j else v for v, j in zip(r, is_json, strict=True)))
        rows.append(text.replace(str(root), "<ROOT>") if root is not None else text)
    rows.sort()
    return len(rows), hashlib.md5("\n".join(rows).encode()).hexdigest()


def tracker_issues(tracker: Path, root: Path | None = None) -> dict[str, str]:
    """{file name: normalised text} of the Markdown tracker (dot files are temp files)."""
    if not tracker.is_dir():
        return {}
    out = {}
    for p in sorted(tracker.glob("*.md")):
        text = p.read_text(encoding="utf-8", errors="replace")
        if root is not None:
            text = text.replace(str(root), "<ROOT>")
        out[p.name] = text
    return out


def fingerprints(issues: dict[str, str]) -> list[str]:
    marker = "feedback-loop:fingerprint="
    fps = []
    for text in issues.values():
        for line in text.splitlines():
            if marker in line:
                fps.append(line.split(marker, 1)[1].split(" ")[0].rstrip("->").strip())
    return fps


def diff_tables(problems: list[str]) -> set[str]:
    """The table names in diff_snapshots' problems (tracker problems excluded)."""
    return {p.split(":", 1)[0] for p in problems if not p.startswith("tracker:")}


def diff_snapshots(
    got_tables: dict, want_tables: dict, got_issues: dict, want_issues: dict
) -> list[str]:
    """Human-readable differences (empty = identical)."""
    problems = []
    for t in sorted(set(got_tables) | set(want_tables)):
        g, w = got_tables.get(t), want_tables.get(t)
        if g == w:
            continue
        if g is None or w is None:
            problems.append(f"{t}: {'missing' if g is None else 'extra'} table")
        elif g[0] != w[0]:
            problems.append(f"{t}: {g[0]} rows vs {w[0]} (lost or duplicated)")
        else:
            problems.append(f"{t}: same count {g[0]}, different content")
    fps = fingerprints(got_issues)
    dups = sorted({f for f in fps if fps.count(f) > 1})
    if dups:
        problems.append(f"tracker: duplicated issues {dups}")
    for name in sorted(set(got_issues) | set(want_issues)):
        if name not in got_issues:
            problems.append(f"tracker: issue {name} lost")
        elif name not in want_issues:
            problems.append(f"tracker: extra issue {name}")
        elif got_issues[name] != want_issues[name]:
            problems.append(f"tracker: issue {name} body differs")
    return problems


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]
