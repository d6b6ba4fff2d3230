"""An Amplitude-shaped fake: the Export API answering zips of gzipped JSON lines per upload hour."""

from __future__ import annotations

import base64
import gzip
import io
import json
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from tests.fakes.server import FakeServer, Request, Response

EXPORT_PATH = r"/api/2/export"
HOUR_FORMAT = "%Y%m%dT%H"


def amplitude_event(
    uuid: str,
    event_type: str = "export_started",
    user_id: str | None = "user-1",
    event_time: str = "2026-11-20 10:00:00.000000",
    upload_time: str | None = None,
    path: str | None = "/exports",
    company: str | list[str] | None = "acct-1",
    insert_id: str | None = None,
) -> dict[str, Any]:
    """One event as the Export API writes it (times UTC, no offset)."""
    return {
        "uuid": uuid,
        "$insert_id": insert_id or f"ins-{uuid}",
        "event_id": 12,
        "event_type": event_type,
        "user_id": user_id,
        "device_id": f"dev-{user_id or uuid}",
        "event_time": event_time,
        "client_event_time": event_time,
        "server_upload_time": upload_time or event_time,
        "event_properties": {"[Amplitude] Page Path": path} if path else {},
        "user_properties": {"plan": "pro"},
        "groups": {"company": company} if company is not None else {},
        "platform": "Web",
        "app": 123456,
    }


def _hour(value: str) -> datetime:
    return datetime.strptime(value[:13], "%Y-%m-%d %H").replace(tzinfo=UTC)


def export_zip(events: list[dict[str, Any]], project: int = 123456, parts: int = 1) -> bytes:
    """Zip of `<project>/<project>_<day>_<hour>#<part>.json.gz`, as the Export API sends."""
    by_hour: dict[datetime, list[dict[str, Any]]] = {}
    for e in events:
        by_hour.setdefault(_hour(e["server_upload_time"]), []).append(e)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for hour, evs in sorted(by_hour.items()):
            for part in range(parts):
                chunk = evs[part::parts]
                if not chunk:
                    continue
                lines = "".join(json.dumps(e) + "\n" for e in chunk).encode()
                name = f"{project}/{project}_{hour:%Y-%m-%d}_{hour.hour}#{part}.json.gz"
                zf.writestr(name, gzip.compress(lines))
    return buf.getvalue()


def amplitude_api(
    srv: FakeServer,
    events: list[dict[str, Any]],
    *,
    api_key: str = "amp_key",
    secret_key: str = "amp_secret",
    parts_per_hour: int = 1,
) -> Callable[[Request], Response]:
    """Serve `events` (may grow between runs) through `GET /api/2/export?start=&end=`: events
    whose `server_upload_time` hour is within [start, end] (both inclusive), 404 when none.
    Returns the export handler, for `srv.script(..., then=handler)` fault injection."""
    token = base64.b64encode(f"{api_key}:{secret_key}".encode()).decode()

    def export(req: Request) -> Response:
        if req.headers.get("Authorization") != f"Basic {token}":
            return Response(401, "Invalid API key or secret key")
        try:
            start = datetime.strptime(req.arg("start") or "", HOUR_FORMAT).replace(tzinfo=UTC)
            end = datetime.strptime(req.arg("end") or "", HOUR_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            return Response(400, "start and end must be formatted YYYYMMDDTHH")
        if end < start:
            return Response(400, "end must not be before start")
        chosen = [e for e in events if start <= _hour(e["server_upload_time"]) <= end]
        if not chosen:
            return Response(404, "Raw data files were not found.")
        return Response(
            200,
            export_zip(chosen, parts=parts_per_hour),
            headers={"Content-Type": "application/zip"},
        )

    srv.route("GET", EXPORT_PATH, export)
    return export
