"""What every source connector provides: landed pages with resumable cursor state."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from tasks.load import SourceSpec


@dataclass(frozen=True)
class LandedPage:
    """One page as the vendor sent it (or NDJSON of its records) and the state after it."""

    body: bytes
    state: dict[str, Any]
    n_records: int
    # The connector parsed the body as strict JSON (RFC 8259, UTF-8) and found the record list
    # its spec.layout names as a list: the loader's own JSON shape pass is skipped for it (the
    # byte screen still runs). False: the loader checks the shape itself.
    shape_checked: bool = False


class Connector(Protocol):
    source: str
    stream: str
    kind: str  # usage | tickets | bugs | errors
    spec: SourceSpec

    def pages(self, state: dict[str, Any] | None, window_end: datetime) -> Iterator[LandedPage]:
        """Pages in order from `state` (None: the configured start) up to `window_end`."""
        ...

    def check(self) -> None:
        """One cheap authenticated call; raises an HttpError subclass when it fails."""
        ...
