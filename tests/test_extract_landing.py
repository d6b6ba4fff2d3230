"""Landing for extraction on workers (tasks/extract.py land_connector): a complete batch appears
whole with its manifest, a re-run for the same cursor skips, a crashed extract leaves nothing
the commit would read, and a page changed after landing stops the commit."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tasks.clients.zendesk import ZENDESK_TICKETS_SPEC
from tasks.contracts import LandedPage
from tasks.extract import (
    ExtractFailed,
    clear_extracts,
    extract_dir,
    land_connector,
    landed_pages,
    read_manifest,
)

END = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)


class _Fake:
    source, stream, kind = "zendesk", "tickets", "tickets"
    spec = ZENDESK_TICKETS_SPEC

    def __init__(self, n: int, fail_at: int | None = None) -> None:
        self.n, self.fail_at, self.calls = n, fail_at, 0

    def pages(self, state, window_end):
        self.calls += 1
        start = (state or {}).get("page", 0)
        for i in range(start, start + self.n):
            if i == self.fail_at:
                raise ConnectionError("connection reset")
            yield LandedPage(
                body=f'{{"tickets": [{i}]}}'.encode(), state={"page": i + 1}, n_records=1
            )


def test_a_landed_batch_has_a_manifest_and_a_rerun_for_the_same_cursor_skips(tmp_path):
    fake = _Fake(3)
    first = land_connector(fake, {"page": 10}, END, tmp_path)
    assert not first["skipped"] and first["n_pages"] == 3 and first["n_records"] == 3
    folder = extract_dir(tmp_path, "zendesk", "tickets", {"page": 10}, END)
    manifest = read_manifest(folder)
    assert manifest["state_in"] == {"page": 10}
    assert [p.state for p in landed_pages(folder, manifest)] == [{"page": n} for n in (11, 12, 13)]
    again = land_connector(fake, {"page": 10}, END, tmp_path)
    assert again["skipped"] and fake.calls == 1  # not fetched again
    assert {k: v for k, v in again.items() if k != "skipped"} == {
        k: v for k, v in first.items() if k != "skipped"
    }


def test_a_crashed_extract_leaves_no_batch_and_the_next_one_lands_whole(tmp_path):
    with pytest.raises(ConnectionError):
        land_connector(_Fake(3, fail_at=1), None, END, tmp_path)
    parent = extract_dir(tmp_path, "zendesk", "tickets", None, END).parent
    assert list(parent.iterdir()) == []  # no partial pages left (they hold unredacted text)
    # A folder without its manifest (a kill between pages) is never read, and is re-fetched.
    folder = extract_dir(tmp_path, "zendesk", "tickets", None, END)
    folder.mkdir(parents=True)
    (folder / "page-000000.json").write_text("{}")
    assert read_manifest(folder) is None
    landed = land_connector(_Fake(2), None, END, tmp_path)
    assert not landed["skipped"] and landed["n_pages"] == 2
    assert read_manifest(folder)["n_pages"] == 2


def test_a_page_changed_after_landing_stops_the_commit_and_old_batches_are_cleared(tmp_path):
    land_connector(_Fake(2), None, END, tmp_path)
    folder = extract_dir(tmp_path, "zendesk", "tickets", None, END)
    manifest = read_manifest(folder)
    (folder / "page-000001.json").write_bytes(b'{"tickets": [9]}')  # same size, other bytes
    with pytest.raises(ExtractFailed, match="changed after landing"):
        list(landed_pages(folder, manifest))
    (folder / "page-000001.json").unlink()
    with pytest.raises(ExtractFailed, match="missing"):
        read_manifest(folder)
    assert clear_extracts(tmp_path, "zendesk", "tickets", keep="other") == 1
    assert not folder.exists()
