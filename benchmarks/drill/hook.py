"""Child entry point of the drill: `python -m benchmarks.drill.hook <flows.cli args...>`.

Test-only hooks, configured by environment variables, installed before the CLI runs:

- DRILL_KILL="<target>:<n>:<before|after>": SIGKILL this process on the n-th call of `target`
  (entry or return). Targets are named in TARGETS (module attribute or class method).
- DRILL_COUNT=<file>: count the calls of every target and write {target: n} as JSON at exit
  (used by the reference run to choose reachable kill points).
- DRILL_MAX_SLEEP=<seconds>: cap every sleep of the HTTP client layer (retry back-off and
  Retry-After waits) so fault trials never wait real minutes; the waits are still requested.
"""

from __future__ import annotations

import atexit
import functools
import importlib
import json
import os
import signal
import sys
import time

# Kill targets across load, validation, scoring, write-back and snapshot publishing. Each is
# called through its module attribute (or is a method), so patching the attribute intercepts it.
TARGETS = {
    "load._merge_raw": ("tasks.load.merge", None, "_merge_raw"),
    "load._record_files": ("tasks.load.files", None, "_record_files"),
    "load._advance_cursor": ("tasks.load.cursor", None, "_advance_cursor"),
    "load._refresh_file_cursor": ("tasks.load.cursor", None, "_refresh_file_cursor"),
    "transform.build_staging": ("tasks.transform", None, "build_staging"),
    "validation.validate_table": ("tasks.validation", None, "validate_table"),
    "quality.check_inputs": ("tasks.quality", None, "check_inputs"),
    "quality.check_marts": ("tasks.quality", None, "check_marts"),
    "catalog.publish_catalog": ("tasks.catalog", None, "publish_catalog"),
    "transform.build_marts": ("tasks.transform", None, "build_marts"),
    "writeback.plan_writeback": ("tasks.writeback", None, "plan_writeback"),
    "writeback.apply_plan": ("tasks.writeback", None, "apply_plan"),
    "writeback._apply_item": ("tasks.writeback", None, "_apply_item"),
    "writeback._ledger_upsert": ("tasks.writeback", None, "_ledger_upsert"),
    "markdown.MarkdownTracker._write": ("tasks.trackers.markdown", "MarkdownTracker", "_write"),
    "markdown.MarkdownTracker._replace": (
        "tasks.trackers.markdown",
        "MarkdownTracker",
        "_replace",
    ),
    "db.publish_snapshot": ("tasks.db", None, "publish_snapshot"),
}

_counts: dict[str, int] = {}


def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _wrap(name: str, fn, kill: tuple[str, int, str] | None):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        _counts[name] = n = _counts.get(name, 0) + 1
        hit = kill is not None and kill[0] == name and kill[1] == n
        if hit and kill[2] == "before":
            _die()
        result = fn(*args, **kwargs)
        if hit:
            _die()
        return result

    return wrapper


def install(kill_spec: str | None, count_file: str | None) -> None:
    kill = None
    if kill_spec:
        target, n, when = kill_spec.split(":")
        kill = (target, int(n), when)
    if kill is None and not count_file:
        return
    for name, (module_name, cls_name, attr) in TARGETS.items():
        if kill is not None and kill[0] != name and not count_file:
            continue
        module = importlib.import_module(module_name)
        owner = getattr(module, cls_name) if cls_name else module
        raw = owner.__dict__[attr]
        if isinstance(raw, staticmethod):
            setattr(owner, attr, staticmethod(_wrap(name, raw.__func__, kill)))
        else:
            setattr(owner, attr, _wrap(name, raw, kill))
    if count_file:

        def dump() -> None:
            with open(count_file, "w", encoding="utf-8") as fh:
                json.dump(_counts, fh)

        atexit.register(dump)


def cap_sleeps(max_s: float) -> None:
    """Every `time.sleep` of this process takes at most `max_s` seconds: retry back-off and
    Retry-After waits are still requested (and counted by the fakes), never waited for real.
    Installed before any client module binds `time.sleep` as a default argument."""
    real = time.sleep

    def short_sleep(seconds: float) -> None:
        real(min(max(0.0, seconds), max_s))

    time.sleep = short_sleep


def main(argv: list[str]) -> int:
    if os.environ.get("DRILL_MAX_SLEEP"):
        cap_sleeps(float(os.environ["DRILL_MAX_SLEEP"]))
    import flows  # noqa: F401  (Prefect/GX defaults before anything else)

    install(os.environ.get("DRILL_KILL"), os.environ.get("DRILL_COUNT"))
    from flows.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
