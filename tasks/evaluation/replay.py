"""Replay a planted world night by night through the real pipeline steps.

For each of the last REPLAY_NIGHTS days d of a world, the files of every day up to d are linked
into the run's `visible/` folder (events of d, Zendesk pages and GitHub pages of changes made
on d), and one night runs as plain function calls in the order of flows/nightly.py and
tasks/steps.py: load -> build staging -> quality.check_inputs (Great Expectations) -> catalog
publish + transform.build_marts(as_of=d) -> quality.check_marts -> write-back plan + apply to
the Markdown tracker, honouring the run's data-quality verdict like the flow. Left out: the demo
data step (off), the analyst snapshot and the HTML report (outputs only, nothing reads them).

After each night the suggestions of d (marts.backlog_suggestions), the write-back plan and the
tracker's issue files are recorded for the metrics.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from tasks.evaluation.worlds import REPLAY_NIGHTS, file_day, pipeline_catalog

log = logging.getLogger(__name__)

MARKER_FILE = ".feedback-loop-evaluation"
SOURCES = (("posthog", "*.jsonl"), ("zendesk", "*.json"), ("github", "*.json"))
_FRONT_STATUS = re.compile(r"\A---\n(?:.*\n)*?status:\s*(\S*)", re.M)


@dataclasses.dataclass(frozen=True)
class ReplayOptions:
    validate: bool = True  # run the Great Expectations gates (check_inputs, check_marts)
    nights: int = REPLAY_NIGHTS
    window_days: int = 28
    memory_limit: str = "2GB"


def fresh_dir(path: Path) -> Path:
    """An empty directory that this module owns (marked); refuses to clear anything else."""
    path = Path(path)
    if path.exists():
        if not (path / MARKER_FILE).exists() and any(path.iterdir()):
            raise FileExistsError(f"{path} exists and was not made by the evaluation; not cleared")
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / MARKER_FILE).write_text("made by feedback-loop evaluate; safe to delete\n")
    return path


def _settings_toml(memory_limit: str) -> str:
    from tasks.settings import FileSources

    lines = [
        'duckdb_path = "feedback.duckdb"',
        'snapshot_path = "feedback_analyst.duckdb"',
        'catalog_path = "features.yaml"',
        f'duckdb_memory_limit = "{memory_limit}"',
        'hash_salt = "feedback-loop-evaluation"',
        "[demo]",
        "enabled = false",
        "[sources]",
        'posthog_events = "visible/posthog/*.jsonl"',
        'zendesk_tickets = "visible/zendesk/*.json"',
        'github_issues = "visible/github/*.json"',
    ]
    if "accounts" in FileSources.model_fields:  # optional revenue source: none in the worlds
        lines.append('accounts = ""')
    lines += ["[writeback]", 'tracker = "markdown"', 'tracker_dir = "tracker"']
    return "\n".join(lines) + "\n"


def prepare_run(world_dir: Path, run_dir: Path, options: ReplayOptions) -> tuple[Any, list[str]]:
    """A fresh run directory: settings TOML, the world's catalog, an empty visible/ folder."""
    from tasks.settings import load_settings

    run_dir = fresh_dir(run_dir)
    for source, _ in SOURCES:
        (run_dir / "visible" / source).mkdir(parents=True)
    notes = pipeline_catalog(world_dir / "features.yaml", run_dir / "features.yaml")
    (run_dir / "settings.toml").write_text(_settings_toml(options.memory_limit), encoding="utf-8")
    # No FEEDBACK_LOOP_* variable of the caller's shell may point a world at another warehouse.
    settings = load_settings(run_dir / "settings.toml", environ={})
    return settings, notes


def make_visible(world_dir: Path, visible_dir: Path, through: date) -> int:
    """Link every world file of a day up to `through` into visible/ (hard link, else copy);
    returns how many files were added."""
    added = 0
    for source, pattern in SOURCES:
        for path in sorted((world_dir / source).glob(pattern)):
            day = file_day(path)
            target = visible_dir / source / path.name
            if day is None or day > through or target.exists():
                continue
            try:
                os.link(path, target)
            except OSError:
                shutil.copy2(path, target)
            added += 1
    return added


def _score_params(settings: Any, as_of: date, window_days: int, run_id: str) -> Any:
    """transform.ScoreParams as tasks/steps.py builds it (scoring options from the settings)."""
    from tasks import transform

    fields = {f.name for f in dataclasses.fields(transform.ScoreParams)}
    kwargs: dict[str, Any] = {
        "as_of": as_of,
        "window_days": window_days,
        "weights": settings.score.weights.normalised(),
        "run_id": run_id,
    }
    for name in ("detection", "reach"):  # present while the scoring rewrite lands
        if name in fields and hasattr(settings.score, name):
            kwargs[name] = getattr(settings.score, name)
    return transform.ScoreParams(**kwargs)


def run_night(settings: Any, as_of: date, run_id: str, options: ReplayOptions) -> dict[str, Any]:
    """One nightly run over what is visible, as plain calls in the flow's order."""
    from tasks import catalog, contracts, db, load, quality, transform, writeback
    from tasks.clients.github import GITHUB_ISSUES_SPEC
    from tasks.clients.zendesk import ZENDESK_TICKETS_SPEC
    from tasks.redact import register_duckdb
    from tasks.steps import finish_run, start_run
    from tasks.trackers.factory import build_tracker

    started_at = datetime.now(UTC)
    timings: dict[str, float] = {}
    mem = settings.duckdb_memory_limit
    path = settings.duckdb_path
    salt = settings.hash_salt.get_secret_value()

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        out = fn()
        timings[name] = round(time.perf_counter() - t0, 3)
        return out

    start_run(settings, run_id, None, started_at, options.window_days, False)

    def load_step() -> dict[str, Any]:
        specs = (
            (contracts.POSTHOG_EVENTS, settings.sources.posthog_events),
            (ZENDESK_TICKETS_SPEC, settings.sources.zendesk_tickets),
            (GITHUB_ISSUES_SPEC, settings.sources.github_issues),
        )
        with db.warehouse(path, memory_limit=mem) as con:
            db.ensure_schema(con)
            register_duckdb(con, salt)
            return {s.source: load.load_source(con, s, p, run_id).as_dict() for s, p in specs}

    def staging_step() -> dict[str, int]:
        with db.warehouse(path, memory_limit=mem) as con:
            return transform.build_staging(con, salt)

    def validate_step() -> Any:
        if not options.validate:
            with db.warehouse(path, memory_limit=mem) as con:
                quality.ensure_quality_tables(con)
            return None
        return quality.check_inputs(
            path,
            quality.GateParams(
                run_id=run_id,
                run_started_at=started_at,
                as_of=as_of,
                check_days=options.window_days,
                vendors=quality.configured_vendors(settings),
                catalog_path=settings.catalog_path,
                memory_limit=mem,
            ),
        )

    def score_step() -> None:
        cat = catalog.load_catalog(settings.catalog_path)
        with db.warehouse(path, memory_limit=mem) as con:
            catalog.publish_catalog(con, cat)
            transform.build_marts(con, _score_params(settings, as_of, options.window_days, run_id))

    def validate_marts_step() -> Any:
        if not options.validate:
            return None
        return quality.check_marts(path, run_id, as_of, started_at, memory_limit=mem)

    try:
        loads = timed("load", load_step)
        timed("staging", staging_step)
        gate = timed("validate", validate_step)
        timed("score", score_step)
        marts_gate = timed("validate_marts", validate_marts_step)
        verdicts = (gate.verdicts if gate else []) + (marts_gate.verdicts if marts_gate else [])
        verdict = quality.run_verdict(verdicts)

        def write_back_step() -> dict[str, Any]:
            tracker = build_tracker(settings)
            with db.warehouse(path, memory_limit=mem) as con:
                suggestions = writeback.load_suggestions(con, as_of.isoformat())
                plan = writeback.plan_writeback(
                    con,
                    tracker,
                    suggestions,
                    settings.writeback.max_new_suggestions,
                    on_recovery=settings.writeback.on_recovery,
                    allow_recovery=verdict != "degraded",
                    as_of=as_of.isoformat(),
                )
                counts = writeback.apply_plan(con, tracker, plan, run_id)
            return {
                "counts": counts,
                "items": [
                    {"fingerprint": p.fingerprint, "action": p.action, "reason": p.reason}
                    for p in plan
                ],
            }

        plan = timed("write_back", write_back_step)
    except Exception:
        finish_run(settings, run_id, "failed", None, None, {})
        raise
    failed = [v.relation or v.table for v in verdicts if v.verdict == "fail"]
    summary = {"as_of": as_of.isoformat(), "dq_verdict": verdict, "timings": timings}
    finish_run(
        settings,
        run_id,
        "degraded" if verdict == "degraded" else "completed",
        as_of.isoformat(),
        verdict,
        summary,
    )
    return {
        "dq_verdict": verdict,
        "dq_failed": failed,
        "timings": timings,
        "loads": {k: v["files_loaded"] for k, v in loads.items()},
        "plan": plan,
    }


def read_suggestions(settings: Any, as_of: date) -> list[dict[str, Any]]:
    from tasks import db

    with db.warehouse(settings.duckdb_path, read_only=True) as con:
        rel = con.execute(
            "select feature_key, kind, fingerprint, priority_rank, priority_score, is_blocked "
            "from marts.backlog_suggestions where as_of_date = ?::date order by priority_rank",
            [as_of.isoformat()],
        )
        cols = [d[0] for d in rel.description]
        return [dict(zip(cols, r, strict=True)) for r in rel.fetchall()]


def read_tracker(tracker_dir: Path) -> list[dict[str, Any]]:
    """Issue files of the Markdown tracker: file name, fingerprint marker, front-matter status."""
    from tasks.trackers.base import MARKER_PREFIX

    marker = re.compile(rf"<!-- {re.escape(MARKER_PREFIX)}(\S+) -->")
    out = []
    for path in sorted(Path(tracker_dir).glob("*.md")):
        text = path.read_text(encoding="utf-8")
        m = marker.search(text)
        s = _FRONT_STATUS.search(text)
        out.append(
            {
                "file": path.name,
                "fingerprint": m.group(1) if m else None,
                "status": (s.group(1) if s else "") or "open",
            }
        )
    return out


def replay_world(
    world_dir: Path,
    run_dir: Path,
    truth: dict[str, Any],
    options: ReplayOptions = ReplayOptions(),
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Replay the world's last nights; returns the night table (suggestions, tracker, timings)."""
    say = progress or log.info
    settings, notes = prepare_run(world_dir, run_dir, options)
    end = date.fromisoformat(truth["end_date"])
    nights = []
    for night in range(1, options.nights + 1):
        as_of = end - timedelta(days=options.nights - night)
        added = make_visible(world_dir, run_dir / "visible", as_of)
        t0 = time.perf_counter()
        result = run_night(settings, as_of, f"eval-{truth['world']}-{as_of.isoformat()}", options)
        seconds = round(time.perf_counter() - t0, 2)
        suggestions = read_suggestions(settings, as_of)
        nights.append(
            {
                "night": night,
                "as_of": as_of.isoformat(),
                "files_added": added,
                "seconds": seconds,
                **result,
                "suggestions": suggestions,
                "tracker": read_tracker(settings.writeback.tracker_dir),
            }
        )
        say(
            f"{truth['world']} night {night:2d} ({as_of}): {seconds:5.1f}s, "
            f"dq {result['dq_verdict']}, {len(suggestions)} suggestion(s): "
            + (", ".join(f"{s['kind']}:{s['feature_key']}" for s in suggestions[:5]) or "-")
        )
    return {"world": truth["world"], "notes": notes, "validate": options.validate, "nights": nights}
