"""What a load reports: LoadStats (counts, reasons, what to fix), LoadError (a batch failed,
nothing of it committed), and exception text safe to put in either (no quoted input)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field


@dataclass
class LoadStats:
    source: str
    files_seen: int = 0
    files_loaded: int = 0
    files_skipped: int = 0
    # Files/pages set aside whole (undecodable, HTML, invalid JSON, not the vendor's page shape):
    # quarantined, recorded in ops.loaded_files as rejected, not read again until they change.
    files_rejected: int = 0
    records_read: int = 0
    n_inserted: int = 0
    n_updated: int = 0
    n_unchanged: int = 0
    n_superseded: int = 0
    n_dropped: int = 0
    n_quarantined: int = 0
    seconds: float = 0.0
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    # What to fix, one message per file set aside whole (a table file without a required column).
    errors: list[str] = field(default_factory=list)
    # One line per file/page rejected whole: file, rule, byte offset, sha256 (never its text).
    warnings: list[str] = field(default_factory=list)

    @property
    def n_landed(self) -> int:
        return self.n_inserted + self.n_updated + self.n_unchanged

    def as_dict(self) -> dict:
        return asdict(self) | {"n_landed": self.n_landed}


class LoadError(RuntimeError):
    """A batch could not be loaded; nothing of it was committed."""


def _safe_text(exc: BaseException) -> str:
    """An exception's message in one line without the data it quotes: DuckDB repeats the
    offending input ("Original Line: …", quoted values), which may hold personal data."""
    lines = [
        ln.strip()
        for ln in str(exc).strip().splitlines()
        if ln.strip() and not ln.strip().lower().startswith(("original line", "line "))
    ]
    text = "; ".join(lines[:2]) or type(exc).__name__
    return re.sub(r"'[^']*'", "'…'", re.sub(r'"[^"]*"', '"…"', text))[:300]


def _safe_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {_safe_text(exc)}"
