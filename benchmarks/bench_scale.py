"""Nightly cost against history size: a first night, a no-new-data night and a one-new-day night
on demo histories of 1M, 10M (and, disk permitting, 100M) events, in one run.

    python benchmarks/bench_scale.py --sizes 1000000 10000000
    make bench-scale SIZES="1000000 10000000 100000000"

Per size: the demo history (90 days up to --end-date D, `feedback-loop demo-data --events N`) is
generated once and cached under benchmarks/out/scale-world-<N>-seed<S>-<D>-v<G>/ (reruns reuse
it; generation is timed but is not part of any night). Each size gets a fresh run folder
benchmarks/out/scale/<N>/ whose data/ holds hard links to the cached files, a settings file (demo
generator off, warehouse, snapshot and Markdown tracker in the run folder) and then:

  night 1  first night, empty warehouse, --as-of D
  night 2  no new data: the same files again, --as-of D
  night 3  one new day: `demo-data --append-day D+1` adds that day's files (not timed), --as-of D+1

Every night is `python -m flows.cli run` in its own process (Prefect's ephemeral API server runs
as its child, in a Prefect home under benchmarks/out/scale/, migrated once before the first night
and not timed). Measured per night: wall time of the process; peak RSS of the whole process tree
(the sum over the CLI and all its descendants, sampled from /proc every 50 ms) and the exact peak
of its largest single process (wait4's ru_maxrss); and the stage seconds the run recorded in
ops.runs.stage_seconds. Targets: night 2 and night 3 at each size cost <= 1.2x the same night at
the smallest size (wall time), and peak RSS <= 1.5 GiB for every night at every size.

Prints a table and writes it, with the targets, to benchmarks/out/bench_scale.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "out"
RUNS = OUT / "scale"
GIB = 1024**3
END_DATE = date(2026, 11, 24)
# Disk per event, measured at 300k events (exports 308 B/event; warehouse + analyst snapshot +
# reports after the three nights 286 B/event), rounded up for margin. Not yet checked at 10M.
WORLD_BYTES_PER_EVENT = 400
WAREHOUSE_BYTES_PER_EVENT = 400
NIGHTS = (
    ("1 first", "first night: empty warehouse, --as-of D"),
    ("2 no new data", "same files again, --as-of D"),
    ("3 one new day", "day D+1 appended, --as-of D+1"),
)
STAGE_ORDER = (
    "demo_data",
    "load",
    "staging",
    "validate",
    "score",
    "validate_marts",
    "write_back",
    "snapshot",
    "report",
)


@dataclass
class Night:
    size: int
    night: str
    wall_s: float
    exit_code: int
    status: str
    as_of: str
    tree_peak_bytes: int
    max_process_bytes: int
    cpu_s: float
    load_avg: float
    stages: dict[str, float] = field(default_factory=dict)

    @property
    def peak_bytes(self) -> int:
        return max(self.tree_peak_bytes, self.max_process_bytes)

    @property
    def flow_s(self) -> float:
        return sum(self.stages.values())


# ------------------------------------------------------------------------ process-tree memory
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _tree_rss(root: int) -> int:
    """Bytes resident in `root` and all its descendants now (one scan of /proc)."""
    parent: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        # the command name is in parentheses and may hold spaces: fields follow the last ")"
        parent[int(entry.name)] = int(stat[stat.rindex(b")") + 2 :].split()[1])
    tree, frontier = {root}, [root]
    children: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    while frontier:
        for child in children.get(frontier.pop(), []):
            if child not in tree:
                tree.add(child)
                frontier.append(child)
    total = 0
    for pid in tree:
        try:
            with open(f"/proc/{pid}/statm", "rb") as fh:
                total += int(fh.read().split()[1]) * _PAGE
        except OSError:
            continue
    return total


def run_measured(
    cmd: list[str], env: dict[str, str], log: Path
) -> tuple[int, float, int, int, float, float]:
    """Run cmd; return (exit code, wall s, peak tree RSS bytes sampled, max single-process RSS
    bytes from wait4, CPU seconds of the tree (user + system, wait4), the machine's mean load
    average during the run)."""
    with log.open("wb") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        peak = 0
        loads: list[float] = []
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            n = 0
            while not done.is_set():
                peak = max(peak, _tree_rss(proc.pid))
                if n % 20 == 0:
                    loads.append(os.getloadavg()[0])
                n += 1
                done.wait(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        done.set()
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
    # Linux: ru_maxrss in KiB; for wait4 it is the largest of the child and its reaped children
    # (whose CPU times it also includes).
    cpu = usage.ru_utime + usage.ru_stime
    load = sum(loads) / len(loads) if loads else os.getloadavg()[0]
    return proc.returncode, wall, peak, usage.ru_maxrss * 1024, cpu, load


# ------------------------------------------------------------------------------- the worlds
def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "flows.cli", *args]


def _env(prefect_home: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("FEEDBACK_LOOP_") and k != "PREFECT_API_URL"
    }
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "PREFECT_HOME": str(prefect_home),
            "PREFECT_LOGGING_COLORS": "false",
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
            "DO_NOT_TRACK": "1",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "GX_ANALYTICS_ENABLED": "false",
        }
    )
    return env


def world_dir(size: int, seed: int, end: date) -> Path:
    from tasks.demo_data import GENERATOR_VERSION

    return OUT / f"scale-world-{size}-seed{seed}-{end.isoformat()}-v{GENERATOR_VERSION}"


def ensure_world(size: int, seed: int, end: date, env: dict[str, str]) -> Path:
    """The cached demo history of `size` events (generated when missing)."""
    world = world_dir(size, seed, end)
    if (world / "_manifest.json").exists():
        print(f"  history: cached in {world.relative_to(ROOT)} (generation skipped)", flush=True)
        return world
    shutil.rmtree(world, ignore_errors=True)  # an interrupted generation has no manifest
    print(f"  history: generating {size:,} events into {world.relative_to(ROOT)} …", flush=True)
    cmd = _cli(
        "demo-data",
        "--events",
        str(size),
        "--out",
        str(world),
        "--end-date",
        end.isoformat(),
        "--days",
        "90",
        "--seed",
        str(seed),
    )
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    print(f"  history: generated in {time.perf_counter() - t0:.1f}s (not part of any night)")
    return world


def link_world(world: Path, data: Path) -> None:
    """data/ = hard links to the cached files (no copy; the cache stays as generated)."""
    for src in sorted(world.rglob("*")):
        dst = data / src.relative_to(world)
        if src.is_dir():
            dst.mkdir(parents=True, exist_ok=True)
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dst)
        except OSError:
            dst.symlink_to(src)


def write_settings(run: Path, memory_limit: str | None) -> Path:
    """Like tests/helpers.py demo_config: demo generator off, everything inside the run folder."""
    path = run / "settings.toml"
    lines = [
        f'duckdb_path = "{run / "wh" / "feedback.duckdb"}"',
        f'snapshot_path = "{run / "wh" / "feedback_analyst.duckdb"}"',
    ]
    if memory_limit:
        lines.append(f'duckdb_memory_limit = "{memory_limit}"')
    lines += [
        "[demo]",
        "enabled = false",
        "[sources]",
        f'posthog_events = "{run / "data" / "posthog" / "*.jsonl"}"',
        f'zendesk_tickets = "{run / "data" / "zendesk" / "*.json"}"',
        f'github_issues = "{run / "data" / "github" / "*.json"}"',
        f'accounts = "{run / "data" / "accounts" / "*.csv"}"',
        "[writeback]",
        f'tracker_dir = "{run / "tracker"}"',
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def last_run(db_path: Path) -> tuple[str, str, dict[str, float]]:
    """(status, as_of, stage seconds) of the newest run in the warehouse."""
    import duckdb

    con = duckdb.connect(str(db_path), read_only=True)
    try:
        row = con.sql(
            "select status, as_of_date::varchar, stage_seconds::varchar from ops.runs "
            "order by started_at desc limit 1"
        ).fetchall()
    finally:
        con.close()
    if not row:
        return "no run row", "", {}
    status, as_of, stages = row[0]
    return status, as_of or "", json.loads(stages) if stages else {}


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def disk_needed(size: int, seed: int, end: date) -> int:
    world = 0 if (world_dir(size, seed, end) / "_manifest.json").exists() else size
    return (world * WORLD_BYTES_PER_EVENT) + size * WAREHOUSE_BYTES_PER_EVENT


# ----------------------------------------------------------------------------------- a size
def bench_size(
    size: int, seed: int, end: date, env: dict[str, str], memory_limit: str | None, keep: bool
) -> list[Night]:
    world = ensure_world(size, seed, end, env)
    run = RUNS / str(size)
    shutil.rmtree(run, ignore_errors=True)
    (run / "wh").mkdir(parents=True)
    link_world(world, run / "data")
    config = write_settings(run, memory_limit)
    nights: list[Night] = []
    for i, (name, _) in enumerate(NIGHTS):
        day = end
        if i == 2:
            day = end + timedelta(days=1)
            subprocess.run(
                _cli("demo-data", "--out", str(run / "data"), "--append-day", day.isoformat()),
                cwd=ROOT,
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        cmd = _cli("run", "--config", str(config), "--as-of", day.isoformat())
        rc, wall, tree, single, cpu, load = run_measured(cmd, env, run / f"night{i + 1}.log")
        status, as_of, stages = last_run(run / "wh" / "feedback.duckdb")
        night = Night(size, name, wall, rc, status, as_of, tree, single, cpu, load, stages)
        nights.append(night)
        print(
            f"  night {name}: {wall:.1f}s wall, {night.flow_s:.1f}s in stages, {cpu:.1f}s CPU, "
            f"peak RSS {night.peak_bytes / GIB:.2f} GiB (tree {tree / GIB:.2f}, largest process "
            f"{single / GIB:.2f}), load avg {load:.1f}, exit {rc} "
            f"({status}, as of {as_of})",
            flush=True,
        )
        if rc not in (0, 3) or as_of != day.isoformat():
            raise SystemExit(f"night {name} at {size:,} did not score {day}: see {run}/night*.log")
    wh = _du(run / "wh")
    print(f"  warehouse + snapshot after three nights: {wh / GIB:.2f} GiB", flush=True)
    if not keep:
        shutil.rmtree(run / "wh", ignore_errors=True)
    return nights


# ----------------------------------------------------------------------------------- output
def _fmt_size(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n / 1000:g}k"


def render(
    nights: list[Night], skipped: list[str], max_ratio: float, max_rss: float, header: str
) -> tuple[str, bool]:
    stages = [s for s in STAGE_ORDER if any(s in n.stages for n in nights)]
    stages += sorted({s for n in nights for s in n.stages} - set(stages))
    cols = ["size", "night", "wall s", *stages, "outside stages", "CPU s", "peak RSS GiB"]
    cols += ["load avg", "exit"]
    lines = [header, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for n in nights:
        cells = [_fmt_size(n.size), n.night, f"{n.wall_s:.1f}"]
        cells += [f"{n.stages[s]:.2f}" if s in n.stages else "" for s in stages]
        cells += [f"{n.wall_s - n.flow_s:.1f}", f"{n.cpu_s:.1f}", f"{n.peak_bytes / GIB:.2f}"]
        cells += [f"{n.load_avg:.1f}", str(n.exit_code)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "outside stages = wall time not in any recorded stage: interpreter and imports, Prefect's "
        "ephemeral API server start, settings, writer lock, artifacts. peak RSS = the larger of "
        "the sampled sum over the process tree and the largest single process (wait4). CPU s = "
        "user + system seconds of the process tree. load avg = the machine's 1-minute load "
        "average during the night.",
        "",
    ]
    busy = [n for n in nights if n.load_avg > (os.cpu_count() or 1)]
    if busy:
        lines += [
            f"Warning: the machine was busy ({len(busy)} of {len(nights)} nights ran at a load "
            f"average above its {os.cpu_count()} CPUs): wall times include waiting for a CPU; "
            "the CPU-second ratios below are the steadier comparison.",
            "",
        ]
    ok = True
    sizes = sorted({n.size for n in nights})
    by = {(n.size, n.night): n for n in nights}
    base = sizes[0] if sizes else 0
    if len(sizes) > 1:
        lines.append(f"Targets (each size against {_fmt_size(base)}):")
        lines.append("")
    for size in sizes[1:]:
        for name in (NIGHTS[1][0], NIGHTS[2][0]):
            a, b = by.get((base, name)), by.get((size, name))
            if a is None or b is None:
                continue
            ratio = b.wall_s / a.wall_s
            passed = ratio <= max_ratio
            ok &= passed
            lines.append(
                f"- night {name}, {_fmt_size(size)}/{_fmt_size(base)}: wall {b.wall_s:.1f}s / "
                f"{a.wall_s:.1f}s = {ratio:.2f}x (target <= {max_ratio}x): "
                f"{'PASS' if passed else 'FAIL'}; in stages {b.flow_s:.1f}s / {a.flow_s:.1f}s = "
                f"{b.flow_s / a.flow_s:.2f}x; CPU {b.cpu_s:.1f}s / {a.cpu_s:.1f}s = "
                f"{b.cpu_s / a.cpu_s:.2f}x"
            )
    for size in sizes:
        peak = max(n.peak_bytes for n in nights if n.size == size) / GIB
        passed = peak <= max_rss
        ok &= passed
        lines.append(
            f"- peak RSS at {_fmt_size(size)}, all three nights: {peak:.2f} GiB "
            f"(target <= {max_rss} GiB): {'PASS' if passed else 'FAIL'}"
        )
    lines += [f"- {s}" for s in skipped]
    return "\n".join(lines) + "\n", ok


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--end-date", type=date.fromisoformat, default=END_DATE, metavar="D")
    p.add_argument("--memory-limit", help="duckdb_memory_limit in the settings (default: none)")
    p.add_argument("--max-ratio", type=float, default=1.2)
    p.add_argument("--max-rss-gib", type=float, default=1.5)
    p.add_argument("--keep", action="store_true", help="keep the warehouses (benchmarks/out/scale)")
    args = p.parse_args()
    if args.end_date + timedelta(days=1) > datetime.now(UTC).date():
        raise SystemExit(f"--end-date {args.end_date}: night 3 would score a day in the future")

    RUNS.mkdir(parents=True, exist_ok=True)
    prefect_home = RUNS / "prefect-home"
    prefect_home.mkdir(exist_ok=True)
    env = _env(prefect_home)
    warm = (
        "import flows\nfrom prefect import flow\n@flow\ndef warm_up():\n    return 1\nwarm_up()\n"
    )
    nights: list[Night] = []
    skipped: list[str] = []
    for size in sorted(args.sizes):
        need, free = disk_needed(size, args.seed, args.end_date), shutil.disk_usage(OUT).free
        if need > free:
            msg = (
                f"{_fmt_size(size)} skipped: needs about {need / GIB:.0f} GiB of disk "
                f"({WORLD_BYTES_PER_EVENT} B/event of exports when not cached + "
                f"{WAREHOUSE_BYTES_PER_EVENT} B/event of warehouse), {free / GIB:.0f} GiB free"
            )
            print(msg, flush=True)
            skipped.append(msg)
            continue
        if not nights:
            print("warming Prefect's ephemeral API database (not timed) …", flush=True)
            subprocess.run(
                [sys.executable, "-c", warm], cwd=ROOT, env=env, check=True, capture_output=True
            )
        print(f"{size:,} events:", flush=True)
        nights += bench_size(size, args.seed, args.end_date, env, args.memory_limit, args.keep)

    header = (
        f"# bench-scale: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, "
        f"history 90 days up to {args.end_date}, seed {args.seed}, duckdb_memory_limit "
        f"{args.memory_limit or 'default'}"
    )
    text, ok = render(nights, skipped, args.max_ratio, args.max_rss_gib, header)
    print()
    print(text, end="")
    (OUT / "bench_scale.md").write_text(text, encoding="utf-8")
    print(f"written to {(OUT / 'bench_scale.md').relative_to(ROOT)}")
    if not nights:
        print("nothing measured: every size was skipped")
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
