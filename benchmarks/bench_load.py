"""Load-to-staging benchmark: generated PostHog/Zendesk/GitHub exports -> raw.* -> staging.*.

    python benchmarks/bench_load.py --events 1000000
    python benchmarks/bench_load.py --events 10000000

Generates the demo exports once (not timed, cached under benchmarks/out/), then runs the load and
staging stages in a child process under GNU `time -v` and prints wall time, peak RSS and rows/s.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "out"


def stage_only(data: Path, db_path: Path, memory_limit: str) -> dict:
    from tasks import contracts, db, load, transform

    db_path.unlink(missing_ok=True)
    timings = {}
    with db.warehouse(db_path, memory_limit=memory_limit) as con:
        db.ensure_schema(con)
        t0 = time.perf_counter()
        stats = {}
        for spec, pattern in (
            (contracts.POSTHOG_EVENTS, data / "posthog" / "*.jsonl"),
            (contracts.ZENDESK_TICKETS, data / "zendesk" / "*.json"),
            (contracts.GITHUB_ISSUES, data / "github" / "*.json"),
        ):
            stats[spec.source] = load.load_source(con, spec, str(pattern), "bench").as_dict()
        timings["load_s"] = round(time.perf_counter() - t0, 2)
        t1 = time.perf_counter()
        counts = transform.build_staging(con, "bench-salt")
        timings["staging_s"] = round(time.perf_counter() - t1, 2)
    return {
        "timings": timings,
        "staging_rows": counts,
        "events_read": stats["posthog"]["records_read"],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--memory-limit", default="1GB", help="DuckDB memory_limit (default 1GB)")
    p.add_argument("--keep", action="store_true", help="keep the generated data and DuckDB file")
    p.add_argument("--child", metavar="DATA", help=argparse.SUPPRESS)
    p.add_argument("--db", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.child:
        result = stage_only(Path(args.child), Path(args.db), args.memory_limit)
        print("RESULT " + json.dumps(result))
        return 0

    from tasks.demo_data import DemoConfig, generate_demo_data

    data = OUT / f"demo-{args.events}"
    if not (data / "_manifest.json").exists():
        print(f"generating {args.events:,} events into {data} (not timed) …", flush=True)
        t0 = time.perf_counter()
        generate_demo_data(
            DemoConfig(out_dir=data, end_date=date(2026, 11, 24), events=args.events)
        )
        print(f"  generated in {time.perf_counter() - t0:.1f}s", flush=True)
    db_path = OUT / f"bench-{args.events}.duckdb"
    cmd = [
        sys.executable,
        __file__,
        "--child",
        str(data),
        "--db",
        str(db_path),
        "--memory-limit",
        args.memory_limit,
    ]
    gnu_time = shutil.which("time") or "/usr/bin/time"
    proc = subprocess.run([gnu_time, "-v", *cmd], capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stdout, proc.stderr, sep="\n")
        return proc.returncode
    result = json.loads(proc.stdout.split("RESULT ", 1)[1])
    wall = re.search(r"Elapsed \(wall clock\) time.*: (.+)", proc.stderr).group(1).strip()
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    events = result["events_read"]
    stage_s = result["timings"]["load_s"] + result["timings"]["staging_s"]
    print(f"events read:          {events:,}")
    print(f"load (raw):           {result['timings']['load_s']} s")
    print(f"staging build:        {result['timings']['staging_s']} s")
    print(f"load-to-staging:      {stage_s:.2f} s  ({events / stage_s:,.0f} events/s)")
    print(f"process wall (time):  {wall}  (includes Python start-up and imports)")
    print(f"peak RSS (time -v):   {rss_kb / 1024:,.0f} MiB")
    if not args.keep:
        db_path.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
