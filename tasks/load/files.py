"""File sources' bookkeeping: which files match, which are new or changed since they were
loaded (ops.loaded_files), how they are cut into batches of about BATCH_BYTES, and the record
of a batch's files (committed in the batch's transaction)."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import duckdb

from tasks import screening
from tasks.contracts import SourceSpec

# Files, and connector pages, per transaction. Each commit costs a rewrite of the batch's last
# row group at the next checkpoint (10M events in 13 batches: 0.7 s at close; in 3 batches of
# 1 GiB: 0.07 s), but a batch with a row to set aside pays for tombstoning it in proportion to
# its size (tasks/load/purge.py), and a smaller batch starts landing pages while later ones are
# fetched.
BATCH_BYTES = 256 * 1024 * 1024


def _list_files(pattern: str) -> list[Path]:
    return sorted(Path(p) for p in glob.glob(os.path.expanduser(pattern), recursive=True))


def _pending_files(
    con: duckdb.DuckDBPyConnection, source: str, files: list[Path]
) -> list[tuple[Path, int, int]]:
    """Files never loaded, or changed (size/mtime) since they were loaded. A rejected file whose
    mtime changed but whose content (sha256) did not stays rejected: its mtime is updated."""
    known = {
        (p, size, mtime)
        for p, size, mtime in con.execute(
            "select path, size_bytes, mtime_ns from ops.loaded_files where source = ?", [source]
        ).fetchall()
    }
    rejected = dict(
        con.execute(
            "select path, sha256 from ops.loaded_files where source = ? and status = 'rejected' "
            "and sha256 is not null",
            [source],
        ).fetchall()
    )
    out = []
    for f in files:
        st = f.stat()
        if (str(f), st.st_size, st.st_mtime_ns) in known:
            continue
        if str(f) in rejected and screening.sha256_file(f) == rejected[str(f)]:
            con.execute(
                "update ops.loaded_files set size_bytes = ?, mtime_ns = ? "
                "where source = ? and path = ?",
                [st.st_size, st.st_mtime_ns, source, str(f)],
            )
            continue
        out.append((f, st.st_size, st.st_mtime_ns))
    return out


def _batches(files: list[tuple[Path, int, int]]) -> list[list[tuple[Path, int, int]]]:
    batches: list[list[tuple[Path, int, int]]] = []
    size = 0
    for f in files:
        if not batches or size + f[1] > BATCH_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(f)
        size += f[1]
    return batches


def _record_files(
    con: duckdb.DuckDBPyConnection,
    spec: SourceSpec,
    batch: list[tuple[Path, int, int]],
    batch_id: str,
    per_file: dict[str, tuple[int, int]],
    rejected: dict[str, screening.Reject] | None = None,
) -> None:
    rejected = rejected or {}
    rows = []
    for p, size, mtime in batch:
        r = rejected.get(str(p))
        rows.append(
            [
                spec.source,
                str(p),
                size,
                mtime,
                *per_file.get(str(p), (0, 0)),
                batch_id,
                "rejected" if r else "loaded",
                r.rule if r else None,
                r.sha256 if r else None,
            ]
        )
    con.executemany(
        """insert into ops.loaded_files by name
               select ? as source, ? as path, ? as size_bytes, ? as mtime_ns, ? as n_records,
                      ? as n_quarantined, ? as batch_id, now() as loaded_at, ? as status,
                      ? as reject_rule, ? as sha256""",
        rows,
    )
    con.execute(
        "delete from ops.loaded_files a using ops.loaded_files b "
        "where a.source = b.source and a.path = b.path and a.loaded_at < b.loaded_at"
    )
