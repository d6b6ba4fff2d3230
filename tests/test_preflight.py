"""Preflight: every bad setting, table, credential, catalog or output path stops `feedback-loop
run` with one line on stderr and exit code 2, before anything is loaded or written."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import duckdb
import pytest

from flows.cli import main
from tasks.doctor import credential_env_vars
from tasks.preflight import preflight
from tasks.settings import PROJECT_ROOT, ConfigError, load_settings

BASE = """\
duckdb_path = "wh/feedback.duckdb"
snapshot_path = "wh/feedback_analyst.duckdb"
hash_salt = "test-salt"
[demo]
enabled = false
[sources]
posthog_events = "exports/posthog/*.jsonl"
zendesk_tickets = "exports/zendesk/*.json"
github_issues = "exports/github/*.json"
accounts = ""
[writeback]
tracker_dir = "tracker"
"""

VALID_CATALOG = """\
version: 1
features:
  - key: exports
    name: Exports
    events: [export_started]
"""


@pytest.fixture
def root(tmp_path: Path, monkeypatch) -> Path:
    """A folder with one export file per source and no FEEDBACK_LOOP_* / credential variables."""
    for name in list(os.environ):
        if name.startswith("FEEDBACK_LOOP_") or name in credential_env_vars():
            monkeypatch.delenv(name)
    for rel in ("posthog/a.jsonl", "zendesk/a.json", "github/a.json"):
        f = tmp_path / "exports" / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("", encoding="utf-8")
    (tmp_path / "blocker").write_text("a regular file: nothing can be created under it\n")
    return tmp_path


def _config(root: Path, body: str) -> Path:
    cfg = root / "config.toml"
    cfg.write_text(body, encoding="utf-8")
    return cfg


def _with(base: str, **tables: str) -> str:
    """BASE with lines set in a [table] ("top" = top level); a key already in BASE is replaced
    (BASE's keys are unique across its tables)."""
    text = base
    for table, lines in tables.items():
        lines = textwrap.dedent(lines).strip("\n") + "\n"
        for line in lines.splitlines():
            key = line.split("=", 1)[0].strip()
            text = "".join(
                old for old in text.splitlines(keepends=True) if old.split("=", 1)[0].strip() != key
            )
        if table == "top":
            text = lines + text
        else:
            header = f"[{table.replace('__', '.')}]\n"
            text = text.replace(header, header + lines) if header in text else text + header + lines
    return text


def _outputs(root: Path) -> dict[str, int]:
    """Every file under the places a run writes (warehouse folder, tracker), with its mtime."""
    out = {}
    for folder in (root / "wh", root / "tracker"):
        if folder.is_dir():
            out.update({str(p): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()})
    return out


# (case id, settings file body or a callable(root) -> body, extra argv/env, text the line names)
CASES: list[tuple[str, object, dict, list[str]]] = [
    ("bad_toml_syntax", "duckdb_path = \n", {}, ["not valid TOML", "config.toml"]),
    ("unknown_top_key", _with(BASE, top="windw_days = 28"), {}, ["windw_days", "unknown setting"]),
    (
        "unknown_nested_key_removed_setting",
        _with(BASE, sources='zendesk_subdomain = "acme"'),
        {},
        ["sources.zendesk_subdomain", "unknown setting", "allowed here:"],
    ),
    ("wrong_type", _with(BASE, top='window_days = "four"'), {}, ["window_days", "integer"]),
    ("window_days_too_small", _with(BASE, top="window_days = 3"), {}, ["window_days", "7"]),
    ("window_days_too_large", _with(BASE, top="window_days = 500"), {}, ["window_days", "120"]),
    (
        "window_days_cli_out_of_range",
        BASE,
        {"argv": ["--window-days", "3"]},
        ["--window-days", "7 to 120"],
    ),
    (
        "window_days_env_wrong_type",
        BASE,
        {"env": {"FEEDBACK_LOOP_WINDOW_DAYS": "abc"}},
        ["window_days", "set by FEEDBACK_LOOP_WINDOW_DAYS"],
    ),
    (
        "negative_weight",
        _with(BASE, score__weights="support = -1"),
        {},
        ["score.weights.support", ">= 0"],
    ),
    (
        "all_weights_zero",
        _with(
            BASE,
            score__weights="""
            adoption = 0
            engagement = 0
            retention = 0
            support = 0
            bugs = 0
            trend = 0
            """,
        ),
        {},
        ["score.weights", "every weight is 0"],
    ),
    ("nan_weight", _with(BASE, score__weights="bugs = nan"), {}, ["score.weights.bugs"]),
    ("zero_threshold", _with(BASE, score__detection="drop_z = 0"), {}, ["score.detection.drop_z"]),
    (
        "max_new_out_of_range",
        _with(BASE, writeback="max_new_suggestions = 99"),
        {},
        ["writeback.max_new_suggestions"],
    ),
    ("unknown_tracker", _with(BASE, writeback='tracker = "trello"'), {}, ["writeback.tracker"]),
    (
        "tracker_table_missing",
        _with(BASE, writeback='tracker = "github"'),
        {},
        ["writeback.github", "writeback.tracker"],
    ),
    (
        "tracker_credential_missing",
        _with(
            BASE,
            writeback='tracker = "github"',
            writeback__github='owner = "acme"\nrepo = "app"',
        ),
        {},
        ["writeback.github", "GITHUB_TOKEN"],
    ),
    (
        "unknown_connector",
        _with(BASE, connectors__trello='board = "x"'),
        {},
        ["connectors.trello", "unknown connector"],
    ),
    (
        "connector_required_field_missing",
        _with(BASE, connectors__github='owner = "acme"'),
        {"env": {"GITHUB_TOKEN": "ghp_test"}},
        ["connectors.github.repo", "Field required"],
    ),
    (
        "connector_wrong_type",
        _with(BASE, connectors__zendesk='subdomain = "acme"\npage_size = "big"'),
        {},
        ["connectors.zendesk.page_size"],
    ),
    (
        "connector_unknown_key_value_not_echoed",
        _with(BASE, connectors__posthog='project_id = "1"\napikey = "phx_SECRET_VALUE"'),
        {},
        ["connectors.posthog.apikey", "unknown setting"],
    ),
    (
        "posthog_unknown_mode",
        _with(BASE, connectors__posthog='project_id = "1"\nmode = "hourly_aggregates"'),
        {"env": {"POSTHOG_PERSONAL_API_KEY": "phx_test"}},
        ["connectors.posthog.mode", "'events' or 'daily_aggregates'"],
    ),
    (
        "connector_credential_env_missing",
        _with(BASE, connectors__github='owner = "acme"\nrepo = "app"'),
        {},
        ["connectors.github", "GITHUB_TOKEN"],
    ),
    (
        "connector_renamed_credential_env_missing",
        _with(BASE, connectors__sentry='org = "acme"\ntoken_env = "MY_SENTRY_TOKEN"'),
        {},
        ["connectors.sentry", "MY_SENTRY_TOKEN", "token_env"],
    ),
    (
        "connector_bad_url",
        _with(BASE, connectors__github='owner = "acme"\nrepo = "app"\nbase_url = "api.github"'),
        {"env": {"GITHUB_TOKEN": "ghp_test"}},
        ["connectors.github.base_url", "api.github"],
    ),
    (
        "connector_without_site",
        _with(BASE, connectors__zendesk='email = "a@b.test"'),
        {"env": {"ZENDESK_API_TOKEN": "zd"}},
        ["connectors.zendesk", "subdomain"],
    ),
    (
        "warehouse_dir_cannot_be_created",
        _with(BASE, top='duckdb_path = "blocker/sub/feedback.duckdb"'),
        {},
        ["duckdb_path", "blocker", "is a file"],
    ),
    (
        "warehouse_path_is_a_directory",
        _with(BASE, top='duckdb_path = "exports"'),
        {},
        ["duckdb_path", "is a directory"],
    ),
    (
        "snapshot_dir_cannot_be_created",
        _with(BASE, top='snapshot_path = "blocker/snap.duckdb"'),
        {},
        ["snapshot_path", "blocker"],
    ),
    (
        "snapshot_is_the_warehouse",
        _with(BASE, top='snapshot_path = "wh/feedback.duckdb"'),
        {},
        ["snapshot_path", "warehouse file itself"],
    ),
    (
        "tracker_dir_cannot_be_created",
        _with(BASE, writeback='tracker_dir = "blocker/tracker"'),
        {},
        ["writeback.tracker_dir", "blocker"],
    ),
    ("reports_dir_not_writable", "REPORTS_IS_A_FILE", {}, ["reports dir", "reports"]),
    (
        "glob_matches_nothing",
        _with(BASE, sources='zendesk_tickets = "nowhere/*.json"'),
        {},
        ["sources.zendesk_tickets", "no files match", "nowhere/*.json", "sources.optional"],
    ),
    (
        "optional_names_unknown_source",
        _with(BASE, sources='optional = ["zendesk"]'),
        {},
        ["sources.optional", "'zendesk'"],
    ),
    (
        "catalog_missing",
        _with(BASE, top='catalog_path = "missing.yaml"'),
        {},
        ["feature catalog not found", "missing.yaml"],
    ),
    ("catalog_invalid_yaml", "CATALOG:version: 1\nfeatures: [\n", {}, ["not valid YAML", "line"]),
    (
        "catalog_duplicate_feature",
        "CATALOG:" + VALID_CATALOG + "  - key: exports\n    name: Again\n",
        {},
        ["duplicate feature keys: exports"],
    ),
    (
        "catalog_pattern_text_kept",
        "CATALOG:version: 1\nfeatures:\n  - key: Bad Key\n    name: X\n",
        {},
        ["features.0.key", "'^[a-z][a-z0-9_]*$'"],
    ),
    ("hash_salt_empty", _with(BASE, top='hash_salt = " "'), {}, ["hash_salt", "must not be empty"]),
    (
        "hash_salt_env_empty",
        BASE,
        {"env": {"FEEDBACK_LOOP_HASH_SALT": ""}},
        ["hash_salt", "must not be empty", "set by FEEDBACK_LOOP_HASH_SALT"],
    ),
    (
        "memory_limit_not_a_size",
        _with(BASE, top='duckdb_memory_limit = "lots"'),
        {},
        ["duckdb_memory_limit", "lots"],
    ),
    (
        "report_url_unknown_placeholder",
        _with(BASE, writeback='report_url = "https://r.example/{date}.md"'),
        {},
        ["writeback.report_url", "{date}"],
    ),
    ("config_file_missing", None, {}, ["config file not found"]),
]


def _body(root: Path, spec: object) -> str | None:
    if spec == "REPORTS_IS_A_FILE":
        (root / "wh").mkdir(exist_ok=True)
        (root / "wh" / "reports").write_text("not a folder")
        return BASE
    if isinstance(spec, str) and spec.startswith("CATALOG:"):
        (root / "cat.yaml").write_text(spec.removeprefix("CATALOG:"), encoding="utf-8")
        return _with(BASE, top='catalog_path = "cat.yaml"')
    return spec  # type: ignore[return-value]


def test_the_table_has_at_least_25_cases():
    assert len(CASES) >= 25
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize(
    ("spec", "extra", "names"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_setting_is_one_line_exit_2_before_loading(
    root, monkeypatch, capsys, spec, extra, names
):
    body = _body(root, spec)
    cfg = _config(root, body) if body is not None else root / "missing.toml"
    for k, v in extra.get("env", {}).items():
        monkeypatch.setenv(k, v)
    before = _outputs(root)

    code = main(["run", "--config", str(cfg), *extra.get("argv", [])])

    captured = capsys.readouterr()
    if os.environ.get("SHOW_PREFLIGHT"):
        sys.__stderr__.write(captured.err)
    lines = captured.err.splitlines()
    assert code == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err
    for name in names:
        assert name in lines[0], f"{name!r} missing from: {lines[0]}"
    assert "SECRET_VALUE" not in captured.err + captured.out
    # Failed before loading: no warehouse, no tracker file, nothing changed.
    assert not (root / "wh" / "feedback.duckdb").exists()
    assert _outputs(root) == before


def test_a_valid_configuration_passes_and_leaves_nothing_behind(root):
    cfg = _config(root, BASE)
    settings = load_settings(cfg, environ={})
    before = sorted(p for p in root.rglob("*"))
    preflight(settings)
    assert sorted(p for p in root.rglob("*")) == before  # no folder made, temp files removed


def _root_cannot_write(folder: Path) -> bool:
    try:
        fd, name = tempfile.mkstemp(dir=folder)
    except OSError:
        return True
    os.close(fd)
    os.unlink(name)
    return False


@pytest.mark.skipif(not _root_cannot_write(Path("/sys")), reason="/sys is writable here")
def test_a_folder_even_root_cannot_write_is_named(root, capsys):
    """chmod does not stop root: /sys (sysfs) refuses new files to everyone, like a read-only
    mount; the real create+delete attempt catches it."""
    body = _with(BASE, writeback='tracker_dir = "/sys/feedback-loop-tracker"')
    assert main(["run", "--config", str(_config(root, body))]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert "writeback.tracker_dir: /sys/feedback-loop-tracker (in /sys) is not writable" in lines[0]
    assert not (root / "wh").exists()


def test_an_existing_output_folder_is_tested_itself(root):
    (root / "wh").mkdir()
    (root / "wh" / "reports").mkdir()
    preflight(load_settings(_config(root, BASE), environ={}))
    assert list((root / "wh" / "reports").iterdir()) == []


def test_an_optional_source_may_match_nothing(root):
    body = _with(BASE, sources='optional = ["zendesk_tickets", "accounts"]').replace(
        "exports/zendesk/*.json", "nowhere/*.json"
    )
    settings = load_settings(_config(root, body), environ={})
    preflight(settings)  # no error: listed as optional
    with pytest.raises(ConfigError, match="sources.zendesk_tickets: no files match"):
        preflight(
            settings.model_copy(
                update={"sources": settings.sources.model_copy(update={"optional": ["accounts"]})}
            )
        )


def test_accounts_are_optional_by_default_and_empty_globs_are_disabled(root):
    body = BASE.replace('accounts = ""', 'accounts = "nowhere/*.csv"').replace(
        "exports/github/*.json", ""
    )
    preflight(load_settings(_config(root, body), environ={}))


def test_a_source_the_run_does_not_pull_need_not_match(root):
    body = BASE.replace("exports/zendesk/*.json", "nowhere/*.json")
    settings = load_settings(_config(root, body), environ={})
    preflight(settings, sources=["usage", "bugs"])
    with pytest.raises(ConfigError, match="sources.zendesk_tickets"):
        preflight(settings, sources=["tickets"])


def test_demo_globs_are_checked_only_once_the_demo_data_exists(root):
    """Before the demo data is generated (no _manifest.json) the demo globs cannot match yet
    and are skipped, as tasks.steps.prepare_demo_data generates them after preflight."""
    body = BASE.replace("enabled = false", 'enabled = true\nout_dir = "demo"').replace(
        "exports/", "demo/"
    )
    settings = load_settings(_config(root, body), environ={})
    preflight(settings)
    (root / "demo").mkdir()
    (root / "demo" / "_manifest.json").write_text("{}")
    with pytest.raises(ConfigError, match="sources.posthog_events: no files match"):
        preflight(settings)


def test_connector_credentials_resolve_from_the_environment(root, monkeypatch):
    body = _with(BASE, connectors__zendesk='subdomain = "acme"')
    settings = load_settings(_config(root, body), environ={})
    with pytest.raises(ConfigError, match="ZENDESK_EMAIL") as exc:
        preflight(settings)
    assert "\n" not in str(exc.value)
    monkeypatch.setenv("ZENDESK_EMAIL", "agent@acme.test")
    with pytest.raises(ConfigError, match="set ZENDESK_API_TOKEN"):
        preflight(settings)
    monkeypatch.setenv("ZENDESK_API_TOKEN", "zd-token")
    preflight(settings)
    # OAuth needs only the OAuth token; a connector whose kind is not pulled needs none.
    oauth = _with(BASE, connectors__zendesk='subdomain = "acme"\nauth = "oauth"')
    oauth_settings = load_settings(_config(root, oauth), environ={})
    with pytest.raises(ConfigError, match="ZENDESK_OAUTH_TOKEN"):
        preflight(oauth_settings)
    preflight(oauth_settings, sources=["usage", "bugs"])


def test_window_days_from_the_settings_file_is_the_default(root):
    from flows.cli import build_parser
    from flows.nightly import nightly

    settings = load_settings(_config(root, _with(BASE, top="window_days = 14")), environ={})
    assert settings.window_days == 14
    assert build_parser().parse_args(["run"]).window_days is None  # CLI leaves it to settings
    assert nightly.parameters.properties["window_days"]["default"] is None


def test_error_text_with_brackets_is_printed_verbatim_in_a_subprocess(root):
    """The real entry point: `[a-z]` in a pydantic message survives (no rich markup), the line
    is not wrapped, and there is no traceback."""
    (root / "cat.yaml").write_text("version: 1\nfeatures:\n  - key: Bad Key\n    name: X\n")
    cfg = _config(root, _with(BASE, top='catalog_path = "cat.yaml"'))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDBACK_LOOP_")}
    env["COLUMNS"] = "40"
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", "--config", str(cfg)],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert "String should match pattern '^[a-z][a-z0-9_]*$'" in lines[0]
    assert not (root / "wh").exists()


def test_the_flow_fails_fast_and_takes_window_days_from_the_settings(root, prefect_api):
    """A run started from the Prefect UI (not the CLI) stops at preflight: ConfigError, no
    warehouse. A run that passes preflight uses window_days of the settings file unless the
    parameter is given (recorded in ops.runs at the start of the run)."""
    from flows.nightly import nightly

    bad = _config(root, _with(BASE, writeback='tracker_dir = "blocker/tracker"'))
    empty = root / "empty.toml"  # no sources at all: the run records itself, then has no data
    empty.write_text(
        _with(BASE, top="window_days = 14")
        .replace("exports/posthog/*.jsonl", "")
        .replace("exports/zendesk/*.json", "")
        .replace("exports/github/*.json", ""),
        encoding="utf-8",
    )
    state = nightly(config_path=str(bad), return_state=True)
    assert state.is_failed()
    with pytest.raises(ConfigError, match="writeback.tracker_dir"):
        state.result()
    assert not (root / "wh" / "feedback.duckdb").exists()

    nightly(config_path=str(empty), return_state=True)
    nightly(config_path=str(empty), window_days=21, return_state=True)
    con = duckdb.connect(str(root / "wh" / "feedback.duckdb"), read_only=True)
    try:
        windows = [
            r[0] for r in con.sql("select window_days from ops.runs order by started_at").fetchall()
        ]
    finally:
        con.close()
    assert windows == [14, 21]


def test_doctor_agrees_that_an_optional_source_may_be_empty(root):
    from tasks import doctor

    body = BASE.replace('accounts = ""', 'accounts = "nowhere/*.csv"')
    settings = load_settings(_config(root, body), environ={})
    checks = {c.name: c for c in doctor.check_file_sources(settings)}
    assert checks["sources.accounts"].ok
    assert "sources.optional" in checks["sources.accounts"].detail


def test_bracketed_text_in_query_cells_and_errors_is_not_markup(tmp_path, capsys):
    """rich would swallow `[a-z]` / `[bold]` as markup: table cells and error lines keep them."""
    db = tmp_path / "w.duckdb"
    con = duckdb.connect(str(db))
    con.execute("create table t as select '^[a-z]+$ and [bold]x[/bold]' as \"[pattern]\"")
    con.close()
    assert main(["query", "select * from t", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "^[a-z]+$ and [bold]x[/bold]" in out and "[pattern]" in out
    assert main(["query", 'select * from "[nope]"', "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "[nope]" in err, err
