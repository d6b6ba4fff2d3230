"""What a run shows people: rows for Prefect table artifacts and the Markdown run summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb


def _rows(con: duckdb.DuckDBPyConnection, query: str, params: list | None = None) -> list[dict]:
    rel = con.execute(query, params or [])
    cols = [d[0] for d in rel.description]
    return [dict(zip(cols, r, strict=True)) for r in rel.fetchall()]


def coverage_rows(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    return [
        {**r, "mapped_share": float(r["mapped_share"]) if r["mapped_share"] is not None else None}
        for r in _rows(con, "select * from marts.catalog_coverage order by signal")
    ]


def health_rows(con: duckdb.DuckDBPyConnection, as_of: str) -> list[dict[str, Any]]:
    return _rows(
        con,
        """
        select health_rank as rank, feature_key as feature, round(health_score, 1) as score,
               round(confidence, 2) as confidence, round(adoption_score) as adoption,
               round(engagement_score) as engagement, round(retention_score) as retention,
               round(support_score) as support, round(bugs_score) as bugs,
               round(trend_score) as trend, n_users as users,
               round(100 * usage_trend, 1) as usage_trend_pct,
               n_tickets_window as tickets, n_open_bugs as open_bugs,
               coalesce(explanation, '') as explanation, formula_version
        from marts.feature_health where as_of_date = ?::date order by health_rank
        """,
        [as_of],
    )


def suggestion_rows(
    con: duckdb.DuckDBPyConnection, as_of: str, plan: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    by_fp = {p["fingerprint"]: p for p in plan}
    rows = _rows(
        con,
        """
        select priority_rank as rank, fingerprint, title, round(priority_score, 1) as priority,
               reach, impact, round(confidence, 2) as confidence,
               round(health_score, 1) as health, why, is_blocked
        from marts.backlog_suggestions where as_of_date = ?::date order by priority_rank
        """,
        [as_of],
    )
    for r in rows:
        p = by_fp.get(r["fingerprint"], {})
        r["action"] = p.get("action", "")
        r["reason"] = p.get("reason", "")
        r["link"] = p.get("url") or ""
    return rows


def suggestion_artifact_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The `top-suggestions` artifact: what and why first, so they stay on screen."""
    return [
        {
            "#": r["rank"],
            "suggestion": r["title"],
            "why": r["why"],
            "priority": r["priority"],
            "write-back": f"{r['action']}: {r['reason']}" if r["action"] else "",
            "link": r["link"],
            "reach": r["reach"],
            "confidence": r["confidence"],
            "health": r["health"],
            "blocked": r["is_blocked"],
            "fingerprint": r["fingerprint"],
        }
        for r in rows
    ]


def health_artifact_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The `feature-health` artifact: rank, feature, score and its explanation first."""
    first = ("rank", "feature", "score", "explanation", "confidence")
    return [
        {**{k: r[k] for k in first}, **{k: v for k, v in r.items() if k not in first}} for r in rows
    ]


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell (one line, no column breaks)."""
    return " ".join(str(text).split()).replace("|", "\\|")


def writeback_line(wb: dict[str, Any]) -> str:
    """Write-back status with its counts: 'ok (created 2, skipped 3)', 'partial (...): why',
    'backdated, nothing written: as_of ... < newest scored day ...; ...' (clean, by design)."""
    clean = {"ok": "ok", "dry_run": "dry run", "backdated": "backdated, nothing written"}
    status = clean.get(wb["status"], str(wb["status"]).upper())
    counts = ", ".join(f"{k} {v}" for k, v in (wb.get("counts") or {}).items())
    why = wb.get("stop_reason") or wb.get("error")
    return status + (f" ({counts})" if counts else "") + (f": {_cell(why)}" if why else "")


def _report_line(report: dict[str, Any] | None) -> str:
    """The run's HTML report (charts per feature, suggestions, data quality) as a link."""
    if not report:
        return "- Report: not written"
    if report.get("error"):
        return f"- Report: **not written**: {_cell(report['error'])}"
    path = Path(report["path"]).resolve()
    return (
        f"- **Report with charts: [{path.name}]({path.as_uri()})** "
        f"({report['size_bytes'] / 1024:,.0f} KiB, {report['n_charts']} charts; "
        f"`{path}`)"
    )


def summary_markdown(s: dict[str, Any]) -> str:
    verdict = {
        "pass": "PASS",
        "warn": "WARN (confidence lowered)",
        "degraded": "DEGRADED (write-back blocked for affected sources)",
    }[s["dq_verdict"]]
    reasons = s.get("degraded_reasons") or []
    lines = [f"# Nightly run `{s['run_id']}`" + (" — DEGRADED" if reasons else ""), ""]
    if reasons:  # first thing on the page: what is missing or was not written
        lines += [
            "> **⚠ DEGRADED — this run completed, but not everything was loaded, checked or "
            "written:**",
            ">",
            *[f"> - {_cell(r)}" for r in reasons],
            "",
        ]
    wb = s.get("writeback")
    lines += [
        f"- As of **{s['as_of']}**, window {s['window_days']} days"
        + (" — **dry run** (nothing written to the tracker)" if s["dry_run"] else ""),
        f"- Data quality: **{verdict}** (details in the report's *Data quality* section)",
        _report_line(s.get("report")),
        f"- Warehouse: `{s['db_path']}`; analyst snapshot: `{s['snapshot_path']}`",
        f"- Tracker: `{s['tracker_dir']}`"
        + (f"; write-back: **{writeback_line(wb)}**" if wb else ""),
        "",
        "## Loads",
        "",
        "| source | files loaded | skipped | rejected | read | new | updated | superseded "
        "| dropped | quarantined |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for src, st in s["loads"].items():
        if st.get("failed"):
            lines.append(f"| {src} | **FAILED**: {_cell(st['reason'])} | | | | | | | |")
            continue
        lines.append(
            f"| {src} | {st['files_loaded']} | {st['files_skipped']} "
            f"| {st.get('files_rejected', 0)} | {st['records_read']:,} "
            f"| {st['n_inserted']:,} | {st['n_updated']:,} | {st['n_superseded']:,} "
            f"| {st['n_dropped']:,} | {st['n_quarantined']:,} |"
        )
    lines += [
        "",
        "## Validation (Great Expectations)",
        "",
        "| table | verdict | rows in | accepted | quarantined | failed checks | seconds |",
        "|---|---|---:|---:|---:|---|---:|",
    ]
    for v in s["validation"]:
        lines.append(
            f"| {v['table']} | {v['verdict']} | {v['rows_in']:,} | {v['rows_accepted']:,} "
            f"| {v['rows_quarantined']:,} | {'; '.join(v['failed'])[:300] or '-'} "
            f"| {v['seconds']} |"
        )
    lines += [
        "",
        "## Catalog coverage",
        "",
        "| signal | mapped | biggest unmapped |",
        "|---|---:|---|",
    ]
    for c in s["coverage"]:
        lines.append(
            f"| {c['signal']} | {100 * (c['mapped_share'] or 0):.1f}% of {c['n_records']:,} "
            f"| {c['top_unmapped'] or '-'} |"
        )
    lines += [
        "",
        "## Suggestions",
        "",
        "| # | suggestion | priority | write-back |",
        "|---:|---|---:|---|",
    ]
    for r in s["suggestions"]:
        lines.append(
            f"| {r['rank']} | {r['title']} | {r['priority']:,} | {r['action']}: {r['reason']} |"
        )
    lines += ["", "## Timings (s)", "", " · ".join(f"{k} {v}" for k, v in s["timings"].items())]
    return "\n".join(lines)
