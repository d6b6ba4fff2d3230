"""Markdown -> Atlassian Document Format (ADF) for the constructs suggestion bodies use."""

from __future__ import annotations

import re
from typing import Any

from tasks.trackers.base import MARKER_PREFIX

Node = dict[str, Any]

_MARKER_LINE = re.compile(r"^\s*<!--\s*" + re.escape(MARKER_PREFIX) + r"(\S+)\s*-->\s*$")
_COMMENT_LINE = re.compile(r"^\s*<!--.*-->\s*$")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_BULLET = re.compile(r"^(\s*)[-*+]\s+(.*)$")
_ORDERED = re.compile(r"^(\s*)(\d{1,9})[.)]\s+(.*)$")
_TABLE_SEP = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)\s*([\w+-]*)\s*$")
_RULE = re.compile(r"^\s*([-*_])(\s*\1){2,}\s*$")
# Inline constructs in priority order: escapes, then code spans (nothing is parsed inside).
_INLINE = re.compile(
    r"\\(?P<esc>[\\`*_{}\[\]()#+\-.!|<>~])"
    r"|(?P<code>`+)(?P<code_text>.+?)(?P=code)"
    r"|\[(?P<link_text>[^\]]+)\]\((?P<href>[^)\s]+)\)"
    r"|<(?P<auto>https?://[^>\s]+)>"
    r"|\*\*(?P<strong>.+?)\*\*"
    r"|__(?P<strong2>.+?)__"
    r"|(?<![\w*])\*(?P<em>[^*\s](?:.*?[^*\s])?)\*(?![\w*])"
    r"|(?<![\w_])_(?P<em2>[^_\s](?:.*?[^_\s])?)_(?![\w_])"
)


def markdown_to_adf(markdown: str) -> Node:
    """A version-1 ADF document. The fingerprint marker comment (if any) becomes the final
    paragraph, as code text, so it survives in the description where find() can read it."""
    lines = markdown.replace("\r\n", "\n").split("\n")
    markers = [m.group(1) for line in lines if (m := _MARKER_LINE.match(line))]
    lines = [line for line in lines if not _COMMENT_LINE.match(line)]
    content = _blocks(lines)
    for fingerprint in dict.fromkeys(markers):
        content.append(_paragraph([_text(MARKER_PREFIX + fingerprint, [{"type": "code"}])]))
    return {"type": "doc", "version": 1, "content": content}


def adf_text(node: Any) -> str:
    """The plain text of an ADF node: what a person sees, blocks separated by newlines.

    Used to tell whether a description still says what we wrote (Jira may re-serialise the ADF
    with extra attrs such as localId, so the JSON itself is not compared)."""
    if not isinstance(node, dict):
        return ""
    if node.get("type") == "text":
        return str(node.get("text", ""))
    if node.get("type") == "hardBreak":
        return "\n"
    parts = [adf_text(child) for child in node.get("content") or []]
    inline_parent = node.get("type") in ("paragraph", "heading")
    return ("" if inline_parent else "\n").join(p for p in parts if p)


def find_marker(doc: Any) -> str | None:
    """The fingerprint in a description's marker paragraph, or None."""
    m = re.search(re.escape(MARKER_PREFIX) + r"(\S+)", adf_text(doc))
    return m.group(1) if m else None


# --- blocks -------------------------------------------------------------------------------


def _blocks(lines: list[str]) -> list[Node]:
    out: list[Node] = []
    i = 0
    para: list[str] = []

    def flush_para() -> None:
        if para:
            out.append(_paragraph(_inline(" ".join(s.strip() for s in para))))
            para.clear()

    while i < len(lines):
        line = lines[i]
        if not line.strip():
            flush_para()
            i += 1
            continue
        if fence := _FENCE.match(line):
            flush_para()
            i, node = _code_block(lines, i + 1, fence.group(1), fence.group(2))
            out.append(node)
            continue
        if heading := _HEADING.match(line):
            flush_para()
            text = heading.group(2)
            node: Node = {"type": "heading", "attrs": {"level": len(heading.group(1))}}
            if text:
                node["content"] = _inline(text)
            out.append(node)
            i += 1
            continue
        if _RULE.match(line) and not para:
            out.append({"type": "rule"})
            i += 1
            continue
        if "|" in line and i + 1 < len(lines) and _TABLE_SEP.match(lines[i + 1]):
            flush_para()
            i, node = _table(lines, i)
            out.append(node)
            continue
        if _BULLET.match(line) or _ORDERED.match(line):
            flush_para()
            i, node = _list(lines, i, _indent(line))
            out.append(node)
            continue
        para.append(line)
        i += 1
    flush_para()
    return out


def _code_block(lines: list[str], i: int, fence: str, language: str) -> tuple[int, Node]:
    body: list[str] = []
    while i < len(lines) and lines[i].strip() != fence:
        body.append(lines[i])
        i += 1
    node: Node = {"type": "codeBlock", "attrs": {"language": language} if language else {}}
    if "\n".join(body):
        node["content"] = [{"type": "text", "text": "\n".join(body)}]
    return i + 1, node


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _list(lines: list[str], i: int, indent: int) -> tuple[int, Node]:
    """A bullet or ordered list starting at line i; deeper-indented items nest."""
    first = _ORDERED.match(lines[i])
    items: list[tuple[list[str], list[Node]]] = []  # (text lines, nested lists) per item
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            # A blank line ends the list unless the next line is another item.
            if i + 1 < len(lines) and (_BULLET.match(lines[i + 1]) or _ORDERED.match(lines[i + 1])):
                i += 1
                continue
            break
        m = _BULLET.match(line) or _ORDERED.match(line)
        level = _indent(line)
        if m and level == indent:
            items.append(([m.group(m.lastindex or 0)], []))
            i += 1
        elif m and level > indent and items:
            i, child = _list(lines, i, level)
            items[-1][1].append(child)
        elif not m and level > indent and items and not items[-1][1]:
            items[-1][0].append(line.strip())  # continuation line of the last item
            i += 1
        else:  # a shallower item (the enclosing list goes on) or the end of the list
            break
    content = [
        {"type": "listItem", "content": [_paragraph(_inline(" ".join(text))), *children]}
        for text, children in items
    ]
    if first:
        return i, {
            "type": "orderedList",
            "attrs": {"order": int(first.group(2))},
            "content": content,
        }
    return i, {"type": "bulletList", "content": content}


def _split_row(line: str) -> list[str]:
    s = line.strip()
    s = s[1:] if s.startswith("|") else s
    s = s[:-1] if s.endswith("|") and not s.endswith("\\|") else s
    return [c.strip() for c in re.split(r"(?<!\\)\|", s)]


def _table(lines: list[str], i: int) -> tuple[int, Node]:
    header = _split_row(lines[i])
    rows = [_row(header, "tableHeader", len(header))]
    i += 2
    while i < len(lines) and lines[i].strip() and "|" in lines[i]:
        rows.append(_row(_split_row(lines[i]), "tableCell", len(header)))
        i += 1
    table = {
        "type": "table",
        "attrs": {"isNumberColumnEnabled": False, "layout": "default"},
        "content": rows,
    }
    return i, table


def _row(cells: list[str], cell_type: str, width: int) -> Node:
    cells = (cells + [""] * width)[:width]  # ADF tables must be rectangular
    return {
        "type": "tableRow",
        "content": [
            {"type": cell_type, "attrs": {}, "content": [_paragraph(_inline(c))]} for c in cells
        ],
    }


def _paragraph(inline: list[Node]) -> Node:
    node: Node = {"type": "paragraph"}
    if inline:
        node["content"] = inline
    return node


# --- inline -------------------------------------------------------------------------------


def _text(text: str, marks: list[Node]) -> Node:
    node: Node = {"type": "text", "text": text}
    if marks:
        node["marks"] = [dict(m) for m in marks]
    return node


def _inline(text: str, marks: list[Node] | None = None) -> list[Node]:
    marks = marks or []
    out: list[Node] = []
    pos = 0
    for m in _INLINE.finditer(text):
        if m.start() > pos:
            out.append(_text(text[pos : m.start()], marks))
        if m.group("esc") is not None:
            out.append(_text(m.group("esc"), marks))
        elif m.group("code_text") is not None:
            # ADF allows `code` only together with `link`.
            kept = [mk for mk in marks if mk["type"] == "link"]
            out.append(_text(m.group("code_text").strip() or " ", [*kept, {"type": "code"}]))
        elif m.group("link_text") is not None:
            link = {"type": "link", "attrs": {"href": m.group("href")}}
            out.extend(_inline(m.group("link_text"), [*_without(marks, "link"), link]))
        elif m.group("auto") is not None:
            link = {"type": "link", "attrs": {"href": m.group("auto")}}
            out.append(_text(m.group("auto"), [*_without(marks, "link"), link]))
        elif (inner := m.group("strong") or m.group("strong2")) is not None:
            out.extend(_inline(inner, [*_without(marks, "strong"), {"type": "strong"}]))
        elif (inner := m.group("em") or m.group("em2")) is not None:
            out.extend(_inline(inner, [*_without(marks, "em"), {"type": "em"}]))
        pos = m.end()
    if pos < len(text):
        out.append(_text(text[pos:], marks))
    return _merge([n for n in out if n["text"]])


def _without(marks: list[Node], mark_type: str) -> list[Node]:
    return [m for m in marks if m["type"] != mark_type]


def _merge(nodes: list[Node]) -> list[Node]:
    """Join neighbouring text nodes with the same marks (ADF editors do the same)."""
    out: list[Node] = []
    for n in nodes:
        if out and out[-1].get("marks") == n.get("marks"):
            out[-1] = {**out[-1], "text": out[-1]["text"] + n["text"]}
        else:
            out.append(n)
    return out
