"""Settings: embedded defaults < TOML file < FEEDBACK_LOOP_* environment, with readable errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.settings import ConfigError, load_settings


def test_defaults_are_the_embedded_demo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = load_settings(None, environ={})
    assert s.duckdb_path == tmp_path / "data" / "feedback.duckdb"
    assert s.demo.enabled
    assert s.sources.posthog_events == str(tmp_path / "data/demo/posthog/*.jsonl")
    assert abs(sum(s.score.weights.normalised().values()) - 1) < 1e-9


def test_file_paths_are_relative_to_the_file_and_env_wins(tmp_path):
    cfg = tmp_path / "conf" / "feedback.toml"
    cfg.parent.mkdir()
    cfg.write_text(
        'duckdb_path = "wh/f.duckdb"\n[writeback]\nmax_new_suggestions = 2\n'
        "[score.weights]\nsupport = 0.5\n"
    )
    s = load_settings(
        cfg,
        environ={
            "FEEDBACK_LOOP_WRITEBACK__MAX_NEW_SUGGESTIONS": "7",
            "FEEDBACK_LOOP_HASH_SALT": "pepper",
        },
    )
    assert s.duckdb_path == tmp_path / "conf" / "wh" / "f.duckdb"
    assert s.writeback.max_new_suggestions == 7
    assert s.score.weights.support == 0.5
    assert s.hash_salt.get_secret_value() == "pepper"
    assert "pepper" not in repr(s) and "pepper" not in str(s.model_dump())


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("duckdb_path = ", "not valid TOML"),
        ("window_days = 3", "window_days"),
        ("[writeback]\ntracker = 'markdown'\nmax_new = 3", "writeback.max_new"),
    ],
)
def test_bad_config_names_the_problem(tmp_path: Path, content, message):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_settings(cfg, environ={})


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "nope.toml", environ={})


def _leaf_keys(model, prefix=()):
    from pydantic import BaseModel

    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from _leaf_keys(ann, (*prefix, name))
        else:
            yield (*prefix, name)


def test_every_accepted_key_is_read_by_the_code():
    """A key the settings accept but no code reads is a silent no-op for the user (as
    `window_days` and `sources.zendesk_subdomain` were): each one must be read somewhere."""
    import re

    from tasks.settings import PROJECT_ROOT, Settings

    files = [*sorted((PROJECT_ROOT / "tasks").rglob("*.py")), PROJECT_ROOT / "flows" / "nightly.py"]
    files += [PROJECT_ROOT / "flows" / "cli.py", *sorted((PROJECT_ROOT / "sql").rglob("*.sql"))]
    code = "\n".join(p.read_text(encoding="utf-8") for p in files if p.name != "settings.py")
    unread = []
    for key in _leaf_keys(Settings):
        name = key[-1]
        # top level: read as settings.<name>; nested: attribute access, or the name as a
        # string (getattr, a model_dump() key, a SQL variable)
        pattern = rf"settings\.{name}\b" if len(key) == 1 else rf"\.{name}\b|[\"']{name}[\"']"
        if not re.search(pattern, code):
            unread.append(".".join(key))
    assert unread == []


def test_window_days_and_optional_sources_from_the_file(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('window_days = 56\n[sources]\noptional = ["github_issues"]\n')
    s = load_settings(cfg, environ={})
    assert s.window_days == 56
    assert s.sources.optional == ["github_issues"]
    assert load_settings(None, environ={}).sources.optional == ["accounts"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[sources]\nzendesk_subdomain = 'acme'", "sources.zendesk_subdomain: unknown setting"),
        ("[sources]\noptional = ['nope']", "sources.optional: unknown source"),
        ("[score.weights]\nsupport = nan", "score.weights.support: Input should be a finite"),
        (
            "[score.weights]\nadoption = 0\nengagement = 0\nretention = 0\nsupport = 0\n"
            "bugs = 0\ntrend = 0",
            "score.weights: every weight is 0",
        ),
        ("hash_salt = ''", "hash_salt: must not be empty"),
    ],
)
def test_new_checks_name_the_key(tmp_path: Path, content, message):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_settings(cfg, environ={})
