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
