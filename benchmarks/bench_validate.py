"""Validation benchmark: Great Expectations vs the same checks as plain DuckDB SQL, 10M rows.

    python benchmarks/bench_validate.py              # 10,000,000 rows
    python benchmarks/bench_validate.py --rows 1000000

Builds (once, cached under benchmarks/out/) a DuckDB file with a stg_usage_events-like table of
N events over 90 days, with a few planted bad rows (NULL names and users, future timestamps) so
the failing-key path runs too. Then, in the same run, two child processes under GNU `time -v`:

- gx:  the daily-volume relation (quality.volume_daily) + the repo's stg_usage_events suite
       through tasks.validation.validate_table (GX's SQL engine, every check inside DuckDB,
       failing keys read for quarantine);
- sql: the same volume relation + the same checks hand-written as DuckDB SQL (one aggregate
       scan, then the failing keys of each failed row rule, uniqueness, freshness, volume).

Prints wall time per side (GX's 4-5 s import excluded, reported apart), their ratio and peak RSS.
Targets: GX <= 3x SQL, peak RSS <= 2 GiB.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "out"
END = date(2026, 11, 24)
DAYS = 90
TABLE = "stg_usage_events__unvalidated"
RUN_STARTED = datetime(2026, 11, 25, 2, 30, tzinfo=UTC)
TARGET_RATIO = 3.0
TARGET_RSS_GIB = 2.0
# Planted bad rows (well under the suite's 1% tolerance): listed for quarantine, rules pass.
N_NO_NAME, N_NO_USER, N_FUTURE = 100, 40, 25


def build(db_path: Path, rows: int) -> None:
    import duckdb

    from tasks import db, quality

    db_path.unlink(missing_ok=True)
    start = datetime.combine(END - timedelta(days=DAYS - 1), datetime.min.time(), tzinfo=UTC)
    con = duckdb.connect(str(db_path), config={"memory_limit": "2GB"})
    try:
        db.ensure_schema(con)
        quality.ensure_quality_tables(con)
        # Evenly over the days and inside each day; 60k users, 6k accounts.
        con.execute(
            f"""
            create table staging.{TABLE} as
            with ev as (
                select i, (i * {DAYS}) // {rows} as d from range({rows}) t(i)
            )
            select
                'posthog:' || uuid()::varchar as event_id,
                'posthog' as source,
                timestamptz '{start.isoformat()}' + to_days(d::integer)
                    + to_microseconds(((i * 86400000000) // ({rows} // {DAYS} + 1)) % 86400000000)
                    as occurred_at,
                timestamptz '{start.isoformat()}' + to_days(d::integer + 1) as ingested_at,
                'user-' || (hash(i) % 60000) as user_key,
                'acct-' || (hash(i * 7) % 6000) as account_key,
                (['$pageview', 'export_started', 'dashboard_viewed', 'search_performed',
                  'alert_created', 'invite_sent'])[1 + (hash(i * 3) % 6)::integer] as event_name,
                '/' || (['dashboards', 'exports', 'search', 'alerts', 'home'])[
                    1 + (hash(i * 5) % 5)::integer] || '/' || (i % 100) as url_path,
                '{{}}'::json as properties,
                1::bigint as n_events,
                null::varchar as type_error
            from ev
            """
        )
        con.execute(
            f"update staging.{TABLE} set event_name = null where event_id in "
            f"(select event_id from staging.{TABLE} using sample {N_NO_NAME} rows)"
        )
        con.execute(
            f"update staging.{TABLE} set user_key = null where event_id in "
            f"(select event_id from staging.{TABLE} where event_name is not null "
            f"using sample {N_NO_USER} rows)"
        )
        con.execute(
            f"update staging.{TABLE} set occurred_at = timestamptz '2031-01-01 00:00:00+00' "
            f"where event_id in (select event_id from staging.{TABLE} where event_name is not null "
            f"and user_key is not null using sample {N_FUTURE} rows)"
        )
        con.execute("checkpoint")
    finally:
        con.close()


def _params() -> dict:
    from tasks import quality

    return quality.run_params(RUN_STARTED, END, "bench")


def _volume(db_path: Path, memory_limit: str) -> float:
    """quality.volume_daily from the table (both sides need it; counted on both)."""
    from tasks import quality
    from tasks.db import sql_text, warehouse

    t0 = time.perf_counter()
    with warehouse(db_path, memory_limit=memory_limit) as con:
        # The relation reads both canonical unvalidated tables; tickets are empty here.
        con.execute(
            "create or replace view staging.stg_support_tickets__unvalidated as select "
            "null::varchar as ticket_id, null::varchar as source, null::timestamptz as "
            "created_at where false"
        )
        # A full batch, as the first night's gate records it: the per-row volume index
        # (volume_daily reads it) and the batch's newest record (the freshness rule reads it).
        quality.update_volume_rows(
            con,
            [
                quality.Batch(
                    table="staging.stg_usage_events",
                    suite="stg_usage_events",
                    schema="staging",
                    relation=TABLE,
                    mode="full",
                    reason="benchmark",
                    suite_hash="",
                    since=None,
                    watermark=None,
                )
            ],
        )
        con.execute("delete from quality.validation_batches where run_id = 'bench'")
        con.execute(
            "insert into quality.validation_batches select 'bench', 'staging.stg_usage_events', "
            "'stg_usage_events', 'full', 'benchmark', null, max(ingested_at), count(*), "
            f"max(occurred_at) filter (where occurred_at <= now()), '', now() from staging.{TABLE}"
        )
        con.execute("set variable as_of = ?::date", [END.isoformat()])
        con.execute("set variable dq_check_days = 28")
        con.execute(
            "create or replace table quality.volume_daily as\n"
            + sql_text("quality/volume_daily.sql").strip().rstrip(";")
        )
    return time.perf_counter() - t0


def run_gx(db_path: Path, memory_limit: str) -> dict:
    from tasks import validation
    from tasks.settings import EXPECTATIONS_DIR

    t0 = time.perf_counter()
    validation._import_gx()
    import_s = time.perf_counter() - t0
    volume_s = _volume(db_path, memory_limit)
    t1 = time.perf_counter()
    result = validation.validate_table(
        db_path,
        "staging",
        TABLE,
        "event_id",
        EXPECTATIONS_DIR / "stg_usage_events.json",
        params=_params(),
        memory_limit=memory_limit,
    )
    validate_s = time.perf_counter() - t1
    return {
        "import_s": round(import_s, 2),
        "volume_s": round(volume_s, 2),
        "validate_s": round(validate_s, 2),
        "total_s": round(volume_s + validate_s, 2),
        "failed": [o.label for o in result.outcomes if not o.success],
        "quarantine": {k: len(v) for k, v in result.quarantine().items()},
        "n_rules": len(result.outcomes),
    }


def run_sql(db_path: Path, memory_limit: str) -> dict:
    """The stg_usage_events suite, hand-written: one aggregate scan for the column rules, then
    the failing keys of each row rule with failures, uniqueness, freshness and volume."""
    from tasks.db import connect

    params = _params()
    volume_s = _volume(db_path, memory_limit)
    t0 = time.perf_counter()
    con = connect(db_path, read_only=True, memory_limit=memory_limit)
    try:
        for name in ("max_allowed_at", "reference_at"):
            con.execute(f"set variable {name} = ?", [params[name]])
        t = f"staging.{TABLE}"
        columns = {
            r[0]
            for r in con.execute(
                "select column_name from information_schema.columns "
                "where table_schema = 'staging' and table_name = ?",
                [TABLE],
            ).fetchall()
        }
        required = {
            "event_id",
            "source",
            "occurred_at",
            "ingested_at",
            "user_key",
            "account_key",
            "event_name",
            "url_path",
            "properties",
        }
        lo, hi = (
            "timestamptz '2000-01-01 00:00:00+00'",
            "getvariable('max_allowed_at')::timestamptz",
        )
        row_rules = {  # rule -> predicate of a failing row (the suite's row-level rules)
            "missing_key": "event_id is null",
            "missing_source": "source is null",
            "unknown_source": "source not in ('posthog', 'amplitude', 'mixpanel')",
            "missing_event_name": "event_name is null",
            "missing_user_key": "user_key is null",
            "missing_occurred_at": "occurred_at is null",
            "occurred_at_out_of_range": f"occurred_at < {lo} or occurred_at > {hi}",
        }
        counts = con.sql(
            "select count(*) as n, "
            + ", ".join(f"count(*) filter (where {p}) as {r}" for r, p in row_rules.items())
            + f", count(*) filter (where ingested_at < {lo} or ingested_at > {hi}) as ingested"
            + f", count(event_id) - count(distinct event_id) as duplicate_keys from {t}"
        ).fetchall()[0]
        n, *rule_counts, ingested_bad, dup_keys = counts
        quarantine = {}
        for (rule, pred), k in zip(row_rules.items(), rule_counts, strict=True):
            if k:
                keys = con.sql(f"select distinct event_id from {t} where {pred}").fetchall()
                quarantine[rule] = len(keys)
        failed = [r for r, k in zip(row_rules, rule_counts, strict=True) if k > 0.01 * n]
        if ingested_bad > 0.01 * n:
            failed.append("ingested_at")
        if dup_keys:
            con.sql(
                f"select event_id from {t} where event_id is not null group by all "
                "having count(*) > 1"
            ).fetchall()
            failed.append("unique event_id")
        fresh = con.sql(
            f"select max(occurred_at) from {t} where occurred_at <= {hi} "
            "having max(occurred_at) is null "
            "or max(occurred_at) < getvariable('reference_at')::timestamptz - interval 2 day"
        ).fetchall()
        volume = con.sql(
            "select count(*) filter (where n_baseline_days >= 2 and baseline_median >= 50 and "
            "n_rows < 0.5 * baseline_median), count(*) filter (where n_baseline_days >= 2 and "
            "baseline_median >= 50 and n_rows > 1.8 * baseline_median), count(*) filter (where "
            "n_rows >= 100 and n_duplicate_content > 0.2 * n_rows) from quality.volume_daily "
            "where table_name = 'staging.stg_usage_events'"
        ).fetchall()[0]
        if not required <= columns:
            failed.append("columns")
        if fresh:
            failed.append("freshness")
        failed += [name for name, k in zip(("low", "high", "dup"), volume, strict=True) if k]
    finally:
        con.close()
    check_s = time.perf_counter() - t0
    return {
        "volume_s": round(volume_s, 2),
        "validate_s": round(check_s, 2),
        "total_s": round(volume_s + check_s, 2),
        "failed": failed,
        "quarantine": quarantine,
    }


def _child(side: str, db_path: Path, memory_limit: str) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        side,
        "--db",
        str(db_path),
        "--memory-limit",
        memory_limit,
    ]
    proc = subprocess.run(
        ["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, cwd=ROOT, check=False
    )
    if proc.returncode != 0:
        print(proc.stdout, proc.stderr, sep="\n", file=sys.stderr)
        raise SystemExit(f"{side} child failed")
    result = json.loads(
        next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:]
    )
    rss_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)[1])
    result["peak_rss_mib"] = round(rss_kib / 1024)
    return result


def _median(results: list[dict]) -> dict:
    """The run with the median total; peak RSS is the highest of all runs."""
    ordered = sorted(results, key=lambda r: r["total_s"])
    return {
        **ordered[len(ordered) // 2],
        "peak_rss_mib": max(r["peak_rss_mib"] for r in results),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--memory-limit", default="1GB", help="DuckDB memory_limit (default 1GB)")
    p.add_argument("--rebuild", action="store_true", help="regenerate the table")
    p.add_argument("--repeat", type=int, default=3, help="runs per side (median reported)")
    p.add_argument("--child", choices=("gx", "sql"), help=argparse.SUPPRESS)
    p.add_argument("--db", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.child:
        fn = run_gx if args.child == "gx" else run_sql
        print("RESULT " + json.dumps(fn(Path(args.db), args.memory_limit)))
        return 0

    OUT.mkdir(parents=True, exist_ok=True)
    db_path = OUT / f"bench-validate-{args.rows}.duckdb"
    if args.rebuild or not db_path.exists():
        print(f"building {args.rows:,} events in {db_path} (not timed) …", flush=True)
        t0 = time.perf_counter()
        build(db_path, args.rows)
        print(f"  built in {time.perf_counter() - t0:.1f}s", flush=True)
    import duckdb

    con = duckdb.connect(str(db_path), read_only=True)
    n = con.sql(f"select count(*) from staging.{TABLE}").fetchall()[0][0]
    con.close()
    with db_path.open("rb") as f:  # warm the page cache, so neither side pays the first read
        while f.read(1 << 24):
            pass
    runs: dict[str, list[dict]] = {"sql": [], "gx": []}
    for _ in range(args.repeat):  # alternating, so neither side gets the quieter machine
        for side in ("sql", "gx"):
            runs[side].append(_child(side, db_path, args.memory_limit))
    sql, gx = _median(runs["sql"]), _median(runs["gx"])
    ratio = gx["total_s"] / sql["total_s"]
    print(
        f"\nrows: {n:,}   DuckDB memory_limit: {args.memory_limit}   runs per side: {args.repeat}"
    )
    print(
        "totals per run (s): "
        + "; ".join(f"{side} {[r['total_s'] for r in rs]}" for side, rs in runs.items())
    )
    print(
        "| side (median run) | volume relation s | checks s | total s | peak RSS MiB "
        "| failed rules |"
    )
    print("|---|---:|---:|---:|---:|---|")
    for name, r in (("Great Expectations", gx), ("plain DuckDB SQL", sql)):
        print(
            f"| {name} | {r['volume_s']} | {r['validate_s']} | {r['total_s']} "
            f"| {r['peak_rss_mib']} | {', '.join(r['failed']) or '-'} |"
        )
    print(f"GX import (once per process, not in the totals): {gx['import_s']}s")
    print(f"quarantine keys: GX {gx['quarantine']} / SQL {sql['quarantine']}")
    rss_gib = max(gx["peak_rss_mib"], sql["peak_rss_mib"]) / 1024
    ok_ratio, ok_rss = ratio <= TARGET_RATIO, rss_gib <= TARGET_RSS_GIB
    print(
        f"GX / SQL = {ratio:.2f}x (target <= {TARGET_RATIO}x: {'OK' if ok_ratio else 'MISSED'}); "
        f"peak RSS {rss_gib:.2f} GiB (target <= {TARGET_RSS_GIB} GiB: "
        f"{'OK' if ok_rss else 'MISSED'})"
    )
    same = gx["quarantine"] == sql["quarantine"]
    print(f"same quarantine from both sides: {'yes' if same else 'NO'}")
    return 0 if ok_ratio and ok_rss and same else 1


if __name__ == "__main__":
    raise SystemExit(main())
