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


def test_query_output_fits_an_80_column_terminal(tmp_path, capsys, monkeypatch):
    """Few columns: aligned; many or wide ones: one record per block; no line over 80."""
    import os

    db = tmp_path / "w.duckdb"
    con = duckdb.connect(str(db))
    con.execute(
        "create table wide as select 'exports' as feature_key, 47.1 as health_score, "
        "repeat('explained in many words ', 12) as explanation, 0.8 as confidence, "
        "'2026-11-24' as as_of_date, 'health:exports' as fingerprint"
    )
    con.close()
    monkeypatch.setattr("shutil.get_terminal_size", lambda *a: os.terminal_size((80, 24)))
    assert main(["query", "select feature_key, health_score from wide", "--db", str(db)]) == 0
    narrow = capsys.readouterr().out.splitlines()
    assert narrow[0].split() == ["feature_key", "health_score"] and "exports" in narrow[2]
    assert main(["query", "select * from wide", "--db", str(db)]) == 0
    wide = capsys.readouterr().out.splitlines()
    assert wide[0].startswith("-[ record 1 ]")
    assert any(line.startswith("explanation") and line.endswith("…") for line in wide)
    assert max(len(line) for line in narrow + wide) <= 80


def test_query_markdown_format(tmp_path, capsys):
    db = tmp_path / "w.duckdb"
    con = duckdb.connect(str(db))
    con.execute("create table t as select 'a|b' as f, 1 as n")
    con.close()
    assert main(["query", "select * from t", "--db", str(db), "--format", "markdown"]) == 0
    assert capsys.readouterr().out.splitlines() == ["| f | n |", "|---|---|", "| a\\|b | 1 |"]


def test_demo_data_append_day_mistakes_are_one_line_and_exit_2(tmp_path, capsys):
    out = str(tmp_path / "demo")
    assert main(["demo-data", "--out", out, "--append-day", "2026-11-25"]) == 2
    err = capsys.readouterr().err
    assert "--append-day" in err and "_manifest.json" in err and "Traceback" not in err
    assert main(["demo-data", "--out", out, "--append-day", "2026-11-25", "--events", "9"]) == 2
    assert "drop --events" in capsys.readouterr().err


def test_a_warehouse_another_process_holds_is_one_error_line_in_query_and_docs(tmp_path, capsys):
    """The commands share main's error path: query and docs report the lock as one `error:`
    line with exit 2, no traceback, whichever step raised it."""
    import subprocess
    import sys

    path = tmp_path / "w.duckdb"
    duckdb.connect(str(path)).close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, time\nc = duckdb.connect({str(path)!r})\n"
            "print('open', flush=True)\ntime.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        for argv in (
            ["query", "select 1", "--db", str(path), "--lock-timeout", "0.5"],
            ["docs", "--db", str(path), "--out", str(tmp_path / "d"), "--lock-timeout", "0.5"],
        ):
            assert main(argv) == 2, argv
            err = capsys.readouterr().err
            assert err.startswith("error:") and f"PID {holder.pid}" in err, err
            assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    finally:
        holder.kill()
        holder.wait()
