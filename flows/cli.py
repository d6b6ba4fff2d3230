"""`feedback-loop` command line: run the nightly flow, backfill past days, make demo data, serve
deployments, query, write the data dictionary."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from rich.markup import escape

import flows  # noqa: F401  (sets offline/telemetry defaults before Prefect is imported)
from tasks.settings import PROJECT_ROOT, ConfigError, Settings, load_settings

EXIT_OK = 0
EXIT_RUN_FAILED = 1
EXIT_USER_ERROR = 2
EXIT_DEGRADED = 3
RUN_EXIT_CODES = """exit codes:
  0  completed clean: every source loaded, no blocked suggestion, write-back ok (or dry run,
     or a backdated run that wrote nothing by design)
  1  the run failed (see the error line and the Prefect logs)
  2  settings error found before anything was loaded (one line on stderr)
  3  Degraded: the run completed and published its snapshot, but a source failed to load, a
     critical data-quality check blocked suggestions, or write-back was partial, uncertain or
     failed (the reasons are printed, and listed at the top of the run report)"""


class UserError(Exception):
    """A mistake the user can fix; printed as one line, no traceback."""


def _console():
    import shutil

    from rich.console import Console

    # Piped output (make, CI logs) would otherwise be squeezed into 80 columns.
    width = max(shutil.get_terminal_size((140, 40)).columns, 120)
    return Console(width=width), Console(stderr=True, width=width)


def _settings(args: argparse.Namespace) -> Settings:
    """Load the settings and run the checks that need no network or writes (the cross-field
    settings checks and the feature catalog); a ConfigError is one line, exit 2 (main)."""
    settings = load_settings(args.config)
    from tasks.preflight import check_catalog, check_settings

    check_settings(settings)
    check_catalog(settings)
    from tasks import rawstore

    rawstore.activate(settings)  # s3:// raw event store: registered on every connection
    return settings


def _one_line(text: str) -> str:
    """Error text on one line: a multi-line exception message must not become several lines."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _error_line(err, prefix: str, text: str, style: str = "red") -> None:
    """`prefix text` on stderr; `text` (exception/user content) is never read as rich markup
    (`[a-z]` would vanish) and never wrapped."""
    from rich.text import Text

    err.print(Text.assemble((prefix, style), " ", _one_line(text)), soft_wrap=True)


def _print_rows(console, rows: list[dict], title: str | None = None, max_width: int = 60) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, show_lines=False, header_style="bold")
    if not rows:
        console.print("(no rows)")
        return
    for col in rows[0]:
        # Text: cell values are data, never rich markup ("[a-z]" would disappear).
        table.add_column(Text(str(col)), overflow="fold", max_width=max_width)
    for row in rows:
        table.add_row(*[Text("" if v is None else str(v)) for v in row.values()])
    console.print(table)


# ---------------------------------------------------------------------------------------- run
def cmd_run(args: argparse.Namespace) -> int:
    out, err = _console()
    settings = _settings(args)
    _check_run_args(args)
    from tasks.preflight import preflight

    preflight(settings, sources=args.sources)
    from flows.nightly import nightly

    params = {
        "as_of": args.as_of,
        "window_days": args.window_days,
        "sources": args.sources,
        "dry_run": args.dry_run,
        "max_new_suggestions": args.max_new,
        "full_refresh": args.full_refresh,
        "allow_backdated_writeback": args.allow_backdated_writeback,
        "config_path": str(Path(args.config).resolve()) if args.config else None,
    }
    err.print(
        f"[bold]feedback-loop[/]: nightly run — warehouse {escape(str(settings.duckdb_path))}"
    )
    state = nightly(**params, return_state=True)
    summary = _finished(state, err, "run")
    if summary is None:
        return EXIT_RUN_FAILED
    _print_summary(out, err, summary, state.name, args.config)
    return _exit_code(state, summary, err)


def _finished(state, err, what: str) -> dict | None:
    """The summary of a flow run that finished — Degraded included, a FAILED-type state that
    still carries it — or None when it failed (the error printed as one line)."""
    if state.name != "Degraded" and (state.is_failed() or state.is_crashed()):
        try:
            state.result()
        except ConfigError as exc:
            raise UserError(str(exc)) from None
        except Exception as exc:  # the flow already logged the traceback
            _error_line(err, f"{what} failed:", f"{type(exc).__name__}: {exc}")
        return None
    return state.result(raise_on_failure=False)


def _exit_code(state, summary: dict, err) -> int:
    """EXIT_DEGRADED (each reason printed) for a Degraded run, else EXIT_OK."""
    reasons = summary.get("degraded_reasons") or []
    if state.name == "Degraded" or reasons:
        for reason in reasons:
            _error_line(err, "degraded:", reason, style="bold red")
        return EXIT_DEGRADED
    return EXIT_OK


def _check_run_args(args: argparse.Namespace) -> None:
    """The flow's parameter bounds, checked before the flow starts (one line, exit 2)."""
    if args.window_days is not None and not 7 <= args.window_days <= 120:
        raise UserError(f"--window-days: {args.window_days} is out of range; use 7 to 120")
    if args.max_new is not None and not 0 <= args.max_new <= 50:
        raise UserError(f"--max-new: {args.max_new} is out of range; use 0 to 50")
    if args.as_of is not None and args.as_of > datetime.now(UTC).date():
        raise UserError(
            f"--as-of: {args.as_of} is in the future; a run scores today or an earlier day"
        )


def _query_hint(sql: str, config: str | None) -> str:
    """A `feedback-loop query` command line that runs as printed (with this run's --config)."""
    import shlex

    where = f" --config {shlex.quote(str(Path(config).resolve()))}" if config else ""
    return f"query: feedback-loop query {shlex.quote(sql)}{where}"


def _print_summary(out, err, s: dict, state_name: str, config: str | None = None) -> None:
    verdict = s["dq_verdict"]
    colour = {"pass": "green", "warn": "yellow", "degraded": "red"}[verdict]
    err.print(
        f"run {s['run_id']} ({state_name}) as of {s['as_of']}: data quality "
        f"[{colour}]{verdict.upper()}[/]; "
        + ", ".join(f"{k} {v}s" for k, v in s["timings"].items())
    )
    for v in s["validation"]:
        err.print(
            f"  {v['table']}: {v['rows_in']:,} in = {v['rows_accepted']:,} accepted + "
            f"{v['rows_quarantined']:,} quarantined ({v['verdict']})"
        )
    if s.get("writeback"):
        from tasks.reporting import writeback_line

        _error_line(err, "  write-back:", writeback_line(s["writeback"]), style="")
    rows = [
        {
            "#": r["rank"],
            "suggestion": r["title"],
            "priority": f"{r['priority']:,}",
            "health": r["health"],
            "why": r["why"],
            "write-back": f"{r['action']}: {r['reason']}",
        }
        for r in s["suggestions"]
    ]
    backdated = (s.get("writeback") or {}).get("status") == "backdated"
    title = "Backlog suggestions" + (
        " (dry run: nothing written)"
        if s["dry_run"]
        else " (backdated run: nothing written)"
        if backdated
        else ""
    )
    _print_rows(out, rows, title=title, max_width=48)
    if not s["dry_run"] and not backdated:
        out.print(f"tracker: {s['tracker_dir']}")
    _print_report(out, s.get("report"))
    hint = _query_hint(
        "select feature_key, health_score, confidence from marts.latest_feature_health "
        "order by health_score",
        config,
    )
    out.print(f"{hint}  (snapshot {s['snapshot_path']})", markup=False, soft_wrap=True)


def _print_report(out, report: dict | None) -> None:
    if report and report.get("path"):
        out.print(f"report: {report['path']}", markup=False, soft_wrap=True)
    elif report and report.get("error"):
        out.print(f"report: not written: {_one_line(report['error'])}", markup=False)


# ----------------------------------------------------------------------------------- backfill
BACKFILL_EXIT_CODES = """exit codes:
  0  completed clean: every day scored, every source loaded, data quality not degraded
  1  the backfill failed (see the error line and the Prefect logs)
  2  argument or settings error found before anything was loaded (one line on stderr)
  3  Degraded: every day was scored and the snapshot published, but a source failed to load or
     a critical data-quality check failed (the reasons are printed)"""


def cmd_backfill(args: argparse.Namespace) -> int:
    out, err = _console()
    _check_backfill_args(args)
    settings = _settings(args)
    from flows.backfill import backfill, preflight_backfill

    preflight_backfill(settings, args.sources if args.load else [])
    params = {
        "start": args.start,
        "end": args.end,
        "window_days": args.window_days,
        "sources": args.sources,
        "load": args.load,
        "config_path": str(Path(args.config).resolve()) if args.config else None,
    }
    n_days = (args.end - args.start).days + 1
    err.print(
        f"[bold]feedback-loop[/]: backfill {args.start} to {args.end} ({n_days} day(s)) — "
        f"warehouse {escape(str(settings.duckdb_path))}; nothing is written to the tracker"
    )
    state = backfill(**params, return_state=True)
    s = _finished(state, err, "backfill")
    if s is None:
        return EXIT_RUN_FAILED
    rows = [
        {
            "as_of": r["as_of"],
            "features": r["features"],
            "with data": r["features_with_data"],
            "suggestions": r["suggestions"],
            "data quality": r["dq_verdict"],
            "seconds": r["seconds"],
            "note": r["note"],
        }
        for r in s["days"]
    ]
    _print_rows(out, rows, title=f"Backfill {s['run_id']} ({state.name}): nothing written back")
    _print_report(out, s.get("report"))
    hint = _query_hint(
        "select as_of_date, feature_key, health_score from marts.feature_health where "
        f"as_of_date between '{s['start']}' and '{s['end']}' order by feature_key, as_of_date",
        args.config,
    )
    out.print(f"{hint}  (snapshot {s['snapshot_path']})", markup=False, soft_wrap=True)
    return _exit_code(state, s, err)


def _check_backfill_args(args: argparse.Namespace) -> None:
    """The range and the flow's parameter bounds, checked before anything starts (exit 2)."""
    from tasks.history import day_range

    try:
        day_range(args.start, args.end)
    except ValueError as exc:
        raise UserError(f"--from/--to: {exc}") from None
    if args.window_days is not None and not 7 <= args.window_days <= 120:
        raise UserError(f"--window-days: {args.window_days} is out of range; use 7 to 120")


# ---------------------------------------------------------------------------------- demo-data
def cmd_demo_data(args: argparse.Namespace) -> int:
    _, err = _console()
    settings = _settings(args)
    from tasks.demo_data import DemoConfig, append_day, generate_demo_data

    out_dir = Path(args.out).resolve() if args.out else settings.demo.out_dir
    if args.append_day:
        given = [f for f in ("events", "users", "days", "end_date") if getattr(args, f)]
        if given:
            flags = ", ".join("--" + f.replace("_", "-") for f in given)
            raise UserError(f"--append-day takes the data set's own parameters; drop {flags}")
        started = time.perf_counter()
        try:
            day = append_day(
                out_dir, args.append_day, progress=lambda m: err.print(f"  {m}", markup=False)
            )
        except (FileNotFoundError, FileExistsError, ValueError) as exc:
            raise UserError(f"--append-day: {exc}") from None
        err.print(
            f"appended {day['day']} to {out_dir} ({time.perf_counter() - started:.1f}s): "
            + json.dumps(day["rows"]),
            markup=False,
        )
        return 0
    end = args.end_date or (datetime.now(UTC).date() - timedelta(days=1))
    cfg = DemoConfig(
        out_dir=out_dir,
        end_date=end,
        days=args.days or settings.demo.days,
        users=args.users or settings.demo.users,
        accounts=settings.demo.accounts,
        events=args.events or settings.demo.events,
        seed=args.seed,
    )
    started = time.perf_counter()
    manifest = generate_demo_data(cfg, progress=lambda m: err.print(f"  {m}", markup=False))
    err.print(
        f"demo data in {out_dir} ({time.perf_counter() - started:.1f}s): "
        + json.dumps(manifest.get("row_counts", {})),
        markup=False,
    )
    return 0


# ------------------------------------------------------------------------------------- report
def cmd_report(args: argparse.Namespace) -> int:
    out, err = _console()
    settings = _settings(args)
    from tasks import html_report

    if args.fill_history:
        missing = _unscored_days(settings, args.as_of, args.days)
        if missing:
            err.print(
                f"[bold]feedback-loop[/]: scoring {len(missing)} missing day(s) of the report's "
                f"{args.days}-day window first ({missing[0]} to {missing[-1]}, --no-load)"
            )
            fill = argparse.Namespace(
                config=args.config,
                start=missing[0],
                end=missing[-1],
                window_days=None,
                sources=["usage", "tickets", "bugs"],  # not pulled: load=False
                load=False,
            )
            code = cmd_backfill(fill)
            if code not in (EXIT_OK, EXIT_DEGRADED):
                return code
    con, path = _read_connection(settings, args.live)
    try:
        as_of = args.as_of or (html_report.scored_days(con) or [None])[-1]
        if as_of is None:
            raise UserError(f"no scored day in {path}: run `feedback-loop run` first")
        try:
            rep = html_report.write_report(
                con, as_of, Path(args.out) if args.out else settings.reports_dir, args.days
            )
        except LookupError as exc:
            raise UserError(str(exc)) from None
    finally:
        con.close()
    err.print(
        f"report for {as_of}: {rep.n_features} features, {rep.n_charts} charts, "
        f"{rep.health_days} of {args.days} days scored, {rep.size_bytes / 1024:,.0f} KiB, "
        f"{rep.seconds}s (from {escape(str(path))})"
    )
    if rep.health_days < args.days and not args.fill_history:
        err.print(
            "  health history is short: `feedback-loop report --fill-history` scores the "
            "missing days first (nothing is written to the tracker)",
            markup=False,
        )
    out.print(str(rep.path), markup=False, soft_wrap=True)
    if rep.latest:
        out.print(str(rep.latest), markup=False, soft_wrap=True)
    return EXIT_OK


def _unscored_days(settings: Settings, as_of: date | None, days: int) -> list[date]:
    """Days of the report window with data but no scores, where a full scoring window of data
    lies behind them (earlier days would score a feature on a partial window)."""
    from tasks import html_report

    con, _ = _read_connection(settings, live=False)
    try:
        first, last = con.sql("select min(day), max(day) from marts.feature_daily").fetchall()[0]
        window = settings.window_days
        scored = set(html_report.scored_days(con))
    finally:
        con.close()
    if first is None:
        raise UserError("no usage data in the warehouse yet: run `feedback-loop run` first")
    end = as_of or last
    start = max(end - timedelta(days=days - 1), first + timedelta(days=window - 1))
    return [
        start + timedelta(days=i)
        for i in range((end - start).days + 1)
        if start + timedelta(days=i) not in scored
    ]


def _read_path(settings: Settings, live: bool, db: str | None = None) -> Path:
    """The database a reading command opens: --db, else the analyst snapshot unless --live (or
    it does not exist yet), else the warehouse; one line and exit 2 when there is none."""
    if db:
        path = Path(db)
    elif not live and settings.snapshot_path.exists():
        path = settings.snapshot_path
    else:
        path = settings.duckdb_path
    if not path.exists():
        raise UserError(f"no warehouse at {path}: run `feedback-loop run` first")
    return path


def _read_connection(
    settings: Settings, live: bool, db: str | None = None, lock_timeout: float | None = None
):
    """A read-only connection to the analyst snapshot (default, never blocks the nightly run) or
    the live warehouse, with the path it opened."""
    from tasks.db import connect

    path = _read_path(settings, live, db)
    return connect(path, read_only=True, lock_timeout_s=lock_timeout), path


# -------------------------------------------------------------------------------------- query
def cmd_query(args: argparse.Namespace) -> int:
    out, err = _console()
    settings = _settings(args)
    import duckdb

    con, path = _read_connection(settings, args.live, args.db, args.lock_timeout)
    try:
        rel = con.execute(args.sql)
        if rel.description is None:
            return 0
        cols = [d[0] for d in rel.description]
        rows = rel.fetchmany(args.limit + 1)
    except duckdb.Error as exc:
        raise UserError(f"query failed: {str(exc).splitlines()[0]}") from None
    finally:
        con.close()
    truncated = len(rows) > args.limit
    rows = rows[: args.limit]
    if args.format == "csv":
        import csv

        w = csv.writer(sys.stdout)
        w.writerow(cols)
        w.writerows(rows)
    elif args.format == "json":
        print(json.dumps([dict(zip(cols, r, strict=True)) for r in rows], default=str, indent=1))  # noqa: T201
    elif args.format == "markdown":
        print(markdown_table(cols, rows))  # noqa: T201
    else:
        import shutil

        width = shutil.get_terminal_size((80, 24)).columns
        print(text_table(cols, rows, width), end="")  # noqa: T201
    if truncated:
        err.print(f"(first {args.limit} rows; raise --limit for more)")
    err.print(f"[dim]{escape(str(path))}[/]")
    return 0


# --------------------------------------------------------------------------------------- docs
def cmd_docs(args: argparse.Namespace) -> int:
    _, err = _console()
    settings = _settings(args)
    from tasks.datadocs import write_dictionary

    path = _read_path(settings, args.live, args.db)
    out_dir = Path(args.out) if args.out else settings.duckdb_path.parent / "docs"
    result = write_dictionary(path, out_dir, lock_timeout_s=args.lock_timeout)
    err.print(
        f"data dictionary of {path}: {result['relations']} relations, {result['columns']} "
        f"columns, {result['uncommented_columns']} columns without a comment -> "
        f"{result['markdown']} and {result['html']}",
        markup=False,
        soft_wrap=True,
    )
    return 0


CELL_MAX = 40  # characters of a value shown in a table cell (the rest becomes …)


def _cell(value, limit: int) -> str:
    text = "" if value is None else " ".join(str(value).split())
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def text_table(cols: list[str], rows: list[tuple], width: int) -> str:
    """Rows as aligned columns when they fit in `width` characters (values cut at CELL_MAX),
    else one record per block (`column | value`, values cut to the width), like psql's
    expanded mode: readable in an 80-column terminal either way."""
    cells = [[_cell(v, CELL_MAX) for v in r] for r in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(cols)]
    if sum(widths) + 2 * (len(cols) - 1) <= width:
        lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip()]
        lines.append("  ".join("-" * w for w in widths))
        lines += [
            "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells
        ]
        return "\n".join(lines) + "\n"
    name_w = max(len(c) for c in cols)
    value_w = max(width - name_w - 3, 10)
    out = []
    for n, r in enumerate(rows, start=1):
        out.append(f"-[ record {n} ]".ljust(min(width, name_w + 3 + value_w), "-"))
        out += [f"{c.ljust(name_w)} | {_cell(v, value_w)}" for c, v in zip(cols, r, strict=True)]
    return "\n".join(out) + "\n" if out else "(no rows)\n"


def markdown_table(cols: list[str], rows: list[tuple]) -> str:
    """A GitHub-flavoured Markdown table (pipes escaped, line breaks folded)."""

    def md(v) -> str:
        return _cell(v, 10**9).replace("|", "\\|")

    lines = ["| " + " | ".join(md(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(md(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- doctor
_DOCTOR_STYLES = {
    "ok": "green",
    "bad credentials": "bold red",
    "unreachable": "yellow",
    "misconfigured": "bold red",
}


def cmd_doctor(args: argparse.Namespace) -> int:
    import logging

    from rich.text import Text

    from tasks.doctor import format_lines, run_checks

    out, err = _console()
    settings = _settings(args)
    where = args.config or os.environ.get("FEEDBACK_LOOP_CONFIG") or "the embedded demo defaults"
    err.print(
        f"[bold]feedback-loop doctor[/]: checking the sources configured in {escape(str(where))}"
    )
    # Retry warnings would only repeat what the report says, one line per source.
    quiet = logging.getLogger("tasks")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        checks = run_checks(settings)
    finally:
        quiet.setLevel(level)
    offset = max(len(c.name) for c in checks) + 2
    for check, line in zip(checks, format_lines(checks), strict=True):
        text = Text(line)
        text.stylize(_DOCTOR_STYLES.get(check.status, ""), offset, offset + len(check.status))
        out.print(text, soft_wrap=True)
    bad = [c for c in checks if not c.ok]
    if bad:
        err.print(f"{len(bad)} of {len(checks)} source(s) need attention")
        return 1
    err.print(f"all {len(checks)} source(s) ok")
    return 0


# ----------------------------------------------------------------------------------- evaluate
def cmd_evaluate(args: argparse.Namespace) -> int:
    """Planted-scenario suite: generate worlds, replay 14 nights each, score, check targets."""
    out, err = _console()
    from tasks.evaluation.suite import REPORT, markdown_table, run_suite, summary_rows
    from tasks.evaluation.worlds import WORLDS

    names = [n.strip() for n in args.worlds.split(",") if n.strip()] if args.worlds else []
    names = names or list(WORLDS)
    unknown = [n for n in names if n not in WORLDS]
    if unknown:
        raise UserError(f"unknown world(s): {', '.join(unknown)}; known: {', '.join(WORLDS)}")
    if args.users < 500:
        raise UserError("--users must be at least 500")
    out_dir = Path(args.out).resolve()
    err.print(
        f"[bold]feedback-loop evaluate[/]: {len(names)} world(s), {args.users:,} users each, "
        f"{args.jobs} process(es), Great Expectations {'OFF' if args.no_validate else 'on'} "
        f"-> {escape(str(out_dir))}"
    )
    started = time.perf_counter()

    def done(result: dict) -> None:
        s = result["score"]
        verdict = "[green]PASS[/]" if s["ok"] else "[red]FAIL[/]"
        err.print(f"{escape(result['world'])}: {verdict} {escape('; '.join(s['misses']))}")

    try:
        results = run_suite(
            names,
            out_dir,
            users=args.users,
            seed=args.seed,
            validate=not args.no_validate,
            jobs=max(1, args.jobs),
            on_done=done,
        )
    except FileExistsError as exc:
        raise UserError(str(exc)) from None
    out.print(markdown_table(summary_rows(results)), markup=False, highlight=False, soft_wrap=True)
    failed = [r["world"] for r in results if not r["score"]["ok"]]
    err.print(
        f"{len(results) - len(failed)} of {len(results)} world(s) meet every target "
        f"({time.perf_counter() - started:.0f}s); report {out_dir / REPORT}, nights "
        f"{out_dir / 'nights.json'}",
        markup=False,
    )
    return 1 if failed else 0


# -------------------------------------------------------------------------------------- serve
def cmd_serve(args: argparse.Namespace) -> int:
    _, err = _console()
    _settings(args)
    import yaml

    spec = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text(encoding="utf-8"))
    server = None
    if not os.environ.get("PREFECT_API_URL"):
        server = _start_local_server(args.port, err)
        os.environ["PREFECT_API_URL"] = f"http://127.0.0.1:{args.port}/api"
    try:
        from prefect import serve
        from prefect.schedules import Cron

        deployments = []
        for d in spec["deployments"]:
            flow_obj = deployment_flow(d)
            params = dict(d.get("parameters") or {})
            if args.config:
                params["config_path"] = str(Path(args.config).resolve())
            schedules = [
                Cron(s["cron"], timezone=s.get("timezone", "UTC"))
                for s in (d.get("schedules") or [])
            ]
            deployments.append(
                flow_obj.to_deployment(
                    name=d["name"],
                    description=d.get("description"),
                    parameters=params,
                    schedules=schedules,
                    tags=d.get("tags"),
                    concurrency_limit=d.get("concurrency_limit"),
                )
            )
            err.print(
                f"serving deployment {flow_obj.name}/{d['name']}"
                + (
                    f" on {d['schedules'][0]['cron']} ({d['schedules'][0].get('timezone')})"
                    if d.get("schedules")
                    else " (manual)"
                ),
                markup=False,
            )
        err.print(f"Prefect UI: {os.environ['PREFECT_API_URL'].removesuffix('/api')}", markup=False)
        serve(*deployments)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    return 0


# ------------------------------------------------------------------------------------- alerts
def cmd_alerts(args: argparse.Namespace) -> int:
    """Install the automation that announces Failed, Crashed, TimedOut and Degraded runs."""
    out, err = _console()
    api = os.environ.get("PREFECT_API_URL")
    if not api:
        from prefect.settings import PREFECT_API_URL

        api = PREFECT_API_URL.value()
    if not api:
        raise UserError(
            "alerts need a Prefect server (automations do not run on the ephemeral API): set "
            "PREFECT_API_URL, e.g. http://127.0.0.1:4200/api"
        )
    from tasks.alerts import install_alerts

    try:
        done = install_alerts(
            webhook_url=args.webhook_url, slack_webhook_url=args.slack_webhook_url, block=args.block
        )
    except ValueError as exc:
        raise UserError(str(exc)) from None
    out.print(
        f"automation {done['automation']!r} ({done['automation_id']}) on {api}: "
        f"{', '.join(done['events'])} of flows {', '.join(done['flows'])} -> "
        f"{done['block_type']}/{done['block']}",
        markup=False,
        soft_wrap=True,
    )
    err.print("test it: trigger a run that fails, or see Automations in the Prefect UI")
    return 0


def deployment_flow(deployment: dict):
    """The flow object a prefect.yaml deployment's entrypoint names: serve builds each
    deployment from its own flow (nightly for nightly and manual, backfill for backfill,
    extract for extract)."""
    from flows.backfill import backfill
    from flows.extract import extract
    from flows.nightly import nightly

    by_entrypoint = {
        "flows/nightly.py:nightly": nightly,
        "flows/backfill.py:backfill": backfill,
        "flows/extract.py:extract": extract,
    }
    entrypoint = deployment.get("entrypoint", "")
    if entrypoint not in by_entrypoint:
        raise UserError(
            f"prefect.yaml: deployment {deployment.get('name')}: unknown entrypoint "
            f"{entrypoint!r}; known: {', '.join(by_entrypoint)}"
        )
    return by_entrypoint[entrypoint]


def _start_local_server(port: int, err) -> subprocess.Popen:
    import requests

    prefect_bin = Path(sys.executable).with_name("prefect")
    err.print(f"starting a local Prefect server on 127.0.0.1:{port} …")
    proc = subprocess.Popen(
        [str(prefect_bin), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise UserError(f"the Prefect server exited at start (port {port} in use?)")
        try:
            if requests.get(f"http://127.0.0.1:{port}/api/health", timeout=2).ok:
                return proc
        except requests.RequestException:
            pass
        time.sleep(1)
    proc.terminate()
    raise UserError("the local Prefect server did not become healthy within 120 s")


# --------------------------------------------------------------------------------------- main
def _date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {value!r}") from None


def _window_and_sources(parser: argparse.ArgumentParser, sources_help: str) -> None:
    """--window-days and --sources, as `run` and `backfill` take them."""
    parser.add_argument(
        "--window-days",
        type=int,
        default=None,
        help="scoring window in days, 7-120 (default: window_days from the settings, 28)",
    )
    parser.add_argument(
        "--sources",
        nargs="+",
        choices=["usage", "tickets", "bugs"],
        default=["usage", "tickets", "bugs"],
        help=sources_help,
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="feedback-loop",
        description="Nightly product feedback loop: usage events, support tickets and bugs -> "
        "DuckDB -> explainable feature health -> prioritised backlog suggestions.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="FILE",
        help="settings file (TOML); default: the embedded demo settings, or $FEEDBACK_LOOP_CONFIG",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser(
        "run",
        parents=[common],
        help="run the nightly flow once, now",
        description="Run the nightly flow in-process (Prefect's ephemeral API "
        "unless PREFECT_API_URL is set) and print the ranked suggestions.",
        epilog=RUN_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument(
        "--as-of",
        type=_date,
        help="score as of this day (default: yesterday, or the last day with data); a day "
        "older than the newest day already scored writes nothing to the tracker",
    )
    _window_and_sources(r, "sources to pull (default: all)")
    r.add_argument(
        "--dry-run",
        action="store_true",
        help="print the write-back plan (create/update/skip + reason), write nothing",
    )
    r.add_argument(
        "--full-refresh",
        action="store_true",
        help="rebuild the usage rollups from every event instead of the days that changed, "
        "and validate every row again instead of the rows loaded since the last run",
    )
    r.add_argument(
        "--max-new",
        type=int,
        default=None,
        help="cap on new tracker issues this run (default: from settings, 5)",
    )
    r.add_argument(
        "--allow-backdated-writeback",
        action="store_true",
        help="write back even though --as-of is older than the newest day already scored "
        "(by default such a run writes nothing); creates and updates only: recovery comments, "
        "closes and reopens come from the newest day",
    )
    r.set_defaults(func=cmd_run)

    b = sub.add_parser(
        "backfill",
        parents=[common],
        help="score a range of past days; never writes to the tracker",
        description="Pull new data once (unless --no-load), build and check staging once, then "
        "score every day from --from to --to (inclusive, at most 400 days) in order, with the "
        "mart checks of each day. Nothing is written to the tracker; the analyst snapshot is "
        "published once at the end. Prints one line per day and a table.",
        epilog=BACKFILL_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    b.add_argument(
        "--from", dest="start", type=_date, required=True, metavar="YYYY-MM-DD", help="first day"
    )
    b.add_argument(
        "--to", dest="end", type=_date, required=True, metavar="YYYY-MM-DD", help="last day"
    )
    _window_and_sources(b, "sources to pull first (default: all)")
    b.add_argument(
        "--no-load",
        dest="load",
        action="store_false",
        help="score what the warehouse holds, pull nothing new",
    )
    b.set_defaults(func=cmd_backfill)

    d = sub.add_parser(
        "demo-data",
        parents=[common],
        help="generate the seeded demo exports",
        description="Write deterministic demo data in the vendors' export "
        "formats (PostHog JSON lines, Zendesk export pages, GitHub issue pages).",
    )
    d.add_argument("--out", help="output folder (default: demo.out_dir from settings)")
    d.add_argument("--events", type=int, help="target number of events (scale: 10000000 and up)")
    d.add_argument("--users", type=int, help="number of users (default 5000)")
    d.add_argument("--days", type=int, help="days of history (default 90)")
    d.add_argument("--end-date", type=_date, help="last day of data (default: yesterday UTC)")
    d.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    d.add_argument(
        "--append-day",
        type=_date,
        metavar="YYYY-MM-DD",
        help="add one day after the window of the data set in --out, as new files only (same "
        "users and scale, read from its _manifest.json; existing files stay untouched)",
    )
    d.set_defaults(func=cmd_demo_data)

    s = sub.add_parser(
        "serve",
        parents=[common],
        help="serve the prefect.yaml deployments",
        description="Serve the nightly (cron), manual, backfill and extract deployments from "
        "prefect.yaml. Starts a local Prefect server unless PREFECT_API_URL is set.",
    )
    s.add_argument("--port", type=int, default=4200, help="local server port (default 4200)")
    s.set_defaults(func=cmd_serve)

    rp = sub.add_parser(
        "report",
        parents=[common],
        help="write the HTML report with charts for a scored day",
        description="Write the self-contained HTML report of a scored day (suggestions and "
        "why, per feature health with its components, daily users against the baseline band, "
        "tickets and new bugs per day, data-quality verdicts, catalog coverage) to "
        "<warehouse dir>/reports/<as_of>.html, and latest.html when it is the newest scored "
        "day. Every run writes it already; this redraws it, for another day or with history. "
        "Reads the analyst snapshot (--live: the warehouse). Prints the file path(s).",
    )
    rp.add_argument("--as-of", type=_date, help="the day (default: the newest scored day)")
    rp.add_argument(
        "--days",
        type=int,
        default=90,
        choices=range(7, 401),
        metavar="N",
        help="days of history in the charts, 7-400 (default 90)",
    )
    rp.add_argument(
        "--fill-history",
        action="store_true",
        help="first score the window's days that have no scores yet (a backfill with "
        "--no-load: about 2-3 s a day, nothing written to the tracker), then draw",
    )
    rp.add_argument("--out", help="write into this folder instead of <warehouse dir>/reports")
    rp.add_argument("--live", action="store_true", help="read the live warehouse file")
    rp.set_defaults(func=cmd_report)

    q = sub.add_parser(
        "query",
        parents=[common],
        help="run SQL on the warehouse, print a table",
        description="Run read-only SQL against the analyst snapshot (never blocks "
        "the nightly writer), or the live warehouse with --live.",
    )
    q.add_argument("sql", help='e.g. "select * from marts.feature_health"')
    q.add_argument("--live", action="store_true", help="query the live warehouse file")
    q.add_argument("--db", help="query this DuckDB file instead")
    q.add_argument(
        "--format",
        choices=["table", "csv", "json", "markdown"],
        default="table",
        help="table (default: columns that fit the terminal, else one record per block), csv, "
        "json or markdown",
    )
    q.add_argument("--limit", type=int, default=200, help="max rows to print (default 200)")
    q.add_argument(
        "--lock-timeout",
        type=float,
        default=5.0,
        help="seconds to wait for a busy warehouse (default 5)",
    )
    q.set_defaults(func=cmd_query)

    dd = sub.add_parser(
        "docs",
        parents=[common],
        help="write the data dictionary (Markdown + offline HTML) from the database's comments",
        description="Write data_dictionary.md and data_dictionary.html (self-contained: no "
        "network resources) listing every relation of the schemas raw, staging, intermediate, "
        "marts, quality and ops: kind, comment (grain, key), row count, columns with type and "
        "comment, and upstream/downstream relations derived from the SQL that builds each one. "
        "Reads the analyst snapshot (else the warehouse) read-only.",
    )
    dd.add_argument(
        "--out",
        metavar="DIR",
        help="output folder (default: docs/ next to the warehouse, e.g. data/docs)",
    )
    dd.add_argument("--live", action="store_true", help="read the live warehouse file")
    dd.add_argument("--db", help="read this DuckDB file instead")
    dd.add_argument(
        "--lock-timeout",
        type=float,
        default=5.0,
        help="seconds to wait for a busy warehouse (default 5)",
    )
    dd.set_defaults(func=cmd_docs)

    ev = sub.add_parser(
        "evaluate",
        help="planted-scenario suite: replay worlds night by night, score the suggestions",
        description="Generate planted worlds in vendor formats, replay each one's last 14 nights "
        "through the pipeline, score the suggestions against the planted truth and check the "
        "targets. Exit code 0 when every world meets them, 1 otherwise.",
    )
    ev.add_argument("--worlds", metavar="A,B", help="comma-separated world names (default: all)")
    ev.add_argument(
        "--out", default="data/evaluation", help="output folder (default data/evaluation)"
    )
    ev.add_argument("--users", type=int, default=8000, help="users per world (default 8000)")
    ev.add_argument(
        "--no-validate",
        action="store_true",
        help="skip the Great Expectations gates each night (faster, for small runs)",
    )
    ev.add_argument(
        "--jobs", type=int, default=1, help="worlds evaluated in parallel processes (default 1)"
    )
    ev.add_argument("--seed", type=int, default=20260, help="random seed (default 20260)")
    ev.set_defaults(func=cmd_evaluate)

    al = sub.add_parser(
        "alerts",
        help="install the Prefect automation that announces failed, crashed and degraded runs",
        description="Create (or update) a notification block and the automation that sends it "
        "when a nightly or backfill run ends Failed, Crashed, TimedOut or Degraded. Needs a "
        "Prefect server (PREFECT_API_URL); running it again replaces the previous setup.",
    )
    where = al.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--webhook-url", help="generic JSON webhook (POST subject, body, text); the default"
    )
    where.add_argument("--slack-webhook-url", help="Slack incoming-webhook URL")
    where.add_argument(
        "--block",
        metavar="TYPE/NAME",
        help="an existing notification block, e.g. sendgrid-email/oncall for e-mail",
    )
    al.set_defaults(func=cmd_alerts)

    dr = sub.add_parser(
        "doctor",
        parents=[common],
        help="check every configured source with one cheap authenticated call",
        description="Check each configured connector, the write-back tracker and the export-file "
        "globs; print one line per source (ok / bad credentials / unreachable / misconfigured) "
        "with the setting to fix. Exit code 0 when all are ok, 1 otherwise.",
    )
    dr.set_defaults(func=cmd_doctor)
    return p


def _is_user_error(exc: BaseException) -> bool:
    """What every command reports as one `error:` line with exit 2, never a traceback: its own
    UserError, settings or a catalog that do not check out (ConfigError, from any step before
    the flow starts), and a warehouse another process holds (WarehouseLockedError)."""
    from tasks.db import WarehouseLockedError

    return isinstance(exc, UserError | ConfigError | WarehouseLockedError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if not _is_user_error(exc):
            raise
        _, err = _console()
        _error_line(err, "error:", str(exc))
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
