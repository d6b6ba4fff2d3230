"""Run the scenario suite: generate each world, replay it, score it; report and check targets.

Worlds run in separate processes (`jobs`, spawned: a DuckDB or GX state never crosses a fork).
Outputs under `out`: worlds/<name>/ (the generated files), runs/<name>/ (warehouse, tracker,
settings of the replay), report.md (the table) and nights.json (every night's suggestions,
tracker files, data-quality verdict and timings, plus the scores, for debugging).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from tasks.evaluation.metrics import score_world
from tasks.evaluation.replay import ReplayOptions, fresh_dir, replay_world
from tasks.evaluation.worlds import DEFAULT_SEED, DEFAULT_USERS, WORLDS, generate_world

REPORT = "report.md"
NIGHTS = "nights.json"


def _quiet_logs() -> None:
    """Warnings and errors only: GX sets its own loggers to INFO when it is imported."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.setLevel(logging.WARNING)


def evaluate_world(
    name: str,
    out: Path,
    *,
    users: int = DEFAULT_USERS,
    seed: int = DEFAULT_SEED,
    validate: bool = True,
    verbose: bool = True,
) -> dict[str, Any]:
    """Generate, replay and score one world (runs in a worker process)."""
    _quiet_logs()

    def say(msg: str) -> None:
        if verbose:
            print(f"  {msg}", file=sys.stderr, flush=True)  # noqa: T201

    t0 = time.perf_counter()
    world_dir = fresh_dir(Path(out) / "worlds" / name)
    truth = generate_world(name, world_dir, users=users, seed=seed)
    generated = round(time.perf_counter() - t0, 2)
    say(f"{name}: generated {truth['rows']['posthog_events']:,} events in {generated}s")
    replay = replay_world(
        world_dir, Path(out) / "runs" / name, truth, ReplayOptions(validate=validate), say
    )
    score = score_world(truth, replay["nights"])
    return {
        "world": name,
        "truth": {k: v for k, v in truth.items() if k not in ("daily_users",)},
        "generate_seconds": generated,
        "replay": replay,
        "score": score.as_dict(),
    }


def run_suite(
    names: list[str],
    out: Path,
    *,
    users: int | dict[str, int] = DEFAULT_USERS,
    seed: int = DEFAULT_SEED,
    validate: bool = True,
    jobs: int = 1,
    verbose: bool = True,
    on_done: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Evaluate the worlds (in up to `jobs` processes); results in the order of `names`.
    `users`: one size for every world, or a size per world name."""
    unknown = [n for n in names if n not in WORLDS]
    if unknown:
        raise KeyError(f"unknown world(s): {', '.join(unknown)}; known: {', '.join(WORLDS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sizes = users if isinstance(users, dict) else dict.fromkeys(names, users)
    kwargs = {"seed": seed, "validate": validate, "verbose": verbose}
    results: dict[str, dict[str, Any]] = {}
    if jobs <= 1 or len(names) == 1:
        for name in names:
            results[name] = evaluate_world(name, out, users=sizes[name], **kwargs)
            if on_done:
                on_done(results[name])
    else:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(jobs, len(names)), mp_context=ctx) as pool:
            futures = {
                pool.submit(evaluate_world, n, out, users=sizes[n], **kwargs): n for n in names
            }
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                if on_done:
                    on_done(results[futures[future]])
    ordered = [results[n] for n in names]
    write_outputs(ordered, out, {"users": sizes, "seed": seed, "validate": validate, "jobs": jobs})
    return ordered


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def _night_seconds(result: dict[str, Any]) -> list[float]:
    return [n["seconds"] for n in result["replay"]["nights"]]


def summary_rows(results: list[dict[str, Any]]) -> list[dict[str, str]]:
    rows = []
    for r in results:
        s = r["score"]
        latency = ", ".join(
            f"{p['feature_key']} {'-' if p['latency'] is None else p['latency']}"
            for p in s["problems"]
        )
        issues = ", ".join(
            f"{p['feature_key']} {s['issues'].get(p['feature_key'] + '/' + p['family'], 0)}"
            for p in s["problems"]
        )
        secs = _night_seconds(r)
        rows.append(
            {
                "world": r["world"],
                "expected": s["expected"],
                "recall@1": _pct(s["recall1"]),
                "recall@3": _pct(s["recall3"]),
                "right kind": _pct(s["right_kind"]),
                "nights to detect": latency or "-",
                "false alarms": str(len(s["false_alarms"]))
                + (f" ({', '.join(s['false_alarms'])})" if s["false_alarms"] else ""),
                "flaps": str(sum(s["flaps"].values())),
                "issues per problem": issues or f"- ({sum(s['issues'].values())} files)",
                "night s (mean / max)": f"{statistics.mean(secs):.1f} / {max(secs):.1f}",
                "targets": "PASS" if s["ok"] else "FAIL",
            }
        )
    return rows


def markdown_table(rows: list[dict[str, str]]) -> str:
    if not rows:
        return "(no worlds)\n"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(r[c].replace("|", "/") for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _git_head() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _sizes(results: list[dict[str, Any]]) -> str:
    sizes = sorted({r["truth"]["users"] for r in results})
    return " / ".join(f"{n:,}" for n in sizes)


def report_markdown(results: list[dict[str, Any]], params: dict[str, Any]) -> str:
    from tasks import transform

    n_ok = sum(r["score"]["ok"] for r in results)
    lines = [
        "# Scenario suite: planted worlds",
        "",
        f"{n_ok} of {len(results)} world(s) meet every target. Scoring "
        f"`{getattr(transform, 'FORMULA_VERSION', '?')}`, code {_git_head()}; "
        f"{_sizes(results)} users per world, seed {params['seed']}, Great Expectations gates "
        f"{'on' if params['validate'] else 'OFF (--no-validate)'}.",
        "",
        markdown_table(summary_rows(results)),
        "Targets: recall@3 = 100%; no suggestion on the noise-only world; at most 1 false alarm "
        "elsewhere; detection at most 3 nights after onset for drops >= 20% on features with "
        ">= 200 daily users; 0 flaps; exactly one tracker issue per planted problem. "
        "Definitions: README, *Evaluation: planted scenarios*.",
        "",
        "## Misses",
        "",
    ]
    misses = [(r["world"], m) for r in results for m in r["score"]["misses"]]
    lines += [f"- **{w}**: {m}" for w, m in misses] or ["none"]
    lines += ["", "## Problems night by night", ""]
    lines.append("Rank of the matching suggestion per night (`.` = not suggested), kind letter.")
    lines.append("")
    for r in results:
        for p in r["score"]["problems"]:
            cells = [
                "." if rank is None else f"{rank}{(kind or '?')[0]}"
                for rank, kind in zip(p["ranks"], p["kinds"], strict=True)
            ]
            lines.append(
                f"- {r['world']} / {p['feature_key']} ({p['expected_kind']}, onset night "
                f"{p['onset_night']}, due {p['due_night']}): `{' '.join(cells)}`"
            )
    lines += ["", "## Notes", ""]
    notes = [(r["world"], n) for r in results for n in r["replay"]["notes"]]
    degraded = [
        (r["world"], n["night"], ", ".join(n["dq_failed"]))
        for r in results
        for n in r["replay"]["nights"]
        if n["dq_verdict"] == "degraded"
    ]
    lines += [f"- {w}: {n}" for w, n in notes]
    lines += [f"- {w} night {n}: data quality degraded ({why})" for w, n, why in degraded]
    if not notes and not degraded:
        lines.append("none")
    lines += ["", "## Night wall time (seconds)", ""]
    n_nights = max((len(r["replay"]["nights"]) for r in results), default=0)
    header = "| world | " + " | ".join(str(i) for i in range(1, n_nights + 1)) + " | total |"
    lines += [header, "|---" * (n_nights + 2) + "|"]
    for r in results:
        secs = _night_seconds(r)
        lines.append(
            f"| {r['world']} | " + " | ".join(f"{s:.1f}" for s in secs) + f" | {sum(secs):.0f} |"
        )
    lines += ["", "Median seconds per step and night:", ""]
    steps: dict[str, list[float]] = {}
    for r in results:
        for n in r["replay"]["nights"]:
            for k, v in n["timings"].items():
                steps.setdefault(k, []).append(v)
    lines.append(", ".join(f"{k} {statistics.median(v):.2f}" for k, v in steps.items()))
    return "\n".join(lines) + "\n"


def write_outputs(results: list[dict[str, Any]], out: Path, params: dict[str, Any]) -> None:
    (out / REPORT).write_text(report_markdown(results, params), encoding="utf-8")
    (out / NIGHTS).write_text(
        json.dumps({"params": params, "worlds": results}, indent=1, default=str) + "\n",
        encoding="utf-8",
    )
