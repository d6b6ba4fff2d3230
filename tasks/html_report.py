"""The run's HTML report: one self-contained page per as-of date (`<reports>/<as_of>.html`, and
`latest.html` for the newest scored day) that people open instead of reading tables.

Everything on it comes from the warehouse, so a night, a backfilled day and `feedback-loop
report` draw the same page: ranked suggestions and why, per feature the health score over the
last `days` days split into its components, daily users against the same-weekday baseline band,
tickets and new bugs per day, the data-quality verdicts of the run that scored the day, and
catalog coverage. Charts are Altair (Vega-Lite) specs rendered in-process to SVG by vl-convert and
inlined with the styles: the file needs no network, no script and no other file to open.
"""

from __future__ import annotations

import html
import json
import os
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import altair as alt
import duckdb
import polars as pl

REPORT_DAYS = 90
COMPONENT_COLORS = {  # the six health components, in their formula order
    "adoption": "#4c78a8",
    "engagement": "#72b7b2",
    "retention": "#54a24b",
    "support": "#f58518",
    "bugs": "#e45756",
    "trend": "#b279a2",
}
CHART_WIDTH = 640


@dataclass(frozen=True)
class ReportFile:
    path: Path
    latest: Path | None  # latest.html when this is the newest scored day
    size_bytes: int
    n_charts: int
    n_features: int
    health_days: int  # scored days inside the chart window
    seconds: float


def _frame(con: duckdb.DuckDBPyConnection, query: str, params: list | None = None) -> pl.DataFrame:
    return con.sql(query, params=params or []).pl()


def _rows(con: duckdb.DuckDBPyConnection, query: str, params: list | None = None) -> list[dict]:
    rel = con.execute(query, params or [])
    cols = [d[0] for d in rel.description]
    return [dict(zip(cols, r, strict=True)) for r in rel.fetchall()]


BASELINE_DAYS = 41  # days up to its as-of date int_feature_baseline.sql computes


def baseline_band(con: duckdb.DuckDBPyConnection, start: date, as_of: date) -> pl.DataFrame:
    """Expected daily users and their spread per feature x day from `start` to `as_of`, by the
    detector's own model (sql/intermediate/int_feature_baseline.sql) evaluated as of `as_of`,
    `as_of` - 41, ...: a day's baseline reads only the weeks before it, so the pieces join into
    one band. Computed here rather than read from the intermediate table, which holds the days
    of whichever as-of date was scored last (a backfill leaves its last day there)."""
    from tasks.db import sql_text

    model = sql_text("intermediate/int_feature_baseline.sql").strip().rstrip(";")
    pieces = []
    end = as_of
    while end >= start:
        con.execute("set variable as_of = ?::date", [end])
        pieces.append(
            con.sql(
                f"select feature_key, day, expected_users, expected_users_spread from ({model}) "
                "where day between ? and ?",
                params=[max(start, end - timedelta(days=BASELINE_DAYS - 1)), end],
            ).pl()
        )
        end -= timedelta(days=BASELINE_DAYS)
    con.execute("reset variable as_of")
    return pl.concat(pieces).unique(["feature_key", "day"], keep="first")


def scored_days(con: duckdb.DuckDBPyConnection) -> list[date]:
    """Every as-of date the warehouse holds scores for, oldest first."""
    return [
        r[0]
        for r in con.execute(
            "select distinct as_of_date from marts.feature_health order by 1"
        ).fetchall()
    ]


def gather(con: duckdb.DuckDBPyConnection, as_of: date, days: int = REPORT_DAYS) -> dict[str, Any]:
    """Everything the page shows for `as_of`, read from the warehouse (or its snapshot)."""
    start = as_of - timedelta(days=days - 1)
    health = _rows(
        con,
        "select * from marts.feature_health where as_of_date = ? order by health_rank",
        [as_of],
    )
    if not health:
        raise LookupError(
            f"no scores for {as_of}: score that day first (feedback-loop backfill --from {as_of} "
            f"--to {as_of} --no-load)"
        )
    run_id = health[0]["run_id"]
    run = _rows(
        con,
        "select run_id, kind, status, dq_verdict, summary from ops.runs where run_id = ?",
        [run_id],
    )
    summary = json.loads(run[0]["summary"]) if run and run[0]["summary"] else {}
    baseline = baseline_band(con, start, as_of)
    first_day = con.sql("select min(day) from marts.feature_daily").fetchall()[0][0]
    window = health[0]["window_days"]
    # Days before a full scoring window of data lies behind them are not scored (nor filled).
    scorable_from = max(start, first_day + timedelta(days=window - 1)) if first_day else as_of
    return {
        "as_of": as_of,
        "start": start,
        "scorable_from": scorable_from,
        "days": days,
        "run_id": run_id,
        "run": run[0] if run else None,
        "summary": summary,
        "health": health,
        "components": _rows(
            con,
            "select * from marts.feature_health_components where as_of_date = ? "
            "order by feature_key, component_order",
            [as_of],
        ),
        "history": _frame(
            con,
            "select c.as_of_date, c.feature_key, c.component, c.component_order, c.contribution, "
            "h.health_score from marts.feature_health_components as c "
            "inner join marts.feature_health as h using (as_of_date, feature_key) "
            "where c.as_of_date between ? and ?",
            [start, as_of],
        ),
        "daily": _frame(
            con,
            "select feature_key, day, n_users, n_tickets, n_bugs_opened, n_s1_bugs_opened, "
            "n_s2_bugs_opened from marts.feature_daily where day between ? and ?",
            [start, as_of],
        ),
        "baseline": baseline,
        "suggestions": _rows(
            con,
            "select * exclude (evidence) from marts.backlog_suggestions where as_of_date = ? "
            "order by priority_rank",
            [as_of],
        ),
        "table_status": _rows(
            con,
            "select * from quality.table_status where run_id = ? order by "
            "case layer when 'raw' then 1 when 'staging' then 2 when 'intermediate' then 3 "
            "else 4 end, table_name",
            [run_id],
        ),
        "source_status": _rows(
            con, "select * from quality.source_status where run_id = ? order by 2", [run_id]
        ),
        "failed_checks": _rows(
            con,
            "select table_name, severity, expectation_type, column_name, description, "
            "unexpected_count, element_count, n_quarantined from quality.dq_results "
            "where run_id = ? and not is_success order by severity, table_name",
            [run_id],
        ),
        "coverage": _rows(con, "select * from marts.catalog_coverage order by signal"),
    }


# --- charts ----------------------------------------------------------------------------------


def _x(data: dict[str, Any], title: str | None = None, bars: bool = False) -> alt.X:
    """The shared date axis of the window; `bars`: one bar per UTC day (a day-wide band)."""
    domain = [data["start"].isoformat(), (data["as_of"] + timedelta(days=1)).isoformat()]
    return alt.X(
        "utcyearmonthdate(day):T" if bars else "day:T",
        title=title,
        scale=alt.Scale(type="utc", domain=domain),
        axis=alt.Axis(format="%b %d", labelOverlap=True, tickCount=10),
    )


def feature_chart(data: dict[str, Any], feature_key: str, onset: date | None) -> alt.VConcatChart:
    """Health and its components, daily users against the baseline band, tickets and new bugs
    per day: one column of panels on the same date axis."""
    hist = (
        data["history"]
        .filter(pl.col("feature_key") == feature_key)
        .rename({"as_of_date": "day"})
        .with_columns(pl.col("day").cast(pl.String))
    )
    comp_scale = alt.Scale(domain=list(COMPONENT_COLORS), range=list(COMPONENT_COLORS.values()))
    health = (
        alt.Chart(hist, title="Health score (0-100), stacked by component contribution")
        .mark_bar()
        .encode(
            x=_x(data, bars=True),
            y=alt.Y("sum(contribution):Q", title="points", scale=alt.Scale(domain=[0, 100])),
            color=alt.Color(
                "component:N", scale=comp_scale, legend=alt.Legend(orient="right", title=None)
            ),
            order=alt.Order("component_order:Q"),
        )
        .properties(width=CHART_WIDTH, height=130)
    )
    daily = (
        data["daily"]
        .filter(pl.col("feature_key") == feature_key)
        .with_columns(pl.col("day").cast(pl.String))
    )
    base = data["baseline"]
    band_rows = (
        base.filter(pl.col("feature_key") == feature_key).with_columns(
            pl.col("day").cast(pl.String),
            (pl.col("expected_users") - 2 * pl.col("expected_users_spread"))
            .clip(lower_bound=0)
            .alias("low"),
            (pl.col("expected_users") + 2 * pl.col("expected_users_spread")).alias("high"),
        )
        if base.height
        else pl.DataFrame({"day": [], "low": [], "high": [], "expected_users": []})
    )
    layers = [
        alt.Chart(band_rows)
        .mark_area(color="#9ecae9", opacity=0.45)
        .encode(x=_x(data), y=alt.Y("low:Q", title="users"), y2="high:Q"),
        alt.Chart(band_rows)
        .mark_line(color="#4c78a8", strokeDash=[4, 3], strokeWidth=1)
        .encode(x=_x(data), y="expected_users:Q"),
        alt.Chart(daily)
        .mark_line(color="#1f2d3d", strokeWidth=1.6)
        .encode(x=_x(data), y=alt.Y("n_users:Q", title="users")),
    ]
    if onset is not None:
        layers.append(
            alt.Chart(pl.DataFrame({"day": [onset.isoformat()]}))
            .mark_rule(color="#e45756", strokeDash=[2, 2])
            .encode(x=_x(data))
        )
    users = alt.layer(*layers).properties(
        width=CHART_WIDTH,
        height=130,
        title="Daily users; band: same-weekday baseline, expected ± 2 spreads"
        + (f"; red rule: drop onset {onset}" if onset else ""),
    )
    tickets = (
        alt.Chart(daily, title="Tickets per day")
        .mark_bar(color="#f58518")
        .encode(x=_x(data, bars=True), y=alt.Y("n_tickets:Q", title="tickets"))
        .properties(width=CHART_WIDTH, height=70)
    )
    bug_rows = (
        daily.select(
            "day",
            pl.col("n_s1_bugs_opened").alias("s1"),
            pl.col("n_s2_bugs_opened").alias("s2"),
            (
                pl.col("n_bugs_opened") - pl.col("n_s1_bugs_opened") - pl.col("n_s2_bugs_opened")
            ).alias("other"),
        )
        .unpivot(index="day", variable_name="severity", value_name="bugs")
        .filter(pl.col("bugs") > 0)
    )
    bugs = (
        alt.Chart(bug_rows, title="New bugs per day by severity")
        .mark_bar()
        .encode(
            x=_x(data, "day (UTC)", bars=True),
            y=alt.Y("bugs:Q", title="bugs"),
            color=alt.Color(
                "severity:N",
                scale=alt.Scale(domain=["s1", "s2", "other"], range=["#b2182b", "#ef8a62", "#bbb"]),
                legend=alt.Legend(orient="right", title=None),
            ),
        )
        .properties(width=CHART_WIDTH, height=70)
    )
    return alt.vconcat(health, users, tickets, bugs, spacing=14).resolve_scale(color="independent")


def overview_chart(data: dict[str, Any]) -> alt.Chart:
    """Every feature's health score over the scored days of the window."""
    hist = (
        data["history"]
        .group_by("as_of_date", "feature_key")
        .agg(pl.col("health_score").first())
        .rename({"as_of_date": "day"})
        .with_columns(pl.col("day").cast(pl.String))
        .sort("day")
    )
    names = {h["feature_key"]: h["feature_name"] for h in data["health"]}
    hist = hist.with_columns(
        pl.col("feature_key").replace_strict(names, default=None).alias("feature")
    )
    n_days = hist.get_column("day").n_unique() if hist.height else 0
    mark = alt.Chart(hist).mark_line(point=n_days <= 14, strokeWidth=1.8)
    return mark.encode(
        x=_x(data, "as-of day (UTC)"),
        y=alt.Y("health_score:Q", title="health score", scale=alt.Scale(domain=[0, 100])),
        color=alt.Color(
            "feature:N",
            sort=[h["feature_name"] for h in data["health"]],
            legend=alt.Legend(orient="right", title="feature (least healthy first)"),
        ),
    ).properties(width=CHART_WIDTH, height=200, title="Health score per feature")


def svg(chart: alt.TopLevelMixin) -> str:
    import vl_convert

    text = vl_convert.vegalite_to_svg(chart.to_dict())
    return text[text.find("<svg") :]  # inline: drop any XML prolog


# --- page ------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2d3d;
margin:0;background:#f6f7f9}
main{max-width:1180px;margin:0 auto;padding:18px 28px 60px}
h1{font-size:22px;margin:8px 0 2px}h2{font-size:18px;margin:32px 0 10px;border-bottom:1px solid
#dde1e6;padding-bottom:4px}h3{font-size:16px;margin:0 0 4px}
.meta{color:#5b6776;margin:0 0 12px}.badge{display:inline-block;padding:1px 8px;border-radius:10px;
font-size:12px;font-weight:600;vertical-align:middle}.pass{background:#dcf3e2;color:#1e6b36}
.warn{background:#fff1cc;color:#7a5500}.fail,.degraded{background:#fbdada;color:#9b1c1c}
.alert{background:#fbdada;border-left:4px solid #c62828;padding:8px 14px;margin:10px 0}
table{border-collapse:collapse;width:100%;background:#fff;margin:6px 0 12px}
th,td{border-bottom:1px solid #e6e9ed;padding:5px 8px;text-align:left;vertical-align:top}
th{background:#eef1f4;font-weight:600;font-size:13px}td.n,th.n{text-align:right;
font-variant-numeric:tabular-nums;white-space:nowrap}
.card{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:14px 16px;margin:14px 0}
.why{white-space:pre-wrap;max-width:60em}.chart{overflow-x:auto}.muted{color:#6b7785}
.bar{display:inline-block;height:9px;background:#4c78a8;border-radius:2px;vertical-align:middle}
nav a{margin-right:12px}details summary{cursor:pointer;color:#3a5a85;margin:6px 0}
code{background:#eef1f4;padding:0 3px;border-radius:3px}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _num(value: Any, digits: int = 1) -> str:
    if value is None:
        return ""
    if isinstance(value, int):
        return f"{value:,}"
    try:
        return f"{float(value):,.{digits}f}"
    except (TypeError, ValueError):
        return _e(value)


def _table(head: list[tuple[str, bool]], rows: list[list[str]]) -> str:
    """An HTML table; `head` = (label, numeric); cells are already escaped HTML."""
    th = "".join(f'<th class="n">{_e(h)}</th>' if n else f"<th>{_e(h)}</th>" for h, n in head)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{c}</td>' if head[i][1] else f"<td>{c}</td>" for i, c in enumerate(r)
        )
        + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _suggestions_html(data: dict[str, Any]) -> str:
    plan = {p["fingerprint"]: p for p in data["summary"].get("plan") or []}
    if not data["suggestions"]:
        return '<p class="muted">No suggestions for this day.</p>'
    rows = []
    for s in data["suggestions"]:
        p = plan.get(s["fingerprint"], {})
        wb = _e(p.get("action", "")) + (f": {_e(p.get('reason'))}" if p.get("reason") else "")
        if p.get("url"):
            wb += f' (<a href="{_e(p["url"])}">issue</a>)'
        if s["is_blocked"]:
            wb = f"<b>blocked</b> ({_e(s['blocked_by'])}) " + wb
        rows.append(
            [
                str(s["priority_rank"]),
                f'<a href="#f-{_e(s["feature_key"])}">{_e(s["title"])}</a>',
                _num(s["priority_score"]),
                _num(s["reach"], 0),
                _num(s["confidence"], 2),
                _num(s["health_score"]),
                f'<div class="why">{_e(s["why"])}</div>',
                wb or '<span class="muted">not in this run\'s write-back</span>',
            ]
        )
    return _table(
        [
            ("#", True),
            ("suggestion", False),
            ("priority", True),
            ("reach", True),
            ("confidence", True),
            ("health", True),
            ("why", False),
            ("write-back", False),
        ],
        rows,
    )


def _feature_html(data: dict[str, Any], h: dict[str, Any], chart_svg: str) -> str:
    comps = [c for c in data["components"] if c["feature_key"] == h["feature_key"]]
    state = []
    if h["health_kind"]:
        state.append(f"{h['health_kind']} ({h['health_state']}, since {h['health_onset_date']})")
    if h["is_adoption_problem"]:
        state.append(f"weak adoption ({h['adoption_state']})")
    comp_rows = [
        [
            _e(c["component"]),
            _num(c["score"]),
            _num(c["weight"], 2),
            _num(c["contribution"]),
            _num(c["points_lost"]),
            _e(c["detail"]),
        ]
        for c in comps
    ]
    return (
        f'<section class="card" id="f-{_e(h["feature_key"])}">'
        f"<h3>#{h['health_rank']} {_e(h['feature_name'])} "
        f'<span class="muted">({_e(h["feature_key"])})</span> — health {_num(h["health_score"])}'
        f", confidence {_num(h['confidence'], 2)}"
        + (f' <span class="badge fail">{_e("; ".join(state))}</span>' if state else "")
        + "</h3>"
        f'<p class="why">{_e(h["explanation"] or "No problem detected.")}</p>'
        f'<div class="chart">{chart_svg}</div>'
        "<details><summary>Score components (contributions sum to the health score)</summary>"
        + _table(
            [
                ("component", False),
                ("score 0-100", True),
                ("weight", True),
                ("contribution", True),
                ("points lost", True),
                ("measured", False),
            ],
            comp_rows,
        )
        + "</details></section>"
    )


def _badge(verdict: str | None) -> str:
    cls = verdict if verdict in ("pass", "warn", "fail") else "warn"
    return f'<span class="badge {cls}">{_e(verdict)}</span>'


def _quality_html(data: dict[str, Any]) -> str:
    status_rows = [
        [
            _e(t["layer"]),
            _e(t["table_name"]),
            _badge(t["verdict"]),
            _num(t["rows_in"]),
            _num(t["rows_accepted"]),
            _num(t["rows_quarantined"]),
            _e("; ".join(t["failed"] or []) or t["reason"] or ""),
        ]
        for t in data["table_status"]
    ]
    source_rows = [
        [
            _e(s["source_kind"]),
            _badge(s["verdict"]),
            _num(s["confidence_factor"], 2),
            "yes" if s["is_writeback_blocked"] else "no",
            _e(s["reason"]),
        ]
        for s in data["source_status"]
    ]
    failed = [
        [
            _e(f["table_name"]),
            _e(f["severity"]),
            _e(f["description"] or f["expectation_type"]),
            _e(f["column_name"]),
            _num(f["unexpected_count"]),
            _num(f["n_quarantined"]),
        ]
        for f in data["failed_checks"]
    ]
    out = (
        f"<p>Checks of run <code>{_e(data['run_id'])}</code> (the run that scored this day), "
        "Great Expectations suites in <code>expectations/</code>; every row is in "
        "<code>quality.table_status</code>, <code>quality.dq_results</code> and "
        "<code>quality.quarantine</code>.</p>"
    )
    if source_rows:
        out += _table(
            [
                ("source kind", False),
                ("verdict", False),
                ("confidence factor", True),
                ("write-back blocked", False),
                ("reason", False),
            ],
            source_rows,
        )
    out += _table(
        [
            ("layer", False),
            ("table", False),
            ("verdict", False),
            ("rows in", True),
            ("accepted", True),
            ("quarantined", True),
            ("failed checks / reason", False),
        ],
        status_rows,
    )
    if failed:
        out += "<h3>Failed checks</h3>" + _table(
            [
                ("table", False),
                ("severity", False),
                ("check", False),
                ("column", False),
                ("unexpected", True),
                ("quarantined", True),
            ],
            failed,
        )
    return out


def _coverage_html(data: dict[str, Any]) -> str:
    rows = []
    for c in data["coverage"]:
        share = float(c["mapped_share"] or 0)
        rows.append(
            [
                _e(c["signal"]),
                _num(c["n_records"]),
                _num(c["n_mapped"]),
                f'<span class="bar" style="width:{round(120 * share)}px"></span> '
                f"{100 * share:.1f}%",
                _e(c["top_unmapped"] or "-"),
            ]
        )
    return _table(
        [
            ("signal", False),
            ("records", True),
            ("mapped to a feature", True),
            ("mapped share", False),
            ("biggest unmapped", False),
        ],
        rows,
    )


def render(data: dict[str, Any]) -> tuple[str, int]:
    """The page and how many charts it holds."""
    summary = data["summary"]
    health = data["health"]
    n_scored = data["history"].get_column("as_of_date").n_unique() if data["history"].height else 0
    charts = [svg(overview_chart(data))]
    features = []
    for h in health:
        onset = h["health_onset_date"] if h["health_kind"] else None
        chart_svg = svg(feature_chart(data, h["feature_key"], onset))
        charts.append(chart_svg)
        features.append(_feature_html(data, h, chart_svg))
    run = data["run"] or {}
    verdict = summary.get("dq_verdict") or run.get("dq_verdict") or "unknown"
    reasons = summary.get("degraded_reasons") or []
    wb = summary.get("writeback") or {}
    head = (
        f"<h1>Feedback loop — {data['as_of']}</h1>"
        f'<p class="meta">Run <code>{_e(data["run_id"])}</code> ({_e(run.get("kind", "?"))}, '
        f"{_e(run.get('status', '?'))}) · window {health[0]['window_days']} days · data quality "
        f'<span class="badge {_e(verdict)}">{_e(verdict.upper())}</span>'
        + (f" · write-back: {_e(wb.get('status'))}" if wb else "")
        + f" · formula {_e(health[0]['formula_version'])}</p>"
    )
    if reasons:
        head += (
            '<div class="alert"><b>DEGRADED</b> — this run completed, but not everything was '
            "loaded, checked or written:<ul>"
            + "".join(f"<li>{_e(r)}</li>" for r in reasons)
            + "</ul></div>"
        )
    scorable = (data["as_of"] - data["scorable_from"]).days + 1
    history_note = f"Health: {n_scored} of the last {data['days']} days are scored" + (
        f"; {scorable - n_scored} more can be: <code>feedback-loop report --fill-history</code> "
        "scores them with the backfill (nothing written to the tracker)"
        if n_scored < scorable
        else ""
    )
    if data["scorable_from"] > data["start"]:
        history_note += (
            f"; days before {data['scorable_from']} have less than a full "
            f"{health[0]['window_days']}-day window of data behind them"
        )
    nav = (
        '<nav><a href="#suggestions">Suggestions</a><a href="#features">Features</a>'
        '<a href="#quality">Data quality</a><a href="#coverage">Catalog coverage</a></nav>'
    )
    body = (
        head
        + nav
        + '<h2 id="suggestions">Suggestions, highest priority first</h2>'
        + _suggestions_html(data)
        + '<h2 id="features">Features, least healthy first</h2>'
        + f'<p class="muted">{history_note}. Usage, tickets and bugs cover {data["start"]} – '
        f"{data['as_of']} (UTC days).</p>"
        + f'<div class="card chart">{charts[0]}</div>'
        + "".join(features)
        + '<h2 id="quality">Data quality</h2>'
        + _quality_html(data)
        + '<h2 id="coverage">Catalog coverage</h2>'
        + _coverage_html(data)
        + f'<p class="muted">Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC from '
        "the warehouse (<code>marts.feature_health</code>, <code>marts.feature_daily</code>, "
        "<code>marts.backlog_suggestions</code>, <code>quality.*</code>). Charts: Altair / "
        "vl-convert.</p>"
    )
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Feedback loop report {data['as_of']}</title><style>{_CSS}</style></head>"
        f"<body><main>{body}</main></body></html>"
    )
    return page, len(charts)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_report(
    con: duckdb.DuckDBPyConnection,
    as_of: date | str,
    reports_dir: Path,
    days: int = REPORT_DAYS,
) -> ReportFile:
    """Write `<reports_dir>/<as_of>.html`; also `latest.html` when `as_of` is the newest scored
    day (a backfilled past day does not replace tonight's page)."""
    started = time.perf_counter()
    as_of = date.fromisoformat(str(as_of))
    data = gather(con, as_of, days)
    page, n_charts = render(data)
    reports_dir = Path(reports_dir)
    reports_dir.mkdir(parents=True, exist_ok=True)
    path = reports_dir / f"{as_of}.html"
    _write_atomic(path, page)
    newest = scored_days(con)[-1]
    latest = None
    if as_of >= newest:
        latest = reports_dir / "latest.html"
        _write_atomic(latest, page)
    n_scored = data["history"].get_column("as_of_date").n_unique() if data["history"].height else 0
    return ReportFile(
        path=path,
        latest=latest,
        size_bytes=len(page.encode("utf-8")),
        n_charts=n_charts,
        n_features=len(data["health"]),
        health_days=n_scored,
        seconds=round(time.perf_counter() - started, 2),
    )
