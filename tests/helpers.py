"""Small helpers shared by the tests that run whole flows: the CLI in-process, read-only SQL on
a warehouse file, the settings file of a run over generated demo exports, and a warehouse with
demo exports landed in raw."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import duckdb

from flows.cli import main


def cli(argv: list[str]) -> tuple[int, str, str]:
    """`feedback-loop <argv>` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def sql(db: Path, query: str, params: list | None = None) -> list[tuple]:
    """Rows of `query` on a read-only connection, closed again (the next run may write)."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(query, params or []).fetchall()
    finally:
        con.close()


def demo_config(
    path: Path,
    demo: str | Path = "demo",
    *,
    tracker: str | Path = "tracker",
    warehouse: str | Path = ".",
) -> Path:
    """A settings file at `path` for a run over the demo exports in `demo` (relative paths are
    relative to the file): warehouse and snapshot in `warehouse`, demo generator off, Markdown
    tracker in `tracker`."""
    path.write_text(
        "\n".join(
            [
                f'duckdb_path = "{Path(warehouse) / "feedback.duckdb"}"',
                f'snapshot_path = "{Path(warehouse) / "feedback_analyst.duckdb"}"',
                "[demo]",
                "enabled = false",
                "[sources]",
                f'posthog_events = "{demo}/posthog/*.jsonl"',
                f'zendesk_tickets = "{demo}/zendesk/*.json"',
                f'github_issues = "{demo}/github/*.json"',
                "[writeback]",
                f'tracker_dir = "{tracker}"',
            ]
        ),
        encoding="utf-8",
    )
    return path


def land_demo(root: Path, files, salt: str, run_id: str, **world) -> Path:
    """Generate demo exports under `root`/demo (DemoConfig fields in `world`) and land the
    `files` ((SourceSpec, glob relative to the demo folder), ...) into a fresh warehouse file
    `root`/landed.duckdb, names hashed with `salt`; returns the file."""
    from tasks import db, load
    from tasks.demo_data import DemoConfig, generate_demo_data
    from tasks.redact import register_duckdb

    generate_demo_data(DemoConfig(out_dir=root / "demo", **world))
    path = root / "landed.duckdb"
    with db.warehouse(path) as con:
        db.ensure_schema(con)
        register_duckdb(con, salt)
        for spec, pattern in files:
            load.load_source(con, spec, str(root / "demo" / pattern), run_id)
    return path
