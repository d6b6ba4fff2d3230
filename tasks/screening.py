"""The screen: files and pages set aside before DuckDB reads a batch (tasks/load/batch.py).

Gzip is decompressed by its magic bytes; binary, HTML and (pages) non-UTF-8 or off-shape files are
set aside whole (quarantined without their text: they may hold personal data; the row carries
their sha256 and size); JSON-lines files lose only their non-UTF-8 lines, to a cleaned copy.
Cheap on good input: a byte scan per file and, for pages, one JSON validity/type pass.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import shutil
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from tasks import redact
from tasks.contracts import WHOLE_FILE_RULES, SourceSpec
from tasks.db import sql_list, sql_literal

_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20
_HTML_STARTS = (b"<!doctype", b"<html", b"<?xml", b"<head", b"<body")
# Top-level keys of vendor error bodies (GitHub/Zendesk message or error, GraphQL and Freshdesk
# errors, Jira errorMessages, Sentry/PostHog detail).
_ERROR_KEYS = ("message", "error", "errors", "errorMessages", "detail")


@dataclass
class Reject:
    """A file/page or line set aside by the screen; never holds a whole file's text."""

    path: str  # the original file
    rule: str
    detail: str  # what is wrong and where
    pos: int | None = None  # line number (line rejects)
    payload: str | None = None  # line rejects: the line, undecodable bytes escaped
    sha256: str | None = None
    size: int | None = None

    @property
    def whole(self) -> bool:
        return self.rule in WHOLE_FILE_RULES


@dataclass
class Screen:
    """A batch after screening: the files DuckDB reads (copies where needed) and the rejects."""

    paths: list[Path] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)
    rejects: list[Reject] = field(default_factory=list)

    @property
    def rejected_files(self) -> dict[str, Reject]:
        return {r.path: r for r in self.rejects if r.whole}

    def extend(self, other: Screen) -> None:
        self.paths += other.paths
        self.aliases.update(other.aliases)
        self.rejects += other.rejects


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def whole_reject(path: Path, rule: str, detail: str) -> Reject:
    return Reject(str(path), rule, detail, sha256=sha256_file(path), size=path.stat().st_size)


def first_invalid_utf8(path: Path) -> int | None:
    """Byte offset of the first byte that is not valid UTF-8, or None (ASCII chunks skip the
    decoder: nearly every export is ASCII)."""
    dec = codecs.getincrementaldecoder("utf-8")()
    done = 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            pending = len(dec.getstate()[0])
            if not pending and chunk.isascii():
                done += len(chunk)
                continue
            try:
                dec.decode(chunk)
            except UnicodeDecodeError as e:
                return done - pending + e.start
            done += len(chunk)
    try:
        dec.decode(b"", final=True)
    except UnicodeDecodeError:
        return done - len(dec.getstate()[0])
    return None


def drop_undecodable_lines(original: Path, readable: Path, copy: Path) -> tuple[Path, list[Reject]]:
    """A copy of a JSON-lines file with each line that is not valid UTF-8 blanked (so line
    numbers stay), and one reject per such line. Only files that failed the UTF-8 check."""
    rejects = []
    offset = 0
    with readable.open("rb") as src, copy.open("wb") as dst:
        for n, line in enumerate(src, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as e:
                rejects.append(
                    Reject(
                        str(original),
                        "invalid_utf8",
                        f"line {n} is not valid UTF-8 (byte {offset + e.start} of the file)",
                        pos=n,
                        # kept redacted, like every landed text
                        payload=redact.redact_text(
                            line.rstrip(b"\r\n").decode("utf-8", "backslashreplace")
                        ),
                    )
                )
                dst.write(b"\n")
            else:
                dst.write(line)
            offset += len(line)
    return copy, rejects


def screen_file(
    spec: SourceSpec, path: Path, work: Path
) -> tuple[Reject | None, Path | None, list[Reject]]:
    """(whole-file reject, or the file DuckDB should read and the lines it must not)."""
    with path.open("rb") as f:
        magic = f.read(2)
    readable = path
    if magic == _GZIP_MAGIC:  # gzip whatever the name says
        readable = work / f"{uuid.uuid4().hex}.gunzipped"
        try:
            with gzip.open(path, "rb") as src, readable.open("wb") as dst:
                shutil.copyfileobj(src, dst, _CHUNK)
        except (OSError, EOFError, zlib.error) as exc:
            readable.unlink(missing_ok=True)
            detail = f"gzip data cannot be decompressed ({type(exc).__name__})"
            return whole_reject(path, "undecodable_file", detail), None, []
    with readable.open("rb") as f:
        head = f.read(8192)
    nul = head.find(b"\x00")
    if nul >= 0:
        detail = f"binary data, not text (a NUL byte at byte {nul})"
        return whole_reject(path, "undecodable_file", detail), None, []
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:16].lower()
    if start.startswith(_HTML_STARTS) or (spec.layout != "lines" and start.startswith(b"<")):
        detail = "an HTML/XML document, not JSON (an error or login page?)"
        return whole_reject(path, "html_file", detail), None, []
    bad_at = first_invalid_utf8(readable)
    if bad_at is None:
        return None, readable, []
    if spec.layout != "lines":
        detail = f"not valid UTF-8 (first bad byte at {bad_at})"
        return whole_reject(path, "undecodable_file", detail), None, []
    copy, rejects = drop_undecodable_lines(path, readable, work / f"{uuid.uuid4().hex}.utf8")
    return None, copy, rejects


def page_rejects(con: duckdb.DuckDBPyConnection, spec: SourceSpec, paths: list[Path]) -> dict:
    """{readable path: (rule, detail)} for pages that are not the vendor's documented shape:
    invalid JSON, the record list (spec.layout without [*]) missing or not a list, or an error
    body ({"message": …}, {"error": …}, {"errors": […]}) in place of the page."""
    container = spec.layout.removesuffix("[*]")
    name = "the page" if container == "$" else f"`{container.removeprefix('$.')}`"
    # Nearly every page is valid JSON with its list: one parse per page says so (json_type
    # raises where json_valid is false); only otherwise are the pages looked at closely.
    try:
        types = con.execute(
            f"select json_type(content, {sql_literal(container)}) from read_text({sql_list(paths)})"
        ).fetchall()
    except duckdb.Error:
        types = []
    if len(types) == len(paths) and all(t == "ARRAY" for (t,) in types):
        return {}
    # Each JSON function parses the page again: a page with its list (nearly every page) is
    # parsed twice, the page type and keys are read only for the others.
    rows = con.execute(f"""
        select filename, ok, list_type,
               case when off then json_type(content) end,
               case when off and json_type(content) = 'OBJECT' then json_keys(content) end
        from (
            select *, ok and list_type is distinct from 'ARRAY' as off
            from (
                select filename, content, ok,
                       case when ok then json_type(content, {sql_literal(container)}) end
                           as list_type
                from (select filename, content, json_valid(content) as ok
                      from read_text({sql_list(paths)}))
            )
        )
    """).fetchall()
    out = {}
    for filename, ok, list_type, page_type, keys in rows:
        if not ok:
            out[filename] = ("invalid_json_file", "not valid JSON")
        elif list_type != "ARRAY":
            shown = ", ".join(sorted(k[:30] for k in keys or [])[:8])
            found = f"{page_type.lower()}" + (f" with keys {shown}" if keys else "")
            if keys and any(k in _ERROR_KEYS for k in keys):
                out[filename] = (
                    "error_page",
                    f"an error body ({found}) instead of {name}; the request failed",
                )
            else:
                got = "missing" if list_type is None else f"a {list_type.lower()}"
                out[filename] = (
                    "unexpected_page_shape",
                    f"{name} is {got}, expected a list (page: {found})",
                )
    return out


def screen_files(
    con: duckdb.DuckDBPyConnection,
    spec: SourceSpec,
    paths: list[Path],
    work: Path,
    shape_checked: bool = False,
) -> Screen:
    """Screen files before DuckDB reads them: gzip is decompressed by its magic bytes; binary,
    HTML and (pages) non-UTF-8 or off-shape files are rejected whole; JSON-lines files lose only
    their non-UTF-8 lines (to a cleaned copy). Cheap on good input: a byte scan per file and,
    for pages, one JSON validity/type pass — skipped for pages whose shape the connector
    already checked (LandedPage.shape_checked)."""
    out = Screen()
    if len(paths) > 1:
        # The screen reads every byte of every file; file reads release the GIL, so a few
        # threads screen a batch of files in a fraction of the time (DuckDB waits for it).
        with ThreadPoolExecutor(min(4, len(paths)), thread_name_prefix="load-screen") as pool:
            screened = list(pool.map(lambda path: screen_file(spec, path, work), paths))
    else:
        screened = [screen_file(spec, path, work) for path in paths]
    for path, (whole, readable, lines) in zip(paths, screened, strict=True):
        if whole is not None:
            out.rejects.append(whole)
            continue
        assert readable is not None
        out.rejects += lines
        out.paths.append(readable)
        if readable != path:
            out.aliases[str(readable)] = str(path)
    if spec.layout not in ("lines", "table") and out.paths and not shape_checked:
        bad = page_rejects(con, spec, out.paths)
        for readable in [p for p in out.paths if str(p) in bad]:
            original = Path(out.aliases.pop(str(readable), str(readable)))
            out.paths.remove(readable)
            out.rejects.append(whole_reject(original, *bad[str(readable)]))
    return out
