"""Crash drill: SIGKILL the nightly at seeded kill points, rerun, compare with a clean run."""

from __future__ import annotations

import json
import random
from pathlib import Path

from benchmarks.drill.badinput import raw_keys
from benchmarks.drill.common import (
    Trial,
    diff_snapshots,
    diff_tables,
    new_trial_dir,
    nightly_args,
    run_cli,
    run_state,
    table_hashes,
    tracker_issues,
    write_config,
)

SECTION = "crash"
CONTROL = "control-no-kill"


def reference(work: Path, world: Path) -> dict:
    """One uninterrupted run that also counts the calls of every kill target."""
    trial = new_trial_dir(work, "crash-reference", world)
    config = write_config(trial)
    counts_file = trial / "counts.json"
    run = run_cli(trial, nightly_args(config), env={"DRILL_COUNT": str(counts_file)})
    counts = json.loads(counts_file.read_text()) if counts_file.exists() else {}
    return {
        "state": run_state(run),
        "rc": run.rc,
        "stderr_tail": run.stderr[-2000:],
        "counts": counts,
        "tables": table_hashes(trial / "feedback.duckdb", trial),
        "issues": tracker_issues(trial / "tracker", trial),
        "keys": raw_keys(trial / "feedback.duckdb"),
        "seconds": run.seconds,
    }


def choose_points(counts: dict[str, int], n: int, seed: int) -> list[str]:
    """`n` distinct kill points target:call:before|after, spread over every reachable target
    (round robin over a seeded shuffle), the call number drawn at random."""
    rng = random.Random(seed)
    targets = sorted(t for t, c in counts.items() if c > 0)
    rng.shuffle(targets)
    space = [
        (t, k, w) for t in targets for k in range(1, counts[t] + 1) for w in ("before", "after")
    ]
    n = min(n, len(space))
    chosen: list[str] = []
    i = 0
    while len(chosen) < n:
        t = targets[i % len(targets)]
        i += 1
        options = [f"{t}:{k}:{w}" for (tt, k, w) in space if tt == t]
        options = [o for o in options if o not in chosen]
        if options:
            chosen.append(rng.choice(options))
    return chosen


def trial(spec: dict) -> Trial:
    point, work, world, ref = spec["point"], Path(spec["work"]), Path(spec["world"]), spec["ref"]
    d = new_trial_dir(work, f"crash-{point}", world)
    config = write_config(d)
    # "control": the same two runs without a kill — separates crash damage from plain
    # run-to-run nondeterminism (a table that differs here differs without any crash).
    env = {} if point == CONTROL else {"DRILL_KILL": point}
    killed = run_cli(d, nightly_args(config), env=env)
    seconds = killed.seconds
    if point != CONTROL and not killed.killed:
        return Trial(
            SECTION,
            point,
            False,
            f"kill point not reached (exit {killed.rc}, {run_state(killed)})",
            seconds,
        )
    rerun = run_cli(d, nightly_args(config))
    seconds += rerun.seconds
    state = run_state(rerun)
    problems = []
    if state not in ("completed", ref["state"]):
        problems.append(f"rerun ended {state} (reference {ref['state']})")
    problems += diff_snapshots(
        table_hashes(d / "feedback.duckdb", d),
        ref["tables"],
        tracker_issues(d / "tracker", d),
        ref["issues"],
    )
    return Trial(
        SECTION, point, not problems, "; ".join(problems[:6]), seconds, extra={"problems": problems}
    )


def judge_against_control(trials: list[Trial]) -> None:
    """A table that also differs in the no-kill control differs without any crash (run-to-run
    nondeterminism): its differences are reported, not counted against a crash trial."""
    control = next((t for t in trials if t.name == CONTROL), None)
    if control is None:
        return
    unstable = diff_tables(control.extra.get("problems", []))
    for t in trials:
        if t is control or "problems" not in t.extra:
            continue
        own = [p for p in t.extra["problems"] if p.split(":", 1)[0] not in unstable]
        shared = [p for p in t.extra["problems"] if p not in own]
        t.passed = not own
        t.detail = "; ".join(own[:6]) + (
            f"{' — ' if own else ''}also without a kill: {', '.join(sorted(diff_tables(shared)))}"
            if shared
            else ""
        )
