"""The feedback-loop CLI: help texts, short errors for user mistakes, query output."""

from __future__ import annotations

import duckdb
import pytest

from flows.cli import build_parser, main


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("run", "demo-data", "serve", "query"):
        assert cmd in out
    for cmd in ("run", "demo-data", "serve", "query"):
        assert build_parser().parse_known_args([cmd, "x"] if cmd == "query" else [cmd])[0]


@pytest.mark.parametrize("cmd", [["run"], ["query", "select 1"], ["demo-data"]])
def test_missing_config_is_one_line_and_exit_2(cmd, tmp_path, capsys):
    assert main([*cmd, "--config", str(tmp_path / "missing.toml")]) == 2
    err = capsys.readouterr().err
    assert "config file not found" in err
    assert "Traceback" not in err


def test_invalid_catalog_is_reported_before_running(tmp_path, capsys):
    (tmp_path / "cat.yaml").write_text("version: one\nfeatures: []\n")
    cfg = tmp_path / "c.toml"
    cfg.write_text('catalog_path = "cat.yaml"\n')
    assert main(["run", "--config", str(cfg)]) == 2
    assert "invalid feature catalog" in capsys.readouterr().err


def test_query_prints_rows_and_reports_sql_errors(tmp_path, capsys):
    db = tmp_path / "w.duckdb"
    con = duckdb.connect(str(db))
    con.execute("create schema marts; create table marts.t as select 'exports' as f, 42 as n")
    con.close()
    assert main(["query", "select * from marts.t", "--db", str(db), "--format", "csv"]) == 0
    assert "f,n\nexports,42" in capsys.readouterr().out.replace("\r", "")
    assert main(["query", "select * from nope", "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert "query failed" in err and "Traceback" not in err


def test_query_without_a_warehouse_says_what_to_do(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["query", "select 1"]) == 2
    assert "run `feedback-loop run` first" in capsys.readouterr().err


def test_a_future_as_of_is_refused_before_running(tmp_path, capsys):
    """It would become the newest scored day and hold every later nightly as backdated."""
    from datetime import UTC, datetime, timedelta

    tomorrow = (datetime.now(UTC).date() + timedelta(days=1)).isoformat()
    assert main(["run", "--as-of", tomorrow, "--config", str(tmp_path / "none.toml")]) == 2
    err = capsys.readouterr().err
    assert "config file not found" in err  # settings first, as for every command
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'duckdb_path = "{tmp_path / "w.duckdb"}"\n')
    assert main(["run", "--as-of", tomorrow, "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert f"--as-of: {tomorrow} is in the future" in err
    assert not (tmp_path / "w.duckdb").exists()


def test_alerts_need_a_prefect_server(monkeypatch, capsys):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):  # a session harness may be up
        assert main(["alerts", "--webhook-url", "http://127.0.0.1:9/hook"]) == 2
    err = capsys.readouterr().err
    assert "alerts need a Prefect server" in err and "PREFECT_API_URL" in err
