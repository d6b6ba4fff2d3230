"""Bad settings: every case must stop at once with exit 2, one line on stderr (no traceback)
and nothing loaded (no warehouse file created or changed)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.drill.common import Trial, config_text, new_trial_dir, nightly_args, run_cli

SECTION = "settings"


@dataclass(frozen=True)
class Case:
    name: str
    config: str | None = None  # full TOML text; None = the valid drill config
    env: dict[str, str] = field(default_factory=dict)
    config_arg: str | None = None  # a --config argument other than config.toml
    prepare: str = ""  # "dir-config", "binary-config", "garbage-catalog", "dir-warehouse"


def _c(top: str = "", tables: str = "", **sources: str) -> str:
    return config_text(top, tables, sources)


CASES = [
    Case("malformed-toml", 'duckdb_path = "feedback.duckdb\n[demo\nenabled = false\n'),
    Case("unknown-top-level-key", _c('duckdb_pathh = "x.duckdb"')),
    Case("unknown-nested-key", _c(tables="[score]\nweigths = 1")),
    Case("window-days-wrong-type", _c('window_days = "four weeks"')),
    Case("window-days-too-small", _c("window_days = 3")),
    Case("window-days-too-large", _c("window_days = 500")),
    Case("window-days-float", _c("window_days = 28.5")),
    Case(
        "all-weights-zero",
        _c(
            tables="[score.weights]\nadoption = 0\nengagement = 0\nretention = 0\n"
            "support = 0\nbugs = 0\ntrend = 0"
        ),
    ),
    Case("negative-weight", _c(tables="[score.weights]\nbugs = -1.0")),
    Case("weight-as-string", _c(tables='[score.weights]\nbugs = "high"')),
    Case("weight-nan", _c(tables="[score.weights]\nbugs = nan")),
    Case("detection-zero-threshold", _c(tables="[score.detection]\ndrop_z = 0")),
    Case("unknown-reach", _c(tables='[score]\nreach = "revenue"')),
    Case("unknown-connector-table", _c(tables='[connectors.zendeskk]\nsubdomain = "acme"')),
    Case("connector-unknown-key", _c(tables='[connectors.zendesk]\nsubdomian = "acme"')),
    Case(
        "connector-wrong-type",
        _c(tables='[connectors.zendesk]\nsubdomain = "acme"\npage_size = "big"'),
    ),
    Case(
        "connector-missing-credentials",
        _c(tables='[connectors.zendesk]\nsubdomain = "acme"\nemail = "agent@acme.test"'),
    ),
    Case(
        "github-connector-missing-token",
        _c(
            tables='[connectors.github]\nowner = "acme"\nrepo = "app"\n'
            'token_env = "DRILL_NO_SUCH_TOKEN"'
        ),
    ),
    Case("connector-table-not-a-table", _c(tables='[connectors]\nzendesk = "acme"')),
    Case(
        "unwritable-warehouse",
        _c('duckdb_path = "/etc/hostname/feedback.duckdb"').replace(
            'duckdb_path = "feedback.duckdb"\n', "", 1
        ),
    ),
    Case(
        "unwritable-snapshot",
        _c().replace(
            'snapshot_path = "feedback_analyst.duckdb"',
            'snapshot_path = "/proc/drill/analyst.duckdb"',
        ),
    ),
    Case(
        "unwritable-tracker",
        _c().replace('tracker_dir = "tracker"', 'tracker_dir = "/etc/hostname/tracker"'),
    ),
    Case(
        "warehouse-is-a-directory",
        _c().replace('duckdb_path = "feedback.duckdb"', 'duckdb_path = "demo"'),
    ),
    Case("source-glob-matches-nothing", _c(posthog_events="demo/posthog/*.ndjson")),
    Case("bugs-glob-matches-nothing", _c(github_issues="nowhere/*.json")),
    Case(
        "optional-unknown-source",
        _c(tables="").replace("[writeback]", 'optional = ["nope"]\n[writeback]'),
    ),
    Case("catalog-missing", _c('catalog_path = "no-such-features.yaml"')),
    Case("catalog-garbage", _c('catalog_path = "garbage.yaml"'), prepare="garbage-catalog"),
    Case("catalog-is-a-directory", _c('catalog_path = "demo"')),
    Case("unknown-tracker", _c().replace("[writeback]", '[writeback]\ntracker = "jiraa"')),
    Case(
        "github-tracker-without-table",
        _c().replace("[writeback]", '[writeback]\ntracker = "github"'),
    ),
    Case("max-new-negative", _c().replace("[writeback]", "[writeback]\nmax_new_suggestions = -1")),
    Case("empty-hash-salt", _c('hash_salt = "  "')),
    Case("memory-limit-garbage", _c('duckdb_memory_limit = "lots"')),
    Case("config-file-missing", config_arg="no-such-config.toml"),
    Case("config-is-a-directory", config_arg="demo"),
    Case("config-not-utf8", prepare="binary-config"),
    Case("env-override-wrong-type", env={"FEEDBACK_LOOP_WINDOW_DAYS": "abc"}),
    Case("env-override-unknown-key", env={"FEEDBACK_LOOP_WINDOWDAYS": "28"}),
]


def _duckdb_files(d: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in d.rglob("*.duckdb*")}


def trial(spec: dict) -> Trial:
    case: Case = spec["case"]
    d = new_trial_dir(Path(spec["work"]), f"settings-{case.name}", Path(spec["world"]))
    cfg = d / "config.toml"
    cfg.write_text(case.config if case.config is not None else config_text(), encoding="utf-8")
    if case.prepare == "garbage-catalog":
        (d / "garbage.yaml").write_text("features: [unclosed\n  - : : :\n", encoding="utf-8")
    if case.prepare == "binary-config":
        cfg.write_bytes(b"\xff\xfe\x00duckdb_path = \x80\x81\n")
    before = _duckdb_files(d)
    config_arg = str(d / case.config_arg) if case.config_arg else str(cfg)
    run = run_cli(d, nightly_args(Path(config_arg)), env=case.env, timeout=120)
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    problems = []
    if run.rc != 2:
        problems.append(f"exit {run.rc}, not 2")
    if "Traceback" in run.stderr:
        problems.append("traceback on stderr")
    if len(lines) != 1:
        problems.append(f"{len(lines)} stderr lines, not 1")
    if _duckdb_files(d) != before:
        problems.append("a warehouse file was created or changed")
    detail = "; ".join(problems)
    if lines:
        detail += f"{' — ' if problems else ''}stderr: {lines[0][:160]}"
    return Trial(SECTION, case.name, not problems, detail, run.seconds)
