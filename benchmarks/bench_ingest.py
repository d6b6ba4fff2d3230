"""Ingest benchmark (issue 3): PostHog events from export files and from the HogQL API to staging.

    python benchmarks/bench_ingest.py                      # 10M file events, 1M HTTP events
    python benchmarks/bench_ingest.py --events 1000000 --http-events 200000

Generates the demo PostHog export once (tasks.demo_data, cached under benchmarks/out/, not timed),
then measures, each in its own child process under GNU `/usr/bin/time -v`:

  a. floor: DuckDB's bare `read_json` (explicit columns, newline_delimited) into a fresh file;
  b. file:  `load.load_source(POSTHOG_EVENTS)` + `transform.build_staging` into a fresh warehouse;
  c. http:  the real `PostHogConnector` + `load.load_pages` + `build_staging`, against a local
            HogQL server (127.0.0.1, its own process) serving pages serialised before timing.

`seconds` is the work inside the child (connect .. staging built .. connection closed; the check
that counts the staged events is left out); `wall` is the whole child process as `time -v` saw it
(Python start-up and imports included). Targets (issue 12): (b) >= 65%
of (a) rows/s with peak RSS <= 1.5 GiB at 10M events; (c) >= 30% of (a) rows/s at 1M events —
both as ratios to the floor measured in the same run, since the machine's speed varies.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "out"

FILE_TARGET_RATIO = 0.65
FILE_TARGET_RSS_MIB = 1.5 * 1024
FILE_TARGET_EVENTS = 10_000_000
HTTP_TARGET_RATIO = 0.30
HTTP_TARGET_EVENTS = 1_000_000
API_KEY = "phx_bench_key"
# The export's top-level fields with the loader's types (tasks.contracts.POSTHOG_EVENTS.fields).
FLOOR_COLUMNS = (
    "{'uuid': 'VARCHAR', 'event': 'VARCHAR', 'distinct_id': 'VARCHAR', "
    "'timestamp': 'JSON', 'properties': 'JSON'}"
)


# ---------------------------------------------------------------------------------------------
# Data


def demo_data(events: int) -> Path:
    """The demo export for `events` events (generated once, cached); returns its posthog dir."""
    from tasks.demo_data import DemoConfig, generate_demo_data

    data = OUT / f"demo-{events}"
    if not (data / "_manifest.json").exists():
        print(f"generating {events:,} events into {data} (not timed) …", flush=True)
        t0 = time.perf_counter()
        generate_demo_data(DemoConfig(out_dir=data, end_date=date(2026, 11, 24), events=events))
        print(f"  generated in {time.perf_counter() - t0:.1f}s", flush=True)
    return data / "posthog"


def _sql_list(paths: list[Path]) -> str:
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


# ---------------------------------------------------------------------------------------------
# Children (each runs under /usr/bin/time -v and prints one RESULT line)


def child_floor(data: Path, db_path: Path, memory_limit: str) -> dict[str, Any]:
    import duckdb

    files = sorted(data.glob("*.jsonl"))
    t0 = time.perf_counter()
    con = duckdb.connect(str(db_path), config={"memory_limit": memory_limit})
    con.execute(f"""
        create table events as
        select * from read_json({_sql_list(files)}, format = 'newline_delimited',
                                ignore_errors = true, columns = {FLOOR_COLUMNS})
    """)
    rows = con.sql("select count(*) from events").fetchall()[0][0]
    con.close()
    return {"rows": rows, "seconds": time.perf_counter() - t0}


def _staged_events(con) -> tuple[int, float]:
    """(rows of the usage union, seconds the count took). The nightly's build_staging does not
    count it (a view over every event); the benchmark does, to check nothing was lost, and
    leaves the count's seconds out of the timed work (the connection's close stays in it, as
    in the floor)."""
    t = time.perf_counter()
    n = con.sql("select count(*) from staging.stg_usage_events__unvalidated").fetchall()[0][0]
    return n, time.perf_counter() - t


def child_file(data: Path, db_path: Path, memory_limit: str) -> dict[str, Any]:
    from tasks import contracts, db, load, transform

    t0 = time.perf_counter()
    with db.warehouse(db_path, memory_limit=memory_limit) as con:
        db.ensure_schema(con)
        stats = load.load_source(con, contracts.POSTHOG_EVENTS, str(data / "*.jsonl"), "bench")
        t1 = time.perf_counter()
        transform.build_staging(con, "bench-salt")
        t2 = time.perf_counter()
        staged, check_s = _staged_events(con)  # a check, not timed
    return {
        "rows": stats.records_read,
        "seconds": time.perf_counter() - t0 - check_s,
        "load_s": t1 - t0,
        "staging_s": t2 - t1,
        "landed": stats.n_landed,
        "quarantined": stats.n_quarantined,
        "staging_rows": staged,
    }


def child_http(
    url: str,
    db_path: Path,
    memory_limit: str,
    start: str,
    end: str,
    page_size: int,
    batch_bytes: int | None,
) -> dict[str, Any]:
    from tasks import db, load, transform
    from tasks.clients.http import RequestBudget
    from tasks.clients.posthog import PostHogConnector, PostHogSettings

    os.environ["BENCH_POSTHOG_KEY"] = API_KEY
    settings = PostHogSettings(
        base_url=url,
        project_id="1",
        start_date=date.fromisoformat(start[:10]),
        page_size=page_size,
        api_key_env="BENCH_POSTHOG_KEY",
    )
    # The real per-key limit (120 queries/h) would make the benchmark measure the sleep.
    connector = PostHogConnector(settings, budget=RequestBudget(1_000_000, 3600.0))
    landing = db_path.with_suffix(".landing")
    shutil.rmtree(landing, ignore_errors=True)
    t0 = time.perf_counter()
    with db.warehouse(db_path, memory_limit=memory_limit) as con:
        db.ensure_schema(con)
        state = load.read_state(con, connector.source, connector.stream)
        stats = load.load_pages(
            con,
            connector.spec,
            connector.pages(state, datetime.fromisoformat(end)),
            "bench",
            landing,
            **({"batch_bytes": batch_bytes} if batch_bytes else {}),
        )
        t1 = time.perf_counter()
        transform.build_staging(con, "bench-salt")
        t2 = time.perf_counter()
        staged, check_s = _staged_events(con)  # a check, not timed
    t3 = time.perf_counter()
    shutil.rmtree(landing, ignore_errors=True)
    return {
        "rows": stats.records_read,
        "seconds": t3 - t0 - check_s,
        "load_s": t1 - t0,
        "staging_s": t2 - t1,
        "pages": stats.files_seen,
        "landed": stats.n_landed,
        "quarantined": stats.n_quarantined,
        "staging_rows": staged,
    }


# ---------------------------------------------------------------------------------------------
# HogQL server (its own process): pages serialised up front, answered by their query bounds

_COLUMNS = ["uuid", "event", "distinct_id", "timestamp", "properties"]
_TYPES = ["UUID", "String", "String", "DateTime64(6, 'UTC')", "String"]
_TS = r"toDateTime64\('([^']+)', 6, 'UTC'\)"
_LO = re.compile(rf"timestamp >= {_TS}")
_HI = re.compile(rf"timestamp < {_TS}")
_AFTER = re.compile(r"uuid > toUUID\('([0-9a-f-]+)'\)")
_AFTER_TS = re.compile(rf"\(timestamp > {_TS} or")
_LIMIT = re.compile(r" limit (\d+)$")


def _hogql_ts(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _ts_us(text: str) -> int:
    dt = datetime.fromisoformat(text).replace(tzinfo=UTC)
    return int(dt.timestamp()) * 1_000_000 + dt.microsecond


class HogQLPages:
    """The first M events of the export in (timestamp, uuid) order, as HogQL result rows."""

    def __init__(self, data: Path, n_events: int) -> None:
        import duckdb

        files, n = [], 0
        for f in sorted(data.glob("*.jsonl")):
            files.append(f)
            n += f.read_bytes().count(b"\n")
            if n >= n_events:
                break
        con = duckdb.connect()
        # HogQL answers arrays in column order with `properties` as a JSON string; PostHog
        # never returns a row without uuid/timestamp, so the export's planted bad lines are left
        # out.
        rows = con.sql(f"""
            with ev as (
                select uuid, event, distinct_id, "timestamp" as ts, properties,
                       try_cast("timestamp" as timestamptz) as t
                from read_json({_sql_list(files)}, format = 'newline_delimited',
                               ignore_errors = true,
                               columns = {{'uuid': 'VARCHAR', 'event': 'VARCHAR',
                                          'distinct_id': 'VARCHAR', 'timestamp': 'VARCHAR',
                                          'properties': 'JSON'}})
                where uuid is not null and properties is not null
            )
            select epoch_us(t), uuid,
                   json_array(uuid, event, distinct_id, ts, properties::varchar)::varchar
            from ev where t is not null
            qualify row_number() over (partition by uuid order by t) = 1
            order by t, uuid
            limit {int(n_events)}
        """).fetchall()
        con.close()
        self.keys = [(r[0], r[1]) for r in rows]
        self.rows = [r[2].encode() for r in rows]
        self.pages: dict[tuple[str, str | None, int], bytes] = {}
        self.hits = self.misses = 0

    @property
    def first(self) -> datetime:
        return datetime.fromtimestamp(self.keys[0][0] / 1e6, UTC)

    @property
    def end(self) -> datetime:
        """Window end just past the last event."""
        return datetime.fromtimestamp(self.keys[-1][0] / 1e6, UTC) + timedelta(microseconds=1)

    def body(self, lo: int, hi: int, n: int, query: str) -> bytes:
        """The response to a query for rows [lo, hi) of the key order, at most n."""
        rows = self.rows[lo : min(hi, lo + n)]
        head = {
            "cache_key": None,
            "clickhouse": "SELECT ... (omitted by the benchmark server)",
            "columns": _COLUMNS,
            "types": _TYPES,
            "hasMore": hi - lo > n,
            "hogql": query,
            "limit": n,
            "offset": 0,
        }
        return (
            json.dumps(head)[:-1].encode()
            + b', "results": ['
            + b",".join(rows)
            + b'], "timings": []}'
        )

    def answer(self, query: str) -> bytes | None:
        lo_m, hi_m, lim = _LO.search(query), _HI.search(query), _LIMIT.search(query)
        if not (lo_m and hi_m and lim):
            return None
        after = _AFTER.search(query)
        key = (hi_m[1], after[1] if after else None, int(lim[1]))
        page = self.pages.get(key)
        if page is not None:
            self.hits += 1
            return page
        self.misses += 1
        lo_k = (_ts_us(lo_m[1]), "")
        if after:
            lo_k = (_ts_us(_AFTER_TS.search(query)[1]), after[1] + "\x00")
        lo = bisect.bisect_left(self.keys, lo_k)
        hi = bisect.bisect_left(self.keys, (_ts_us(hi_m[1]), ""))
        return self.body(lo, hi, int(lim[1]), query)

    def prepare(self, start: datetime, end: datetime, slice_hours: int, page_size: int) -> int:
        """Serialise every page the connector will ask for (its slices and keyset pages)."""
        lo_t = start
        while lo_t < end:
            hi_t = min(lo_t + timedelta(hours=slice_hours), end)
            hi_s = _hogql_ts(hi_t)
            lo = bisect.bisect_left(self.keys, (_ts_us(_hogql_ts(lo_t)), ""))
            hi = bisect.bisect_left(self.keys, (_ts_us(hi_s), ""))
            after = None
            while True:
                self.pages[(hi_s, after, page_size)] = self.body(lo, hi, page_size, "")
                if hi - lo <= page_size:
                    break
                lo += page_size
                after = self.keys[lo - 1][1]
            lo_t = hi_t
        return len(self.pages)


def serve(data: Path, n_events: int, page_size: int) -> None:
    """Run the HogQL server; prints `READY <port> <start> <end>` once the pages are built."""
    pages = HogQLPages(data, n_events)
    start = pages.first.replace(hour=0, minute=0, second=0, microsecond=0)
    n_pages = pages.prepare(start, pages.end, 24, page_size)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_: Any) -> None:
            pass

        def _send(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/stats":
                self._send(200, json.dumps({"hits": pages.hits, "misses": pages.misses}).encode())
            else:
                self._send(200, b'{"id": 1, "name": "Bench", "timezone": "UTC"}')

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.headers.get("Authorization") != f"Bearer {API_KEY}":
                self._send(401, b'{"type": "authentication_error"}')
                return
            page = pages.answer(json.loads(body)["query"]["query"])
            if page is None:
                self._send(400, b'{"type": "validation_error", "detail": "unknown query"}')
            else:
                self._send(200, page)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    print(
        f"READY {srv.server_address[1]} {start.isoformat()} {pages.end.isoformat()} "
        f"{len(pages.rows)} {n_pages}",
        flush=True,
    )
    # Stop when the parent closes our stdin (or dies).
    threading.Thread(target=lambda: (sys.stdin.read(), srv.shutdown()), daemon=True).start()
    srv.serve_forever()


# ---------------------------------------------------------------------------------------------
# Parent


def run_child(args: list[str]) -> dict[str, Any]:
    gnu_time = "/usr/bin/time" if os.path.exists("/usr/bin/time") else shutil.which("time")
    cmd = [gnu_time, "-v", sys.executable, __file__, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or "RESULT " not in proc.stdout:
        raise RuntimeError(f"child {args[:2]} failed:\n{proc.stdout}\n{proc.stderr}")
    result = json.loads(proc.stdout.split("RESULT ", 1)[1])
    wall = re.search(r"Elapsed \(wall clock\) time.*: (.+)", proc.stderr)[1].strip()
    parts = [float(x) for x in wall.split(":")]
    result["wall"] = sum(p * 60**i for i, p in enumerate(reversed(parts)))
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)[1]
    result["rss_mib"] = int(rss) / 1024
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--events", type=int, default=10_000_000, help="file events (default 10M)")
    p.add_argument("--http-events", type=int, default=1_000_000, help="HTTP events (default 1M)")
    p.add_argument(
        "--memory-limit",
        default="768MB",
        help="DuckDB memory_limit (default 768MB, the nightly default)",
    )
    p.add_argument("--page-size", type=int, default=50_000, help="HogQL page size (max 50k)")
    p.add_argument(
        "--batch-bytes", type=int, help="load_pages batch_bytes (default: load_pages' own)"
    )
    p.add_argument("--only", default="floor,file,http", help="comma list of floor,file,http")
    p.add_argument(
        "--repeat", type=int, default=1, help="runs per measurement (interleaved); best is shown"
    )
    p.add_argument("--keep", action="store_true", help="keep the DuckDB files")
    p.add_argument("--child", choices=["floor", "file", "http"], help=argparse.SUPPRESS)
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--db", help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--start", help=argparse.SUPPRESS)
    p.add_argument("--end", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.serve:
        serve(Path(args.data), args.http_events, args.page_size)
        return 0
    if args.child:
        db_path = Path(args.db)
        for f in (db_path, db_path.with_name(db_path.name + ".wal")):
            f.unlink(missing_ok=True)
        if args.child == "floor":
            result = child_floor(Path(args.data), db_path, args.memory_limit)
        elif args.child == "file":
            result = child_file(Path(args.data), db_path, args.memory_limit)
        else:
            result = child_http(
                args.url,
                db_path,
                args.memory_limit,
                args.start,
                args.end,
                args.page_size,
                args.batch_bytes,
            )
        print("RESULT " + json.dumps(result))
        return 0

    only = set(args.only.split(","))
    OUT.mkdir(parents=True, exist_ok=True)
    data = demo_data(args.events)
    common = ["--memory-limit", args.memory_limit]
    runs: dict[str, list[dict[str, Any]]] = {}
    dbs: list[Path] = []
    server = None
    http_info = ""
    try:
        http_args: list[str] = []
        if "http" in only:
            src = demo_data(max(args.events, args.http_events))
            print(
                f"serialising {args.http_events:,} events as HogQL pages (not timed) …", flush=True
            )
            server = subprocess.Popen(
                [
                    *(sys.executable, __file__, "--serve", "--data", str(src)),
                    *("--http-events", str(args.http_events), "--page-size", str(args.page_size)),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            line = server.stdout.readline().split()
            if not line or line[0] != "READY":
                raise RuntimeError("benchmark server did not start")
            port, start, end, n_rows, n_pages = line[1:6]
            url = f"http://127.0.0.1:{port}"
            http_info = f"server: {n_rows} events in {n_pages} pre-serialised pages"
            db = OUT / f"ingest-http-{args.http_events}.duckdb"
            http_args = [
                *("--child", "http", "--db", str(db), "--url", url, "--start", start),
                *("--end", end, "--page-size", str(args.page_size)),
                *(("--batch-bytes", str(args.batch_bytes)) if args.batch_bytes else ()),
                *common,
            ]
        # Interleaved, so a burst of load from other processes hits all measurements alike.
        for r in range(args.repeat):
            for name in ("floor", "file", "http"):
                if name not in only:
                    continue
                if name == "http":
                    child = http_args
                    dbs.append(OUT / f"ingest-http-{args.http_events}.duckdb")
                else:
                    db = OUT / f"ingest-{name}-{args.events}.duckdb"
                    dbs.append(db)
                    child = ["--child", name, "--data", str(data), "--db", str(db), *common]
                n = args.http_events if name == "http" else args.events
                print(f"measuring {name} ({n:,} events), run {r + 1}/{args.repeat} …", flush=True)
                runs.setdefault(name, []).append(run_child(child))
        if server is not None:
            import urllib.request

            with urllib.request.urlopen(url + "/stats", timeout=10) as resp:
                st = json.loads(resp.read())
            http_info += f"; {st['hits']} served as prepared, {st['misses']} built on request"
    finally:
        if server is not None:
            server.stdin.close()
            server.wait(timeout=30)
        if not args.keep:
            for db in set(dbs):
                for f in (db, db.with_name(db.name + ".wal")):
                    f.unlink(missing_ok=True)
    report(args, runs, http_info)
    return 0


def report(args: argparse.Namespace, runs: dict[str, list[dict[str, Any]]], http_info: str) -> None:
    labels = {
        "floor": "a. floor: DuckDB read_json -> table",
        "file": "b. file: load_source + build_staging",
        "http": "c. http: PostHogConnector + load_pages + staging",
    }
    results = {}
    for name, rs in runs.items():
        best = min(rs, key=lambda r: r["seconds"])
        results[name] = best | {
            "rate": best["rows"] / best["seconds"],
            "rss_mib": max(r["rss_mib"] for r in rs),  # the worst run counts for memory
            "all": [round(r["seconds"], 2) for r in rs],
        }
    print()
    head = f"{'measurement':<50} {'rows':>12} {'seconds':>8} {'rows/s':>11} {'wall s':>7}"
    print(f"{head} {'peak RSS MiB':>13}")
    for name, r in results.items():
        print(
            f"{labels[name]:<50} {r['rows']:>12,} {r['seconds']:>8.2f} {r['rate']:>11,.0f} "
            f"{r['wall']:>7.2f} {r['rss_mib']:>13,.0f}"
        )
    for name in ("file", "http"):
        r = results.get(name)
        if r:
            pages = f", {r['pages']} pages" if "pages" in r else ""
            print(
                f"  {name}: load {r['load_s']:.2f} s, staging {r['staging_s']:.2f} s, "
                f"landed {r['landed']:,}, quarantined {r['quarantined']:,}, "
                f"staging rows {r['staging_rows']:,}{pages}"
            )
    if http_info:
        print(f"  {http_info}")
    if args.repeat > 1:
        for name, r in results.items():
            print(f"  {name}: seconds of each run {r['all']} (best shown; RSS = the highest)")
    print(
        f"  memory_limit {args.memory_limit}; seconds = the work inside the child process, "
        "wall s = the whole child (Python start-up and imports included)"
    )
    print()
    if "floor" in results and "file" in results:
        ratio = results["file"]["rate"] / results["floor"]["rate"]
        rss = results["file"]["rss_mib"]
        ok = ratio >= FILE_TARGET_RATIO and rss <= FILE_TARGET_RSS_MIB
        note = "" if args.events == FILE_TARGET_EVENTS else " (the target is set at 10M events)"
        print(
            f"target b: file ingest at {ratio:.0%} of the floor's rows/s "
            f"(>= {FILE_TARGET_RATIO:.0%}), "
            f"peak RSS {rss:,.0f} MiB (<= 1,536)  -> {'PASS' if ok else 'MISS'}{note}"
        )
    if "http" in results:
        rate = results["http"]["rate"]
        note = "" if args.http_events == HTTP_TARGET_EVENTS else " (the target is set at 1M events)"
        if "floor" in results:
            ratio = rate / results["floor"]["rate"]
            ok = ratio >= HTTP_TARGET_RATIO
            print(
                f"target c: HTTP ingest {rate:,.0f} rows/s, {ratio:.0%} of the floor's rows/s "
                f"(>= {HTTP_TARGET_RATIO:.0%})  -> {'PASS' if ok else 'MISS'}{note}"
            )
        else:
            print(f"target c: HTTP ingest {rate:,.0f} rows/s (no floor measured: no ratio)")


if __name__ == "__main__":
    sys.exit(main())
