"""One writer per warehouse (tasks.writer_lock, tasks.runtime): a second writer waits, names the
holder, gives up with one line after its budget; a killed holder never leaves the lock taken;
the Prefect global concurrency slot is real; production runs never fall back to the demo; an
analyst's DuckDB lock is waited for with a message naming the process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import duckdb
import pytest

from tasks import db
from tasks.settings import ConfigError
from tasks.writer_lock import (
    WarehouseBusyError,
    limit_name,
    lock_path,
    read_holder,
    warehouse_writer,
)

HOLD = textwrap.dedent(
    """
    import sys, time
    from tasks.writer_lock import warehouse_writer
    with warehouse_writer(sys.argv[1], holder={"flow": "nightly", "run_id": "holder-run"},
                          wait_seconds=5, use_prefect=False):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
    """
)


def _holder(db_path: Path, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(db_path), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_limit_name_is_stable_readable_and_unique(tmp_path):
    a = limit_name(tmp_path / "feedback.duckdb")
    assert a == limit_name(str(tmp_path / "x" / ".." / "feedback.duckdb"))
    assert a.startswith("feedback-loop-warehouse-feedback-")
    assert a != limit_name(tmp_path / "other" / "feedback.duckdb")


def test_a_second_writer_waits_for_the_first_and_names_it(tmp_path):
    db_path = tmp_path / "feedback.duckdb"
    proc = _holder(db_path, 2.0)
    told: list[str] = []
    t0 = time.monotonic()
    with warehouse_writer(
        db_path,
        holder={"run_id": "second"},
        wait_seconds=30,
        on_wait=told.append,
        use_prefect=False,
    ) as waited:
        assert read_holder(db_path)["run_id"] == "second"
    proc.wait()
    assert 1.0 < waited <= time.monotonic() - t0
    assert len(told) == 1 and "nightly run holder-run" in told[0] and "pid" in told[0]
    assert read_holder(db_path) is None  # cleared on release


def test_the_wait_is_bounded_with_one_line_naming_the_holder(tmp_path):
    db_path = tmp_path / "feedback.duckdb"
    proc = _holder(db_path, 30.0)
    try:
        t0 = time.monotonic()
        with (
            pytest.raises(WarehouseBusyError, match="nightly run holder-run") as exc,
            warehouse_writer(db_path, holder={}, wait_seconds=1.5, use_prefect=False),
        ):
            pass
        assert time.monotonic() - t0 < 10
        assert "\n" not in str(exc.value) and "warehouse_wait_minutes" in str(exc.value)
    finally:
        proc.kill()
        proc.wait()


def test_a_killed_holder_never_leaves_the_warehouse_locked(tmp_path):
    db_path = tmp_path / "feedback.duckdb"
    proc = _holder(db_path, 600.0)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with warehouse_writer(db_path, holder={}, wait_seconds=5, use_prefect=False) as waited:
        assert waited < 2.0
    assert lock_path(db_path).exists()


def test_writers_queue_on_a_prefect_global_concurrency_limit(tmp_path, prefect_api):
    """Two writers in threads of one process (the file lock is per process, so only the Prefect
    slot can keep them apart here): the second waits for the first's slot."""
    from prefect.client.orchestration import get_client

    db_path = tmp_path / "feedback.duckdb"
    events: list[tuple[str, float]] = []
    first_in = threading.Event()

    def first() -> None:
        with warehouse_writer(db_path, holder={"run_id": "a"}, wait_seconds=60, use_prefect=True):
            events.append(("a-in", time.monotonic()))
            first_in.set()
            time.sleep(6.0)  # longer than the second's first, short attempt
            events.append(("a-out", time.monotonic()))

    def second(told: list[str]) -> None:
        with warehouse_writer(
            db_path, holder={"run_id": "b"}, wait_seconds=60, on_wait=told.append, use_prefect=True
        ):
            events.append(("b-in", time.monotonic()))

    told: list[str] = []
    ta = threading.Thread(target=first)
    ta.start()
    assert first_in.wait(60)
    tb = threading.Thread(target=second, args=(told,))
    tb.start()
    ta.join(60)
    tb.join(60)
    order = [name for name, _ in sorted(events, key=lambda e: e[1])]
    assert order == ["a-in", "a-out", "b-in"]
    assert told and limit_name(db_path) in told[0]
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(limit_name(db_path))
    assert limit.limit == 1 and limit.active_slots == 0  # released by both


# ----------------------------------------------------------------------- production settings
def _prod(monkeypatch, **env):
    monkeypatch.setenv("FEEDBACK_LOOP_REQUIRE_CONFIG", "1")
    monkeypatch.delenv("FEEDBACK_LOOP_CONFIG", raising=False)
    monkeypatch.delenv("FEEDBACK_LOOP_HASH_SALT", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)


def test_production_without_settings_fails_at_once_with_one_line(monkeypatch):
    from tasks.runtime import run_settings

    _prod(monkeypatch)
    with pytest.raises(ConfigError) as exc:
        run_settings(None)
    text = str(exc.value)
    assert "\n" not in text and "feedback_loop_config" in text and "never falls back" in text


def test_production_refuses_the_demo_generator_and_the_demo_salt(tmp_path, monkeypatch):
    from tasks.runtime import run_settings

    _prod(monkeypatch)
    demo_on = tmp_path / "a.toml"
    demo_on.write_text('duckdb_path = "w.duckdb"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"demo.enabled is on"):
        run_settings(str(demo_on))
    demo_off = tmp_path / "b.toml"
    demo_off.write_text("[demo]\nenabled = false\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="salt is the demo's"):
        run_settings(str(demo_off))
    monkeypatch.setenv("FEEDBACK_LOOP_HASH_SALT", "a-real-salt-for-prod")
    settings = run_settings(str(demo_off))
    assert settings.demo.enabled is False
    assert settings.duckdb_path == tmp_path / "data" / "feedback.duckdb"


def test_production_reads_settings_and_salt_from_prefect(tmp_path, monkeypatch, prefect_api):
    from prefect.blocks.system import Secret
    from prefect.variables import Variable

    from tasks.runtime import CONFIG_VARIABLE, SALT_BLOCK_VARIABLE, run_settings

    cfg = tmp_path / "prod.toml"
    cfg.write_text('duckdb_path = "prod.duckdb"\n[demo]\nenabled = false\n', encoding="utf-8")
    Secret(value="salt-from-a-secret-block").save("fl-test-salt", overwrite=True)
    Variable.set(CONFIG_VARIABLE, str(cfg), overwrite=True)
    Variable.set(SALT_BLOCK_VARIABLE, "fl-test-salt", overwrite=True)
    try:
        _prod(monkeypatch)
        settings = run_settings(None)
        assert settings.duckdb_path == tmp_path / "prod.duckdb"
        assert settings.hash_salt.get_secret_value() == "salt-from-a-secret-block"
        # Outside production mode the Variable is never consulted: the demo, as before.
        monkeypatch.delenv("FEEDBACK_LOOP_REQUIRE_CONFIG")
        assert run_settings(None).demo.enabled is True
    finally:
        Variable.unset(CONFIG_VARIABLE)
        Variable.unset(SALT_BLOCK_VARIABLE)


# ------------------------------------------------------------------- an analyst's DuckDB lock
def test_a_writer_waits_for_an_analysts_lock_then_gives_up_naming_it(tmp_path, caplog):
    path = tmp_path / "w.duckdb"
    duckdb.connect(str(path)).close()
    reader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time\n"
            f"c = duckdb.connect({str(path)!r}, read_only=True)\n"
            "print('open', flush=True)\n"
            "time.sleep(float(sys.argv[1]))\n",
            "1.5",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert reader.stdout.readline().strip() == "open"
    caplog.set_level("WARNING", logger="tasks.db")
    con = db.connect(path, lock_timeout_s=30)  # the analyst closes within the wait
    con.close()
    reader.wait()
    assert any(f"PID {reader.pid}" in r.getMessage() for r in caplog.records)

    reader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, time\nc = duckdb.connect({str(path)!r}, "
            "read_only=True)\nprint('open', flush=True)\ntime.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert reader.stdout.readline().strip() == "open"
        with pytest.raises(db.WarehouseLockedError) as exc:
            db.connect(path, lock_timeout_s=1.0)
        text = str(exc.value)
        assert f"PID {reader.pid}" in text and "snapshot" in text and "\n" not in text
    finally:
        reader.kill()
        reader.wait()


def test_holder_record_is_json_with_who_and_since(tmp_path):
    db_path = tmp_path / "feedback.duckdb"
    with warehouse_writer(
        db_path, holder={"run_id": "r1", "flow": "backfill"}, wait_seconds=1, use_prefect=False
    ):
        record = json.loads(lock_path(db_path).read_text(encoding="utf-8"))
    assert record["run_id"] == "r1" and record["pid"] == os.getpid() and record["since"]
