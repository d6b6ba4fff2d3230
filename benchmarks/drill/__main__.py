"""`python -m benchmarks.drill [--jobs N] [--only crash,faults,...] [--quick]`: run the drill."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import zlib
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path

from benchmarks.drill import badinput, badsettings, common, crash, faults
from benchmarks.drill.common import Trial

SECTIONS = ("crash", "faults", "inputs", "settings", "secrets")
TARGETS = {
    "crash": "0 trials with a lost, duplicated or different row or issue",
    "faults": "100% per connector",
    "inputs": "0 cases stop other sources or later runs",
    "settings": "100% exit 2, one line, nothing loaded",
    "secrets": "0 findings",
}
# --quick: a spread of every section in about a third of the time.
QUICK_INPUTS = (
    "ph-invalid-utf8-line",
    "zd-page-without-tickets",
    "gh-rate-limit-message",
    "ph-gzip-named-jsonl",
    "zd-unknown-priority",
    "gh-page-as-object",
    "ph-binary-file",
    "zd-tickets-as-object",
    "ph-event-as-object",
    "zd-truncated-json",
    "ph-missing-uuid",
    "ph-crlf",
)


def _init_worker() -> None:
    # Fault trials run connectors in this process: every retry wait is requested, none is long.
    from benchmarks.drill.hook import cap_sleeps

    cap_sleeps(0.02)


def _run(fn_name: str, spec: dict) -> Trial | dict:
    module, fn = fn_name.rsplit(".", 1)
    import importlib

    try:
        return getattr(importlib.import_module(module), fn)(*([spec] if spec is not None else []))
    except Exception as exc:  # a harness error is reported as a failed trial, never hidden
        import traceback

        section = spec.get("section", "?") if isinstance(spec, dict) else "?"
        name = spec.get("name", fn_name) if isinstance(spec, dict) else fn_name
        return Trial(
            section, name, False, f"harness error: {exc!r} {traceback.format_exc()[-400:]}"
        )


def _reference(work: str, world: str) -> dict:
    return crash.reference(Path(work), Path(world))


def plan(args: argparse.Namespace) -> dict:
    quick = args.quick
    return {
        "crash_points": args.crash_points or (6 if quick else 20),
        "fault_seeds": args.fault_seeds or (2 if quick else 6),
        "inputs": sorted(
            (c for c in badinput.CASES if not quick or c.name in QUICK_INPUTS),
            key=lambda c: QUICK_INPUTS.index(c.name) if c.name in QUICK_INPUTS else 99,
        )[: args.inputs or None],
        "settings": badsettings.CASES,
    }


def run_drill(args: argparse.Namespace) -> tuple[list[Trial], dict]:
    only = set(args.only.split(",")) if args.only else set(SECTIONS)
    unknown = only - set(SECTIONS)
    if unknown:
        raise SystemExit(f"--only: unknown section(s) {sorted(unknown)}; use {','.join(SECTIONS)}")
    p = plan(args)
    work = Path(tempfile.mkdtemp(prefix="drill-", dir=args.workdir))
    world = common.world_template(work)
    meta: dict = {"work": str(work), "world": common.WORLD, "plan": {}}
    spec0 = {"work": str(work), "world": str(world)}
    results: list[Trial] = []
    pending: dict[Future, str] = {}
    with ProcessPoolExecutor(max_workers=args.jobs, initializer=_init_worker) as pool:

        def submit(fn: str, spec: dict, label: str) -> None:
            pending[pool.submit(_run, fn, spec)] = label

        need_ref = bool(only & {"crash", "inputs"})
        ref_future = pool.submit(_reference, str(work), str(world)) if need_ref else None
        if "secrets" in only:
            submit("benchmarks.drill.secrets.trial", {**spec0, "section": "secrets"}, "secrets")
        if "settings" in only:
            for case in p["settings"]:
                submit(
                    "benchmarks.drill.badsettings.trial",
                    {**spec0, "case": case, "section": "settings", "name": case.name},
                    "settings",
                )
        if "faults" in only:
            for vendor in faults.VENDORS:
                for seed in range(1, p["fault_seeds"] + 1):
                    submit(
                        "benchmarks.drill.faults.trial",
                        {
                            **spec0,
                            "vendor": vendor,
                            "seed": seed * 7919 + zlib.crc32(vendor.encode()) % 1000,
                            "section": "faults",
                            "name": f"{vendor}#{seed}",
                        },
                        "faults",
                    )
        ref = None
        while pending or (ref_future is not None and ref is None):
            waiting = set(pending) | (
                {ref_future} if ref_future is not None and ref is None else set()
            )
            done, _ = wait(waiting, return_when=FIRST_COMPLETED)
            for fut in done:
                if fut is ref_future:
                    ref = fut.result()
                    meta["reference"] = {k: ref[k] for k in ("state", "rc", "counts", "seconds")}
                    if ref["state"] not in ("completed", "degraded"):
                        results.append(
                            Trial(
                                "crash",
                                "reference run",
                                False,
                                f"reference run {ref['state']}: "
                                f"{badinput._error_line(ref['stderr_tail'])[:300]}",
                            )
                        )
                        continue
                    if "crash" in only:
                        points = crash.choose_points(ref["counts"], p["crash_points"], args.seed)
                        meta["plan"]["crash_points"] = points
                        for point in [crash.CONTROL, *points]:
                            submit(
                                "benchmarks.drill.crash.trial",
                                {
                                    **spec0,
                                    "point": point,
                                    "ref": ref,
                                    "section": "crash",
                                    "name": point,
                                },
                                "crash",
                            )
                    if "inputs" in only:
                        counts = {t: v[0] for t, v in ref["tables"].items()}
                        size = max(1, args.inputs_group)
                        # Cases dealt round robin into groups of about `size` (sources mixed).
                        n_groups = -(-len(p["inputs"]) // size)
                        groups = [p["inputs"][i::n_groups] for i in range(n_groups)]
                        for gi, group in enumerate(groups):
                            if len(group) == 1:
                                fn, extra = (
                                    "benchmarks.drill.badinput.trial",
                                    {
                                        "case": group[0].name,
                                        "name": group[0].name,
                                    },
                                )
                            else:
                                fn, extra = (
                                    "benchmarks.drill.badinput.group_trial",
                                    {
                                        "cases": [c.name for c in group],
                                        "group": gi,
                                        "name": f"group {gi}",
                                    },
                                )
                            submit(
                                fn,
                                {
                                    **spec0,
                                    **extra,
                                    "ref_counts": counts,
                                    "ref_keys": ref["keys"],
                                    "section": "inputs",
                                },
                                "inputs",
                            )
                    continue
                pending.pop(fut)
                got = fut.result()
                for trial in got if isinstance(got, list) else [got]:
                    results.append(trial)
                    mark = "ok  " if trial.passed else "FAIL"
                    print(
                        f"[{trial.section:8}] {mark} {trial.name} ({trial.seconds:.0f}s) "
                        f"{trial.detail[:160]}",
                        flush=True,
                    )
    crash.judge_against_control([t for t in results if t.section == "crash"])
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return results, meta


def report(results: list[Trial], meta: dict, args: argparse.Namespace, seconds: float) -> str:
    lines = [
        "# Drill report",
        "",
        f"Mode: {'--quick' if args.quick else 'full'}; jobs {args.jobs}; seed {args.seed}; "
        f"world {meta['world']}; wall time {seconds / 60:.1f} min.",
        "",
        "| section | trials/cases | passed | failed | target |",
        "|---|---:|---:|---:|---|",
    ]
    by = {s: [t for t in results if t.section == s] for s in SECTIONS}
    for s in SECTIONS:
        ts = by[s]
        if not ts:
            continue
        ok = sum(t.passed for t in ts)
        lines.append(f"| {s} | {len(ts)} | {ok} | {len(ts) - ok} | {TARGETS[s]} |")
    fts = by["faults"]
    if fts:
        lines += [
            "",
            "Fault injection per connector (share of trials passing; faults injected / requests):",
            "",
        ]
        for vendor in faults.VENDORS:
            vt = [
                t for t in fts if t.extra.get("vendor") == vendor or t.name.startswith(vendor + "#")
            ]
            if vt:
                nf = sum(t.extra.get("faults", 0) for t in vt)
                nr = sum(t.extra.get("requests", 0) for t in vt)
                kinds = sorted({k for t in vt for k in t.extra.get("kinds", [])})
                lines.append(
                    f"- {vendor}: {100 * sum(t.passed for t in vt) / len(vt):.0f}% "
                    f"({sum(t.passed for t in vt)}/{len(vt)}; {nf}/{nr} requests faulted"
                    f"{f' = {100 * nf / nr:.0f}%' if nr else ''}; kinds: {', '.join(kinds)})"
                )
        if faults.NOT_COVERED:
            lines.append(f"- not covered yet (no fault trial): {', '.join(faults.NOT_COVERED)}")
    control = next((t for t in by["crash"] if t.name == crash.CONTROL), None)
    if control is not None and not control.passed:
        lines += [
            "",
            f"The no-kill control ({crash.CONTROL}: two uninterrupted runs compared with the "
            "reference) differs too: run-to-run nondeterminism, not crash damage; the tables it "
            "names are not held against the kill trials.",
        ]
    failing = [t for t in results if not t.passed]
    if failing:
        lines += ["", "## Failing cases", ""]
        for s in SECTIONS:
            for t in (t for t in failing if t.section == s):
                lines.append(f"- **{s} / {t.name}**: {t.detail}")
    if meta.get("plan", {}).get("crash_points"):
        lines += [
            "",
            "Crash kill points (target:call:before|after): "
            + ", ".join(meta["plan"]["crash_points"]),
        ]
    lines += [
        "",
        f"Columns excluded from comparisons: {', '.join(sorted(common.EXCLUDED_COLUMNS))}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.drill", description=__doc__)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--only", default="", help=f"comma-separated subset of {','.join(SECTIONS)}")
    ap.add_argument("--quick", action="store_true", help="fewer crash points, seeds and inputs")
    ap.add_argument("--seed", type=int, default=20261207, help="seed of the kill-point choice")
    ap.add_argument("--crash-points", type=int, default=0)
    ap.add_argument("--fault-seeds", type=int, default=0)
    ap.add_argument("--inputs", type=int, default=0, help="only the first N bad-input cases")
    ap.add_argument(
        "--inputs-group",
        type=int,
        default=8,
        help="bad-input cases per nightly run (1 = one run pair per case); a failing group is "
        "rerun case by case",
    )
    ap.add_argument("--workdir", default=None, help="where trial folders go (default: $TMPDIR)")
    ap.add_argument("--keep", action="store_true", help="keep the trial folders")
    ap.add_argument("--out", default=str(common.REPO / "data" / "drill" / "report.md"))
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    results, meta = run_drill(args)
    text = report(results, meta, args, time.perf_counter() - t0)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print()
    print(text)
    print(f"report: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
