"""Local Markdown tracker: one file per suggestion, found again by its hidden fingerprint marker.

A person triages by editing the front matter: `status: closed` with `state_reason: not_planned`
(or `duplicate`, `completed`) is respected — the file is never rewritten or recreated after that.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from tasks.trackers.base import TrackerIssue, marker_for

_FRONT = re.compile(r"\A---\n(.*?)\n---\n", re.S)
_MARKER = re.compile(r"<!-- feedback-loop:fingerprint=([^ ]+) -->")
# Comments live below this line; the body (and its content hash) stops above it.
COMMENTS = "<!-- feedback-loop:comments -->"


def _slug(fingerprint: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", fingerprint.lower()).strip("-")


class MarkdownTracker:
    name = "markdown"

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def _path(self, fingerprint: str) -> Path:
        return self.directory / f"{_slug(fingerprint)}.md"

    def find(self, fingerprint: str) -> TrackerIssue | None:
        """Look the marker up: first the expected file, then any file that carries it (renamed)."""
        candidates = [self._path(fingerprint)]
        if self.directory.is_dir():
            candidates += sorted(self.directory.glob("*.md"))
        for path in candidates:
            if not path.is_file():
                continue
            text = path.read_text(encoding="utf-8")
            m = _MARKER.search(text)
            if m and m.group(1) == fingerprint:
                front = _parse_front(text)
                return TrackerIssue(
                    ref=path.name,
                    url=path.resolve().as_uri(),
                    state=front.get("status", "open"),
                    state_reason=front.get("state_reason") or None,
                    body=_body(text),
                    title=front.get("title", ""),
                )
        return None

    def create(self, fingerprint: str, title: str, body: str, labels: list[str]) -> TrackerIssue:
        path = self._path(fingerprint)
        self._write(path, fingerprint, title, body, labels, status="open", state_reason="")
        return TrackerIssue(
            ref=path.name,
            url=path.resolve().as_uri(),
            state="open",
            state_reason=None,
            body=body,
            title=title,
        )

    def comment(self, issue: TrackerIssue, body: str) -> None:
        path = self.directory / issue.ref
        text = path.read_text(encoding="utf-8").rstrip("\n")
        if COMMENTS not in text:
            text += f"\n\n{COMMENTS}\n## Comments"
        self._replace(path, f"{text}\n\n---\n{body.rstrip()}\n")

    def close(self, issue: TrackerIssue, reason: str) -> TrackerIssue:
        path = self.directory / issue.ref
        text = path.read_text(encoding="utf-8")
        front = _parse_front(text)
        if front.get("status") == "closed":
            return issue  # never overwrite a reason a person chose
        text = text.replace("\nstatus: open\n", "\nstatus: closed\n", 1)
        text = re.sub(r"\nstate_reason:[^\n]*\n", f"\nstate_reason: {reason}\n", text, count=1)
        self._replace(path, text)
        return TrackerIssue(
            ref=issue.ref,
            url=issue.url,
            state="closed",
            state_reason=reason,
            body=issue.body,
            title=issue.title,
        )

    def update(
        self, issue: TrackerIssue, fingerprint: str, title: str, body: str, labels: list[str]
    ) -> TrackerIssue:
        path = self.directory / issue.ref
        self._write(
            path,
            fingerprint,
            title,
            body,
            labels,
            status=issue.state,
            state_reason=issue.state_reason or "",
        )
        return TrackerIssue(
            ref=issue.ref,
            url=issue.url,
            state=issue.state,
            state_reason=issue.state_reason,
            body=body,
            title=title,
        )

    def _write(
        self,
        path: Path,
        fingerprint: str,
        title: str,
        body: str,
        labels: list[str],
        status: str,
        state_reason: str,
    ) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        front = "\n".join(
            [
                "---",
                f"title: {title}",
                f"status: {status}",
                f"state_reason: {state_reason}",
                f"labels: [{', '.join(labels)}]",
                "---",
            ]
        )
        text = f"{front}\n{marker_for(fingerprint)}\n{body.rstrip()}\n"
        if path.exists():  # keep the comment thread across body updates
            old = path.read_text(encoding="utf-8")
            if COMMENTS in old:
                text += "\n" + old[old.index(COMMENTS) :]
        self._replace(path, text)

    @staticmethod
    def _replace(path: Path, text: str) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)  # a reader never sees half a file


def _parse_front(text: str) -> dict[str, str]:
    m = _FRONT.match(text)
    if not m:
        return {}
    out = {}
    for line in m.group(1).splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            out[k.strip()] = v.strip()
    return out


def _body(text: str) -> str:
    text = _FRONT.sub("", text, count=1)
    text = text.split(COMMENTS, 1)[0].rstrip("\n")
    return _MARKER.sub("", text, count=1).strip("\n")
