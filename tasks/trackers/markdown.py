"""Local Markdown tracker: one file per suggestion, found again by its hidden fingerprint marker.

A person triages by editing the front matter: `status: closed` with `state_reason: not_planned`
(or `duplicate`, `completed`) is respected — the file is never rewritten or recreated after that.
`effort: N` (or an `effort:N` label) is the team's estimate; keys and labels a person added to the
front matter survive every rewrite.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path

from tasks.trackers.base import (
    TrackerIssue,
    effort_from_labels,
    lookup_order,
    marker_for,
    positive_number,
)

_FRONT = re.compile(r"\A---\n(.*?)\n---\n", re.S)
_MARKER = re.compile(r"<!-- feedback-loop:fingerprint=([^ ]+) -->")
# Comments live below this line; the body (and its content hash) stops above it.
COMMENTS = "<!-- feedback-loop:comments -->"
_OWN_KEYS = ("title", "status", "state_reason", "labels")


def _slug(fingerprint: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", fingerprint.lower()).strip("-")


class MarkdownTracker:
    name = "markdown"

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def _path(self, fingerprint: str) -> Path:
        return self.directory / f"{_slug(fingerprint)}.md"

    def find(self, fingerprint: str) -> TrackerIssue | None:
        """Look the marker up: the expected file, then any file that carries it (renamed); for a
        canonical fingerprint then the legacy markers of the same problem."""
        wanted = lookup_order(fingerprint)
        candidates = [self._path(fp) for fp in wanted]
        if self.directory.is_dir():
            candidates += sorted(self.directory.glob("*.md"))
        by_fp: dict[str, Path] = {}
        for path in dict.fromkeys(candidates):
            if not path.is_file():
                continue
            m = _MARKER.search(path.read_text(encoding="utf-8"))
            if m and m.group(1) in wanted:
                by_fp.setdefault(m.group(1), path)
                if m.group(1) == fingerprint:
                    break
        for fp in wanted:
            if fp in by_fp:
                return self._issue(by_fp[fp])
        return None

    def _issue(self, path: Path) -> TrackerIssue:
        text = path.read_text(encoding="utf-8")
        front = _parse_front(text)
        labels = _parse_labels(front.get("labels", ""))
        effort, source = positive_number(front.get("effort")), "front_matter"
        if effort is None:
            effort, source = effort_from_labels(labels), "label"
        m = _MARKER.search(text)
        return TrackerIssue(
            ref=path.name,
            url=path.resolve().as_uri(),
            state=front.get("status", "open"),
            state_reason=front.get("state_reason") or None,
            body=_body(text),
            title=front.get("title", ""),
            labels=labels,
            fingerprint=m.group(1) if m else None,
            updated_at=datetime.fromtimestamp(path.stat().st_mtime, UTC),
            effort=effort,
            effort_source=source if effort is not None else None,
        )

    def create(self, fingerprint: str, title: str, body: str, labels: list[str]) -> TrackerIssue:
        path = self._path(fingerprint)
        self._write(path, fingerprint, title, body, labels, status="open", state_reason="")
        return self._issue(path)

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
            return self._issue(path)  # never overwrite a reason a person chose
        self._replace(path, _set_front(text, status="closed", state_reason=reason))
        return self._issue(path)

    def reopen(self, issue: TrackerIssue) -> TrackerIssue:
        path = self.directory / issue.ref
        text = path.read_text(encoding="utf-8")
        if _parse_front(text).get("status", "open") != "open":
            self._replace(path, _set_front(text, status="open", state_reason=""))
        return self._issue(path)

    def update(
        self, issue: TrackerIssue, fingerprint: str, title: str, body: str, labels: list[str]
    ) -> TrackerIssue:
        path = self.directory / issue.ref
        front = _parse_front(path.read_text(encoding="utf-8"))
        self._write(
            path,
            fingerprint,
            title,
            body,
            labels,
            status=front.get("status", issue.state),
            state_reason=front.get("state_reason", issue.state_reason or ""),
        )
        return self._issue(path)

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
        old = path.read_text(encoding="utf-8") if path.exists() else ""
        before = _parse_front(old)
        # A person's labels (e.g. effort:3) and front-matter keys (effort: 3) are kept.
        merged = list(dict.fromkeys([*_parse_labels(before.get("labels", "")), *labels]))
        lines = [
            "---",
            f"title: {title}",
            f"status: {status}",
            f"state_reason: {state_reason}",
            f"labels: [{', '.join(merged)}]",
            *(f"{k}: {v}" for k, v in before.items() if k not in _OWN_KEYS),
            "---",
        ]
        text = "\n".join(lines) + f"\n{marker_for(fingerprint)}\n{body.rstrip()}\n"
        if COMMENTS in old:  # keep the comment thread across body updates
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


def _parse_labels(value: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in value.strip().strip("[]").split(",") if x.strip())


def _set_front(text: str, **values: str) -> str:
    """Set front-matter keys in place, leaving the rest of the file as it is."""
    m = _FRONT.match(text)
    if not m:
        return text
    front = m.group(1)
    for key, value in values.items():
        line = f"{key}: {value}".rstrip() if value else f"{key}: "
        pattern = re.compile(rf"^{re.escape(key)}:[^\n]*$", re.M)
        front = pattern.sub(lambda _, line=line: line, front, count=1)
        if not pattern.search(front):
            front += f"\n{line}"
    return f"---\n{front}\n---\n" + text[m.end() :]


def _body(text: str) -> str:
    text = _FRONT.sub("", text, count=1)
    text = text.split(COMMENTS, 1)[0].rstrip("\n")
    return _MARKER.sub("", text, count=1).strip("\n")
