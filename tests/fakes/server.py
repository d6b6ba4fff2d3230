"""A strict local HTTP server for connector tests: scripted routes, recorded requests, faults."""

from __future__ import annotations

import base64
import contextlib
import json as jsonlib
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from requests.structures import CaseInsensitiveDict

STATUS_UNEXPECTED = 599  # no route matched: the test sent a request it did not plan for
STATUS_HANDLER_ERROR = 598  # the handler itself raised (a bug in the test)


@dataclass
class Response:
    """What a route answers. dict/list bodies are JSON-encoded, str bodies UTF-8 encoded, bytes
    (e.g. gzip or zip archives) are sent as they are.

    Faults, for testing the client's error handling:
    - `delay_s`: stall this long before answering (read timeouts);
    - `disconnect='close'`: close the connection without answering; `'reset'`: send a TCP RST;
    - `truncate_to=n`: announce the full Content-Length, send only n body bytes, then close;
    - `Response.cut_short(obj)`: a well-formed 200 whose body is the first part of a JSON document
      (Content-Length matches what is sent), as a proxy or a crashed backend may answer.
    """

    status: int = 200
    body: bytes | str | dict | list | None = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    disconnect: str | None = None
    truncate_to: int | None = None

    @classmethod
    def json(cls, obj: Any, status: int = 200, **headers: str) -> Response:
        return cls(status=status, body=obj, headers=dict(headers))

    @classmethod
    def drop(cls) -> Response:
        return cls(disconnect="close")

    @classmethod
    def reset(cls) -> Response:
        return cls(disconnect="reset")

    @classmethod
    def cut_short(cls, obj: Any, keep: float = 0.5, status: int = 200) -> Response:
        """`obj` as JSON, cut after `keep` (a fraction) of its bytes, with a consistent
        Content-Length: only the body's content says it is broken."""
        payload = obj if isinstance(obj, bytes) else jsonlib.dumps(obj).encode()
        return cls(
            status, payload[: int(len(payload) * keep)], {"Content-Type": "application/json"}
        )

    @classmethod
    def stall(cls, seconds: float, then: Response | None = None) -> Response:
        base = then or cls()
        return cls(status=base.status, body=base.body, headers=dict(base.headers), delay_s=seconds)

    def encoded(self) -> tuple[bytes, dict[str, str]]:
        headers = dict(self.headers)
        lower = {k.lower() for k in headers}
        if isinstance(self.body, dict | list):
            payload = jsonlib.dumps(self.body).encode()
            if "content-type" not in lower:
                headers["Content-Type"] = "application/json"
        elif isinstance(self.body, str):
            payload = self.body.encode()
            if "content-type" not in lower:
                headers["Content-Type"] = "text/plain; charset=utf-8"
        else:
            payload = bytes(self.body or b"")
        return payload, headers


@dataclass
class Request:
    """One request as the server received it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: CaseInsensitiveDict
    body: bytes
    target: str  # the raw request target: path and query string as sent
    groups: dict[str, str | None] = field(default_factory=dict)  # named groups of the route regex

    def json(self) -> Any:
        return jsonlib.loads(self.body)

    def arg(self, name: str, default: str | None = None) -> str | None:
        """The first value of query parameter `name`."""
        values = self.query.get(name)
        return values[0] if values else default


Handler = Callable[[Request], Response]
Answer = Response | Handler


def echo(status: int = 401, *, style: str = "text", pad: int = 0) -> Handler:
    """A handler that answers `status` echoing what the client sent, as careless servers do:
    the Authorization header (whole, without its scheme, and Basic credentials decoded), the
    X-Api-Key header and the query string. `style="json"` echoes every request header in a JSON
    object; `pad` filler characters come first, so an echo can straddle an excerpt's cut."""

    def answer(req: Request) -> Response:
        auth = req.headers.get("Authorization", "")
        scheme, _, bare = auth.partition(" ") if " " in auth else ("", "", auth)
        decoded = ""
        if scheme.lower() == "basic":
            with contextlib.suppress(ValueError):
                decoded = base64.b64decode(bare).decode("utf-8", "replace")
        query = req.target.partition("?")[2]
        if style == "json":
            return Response.json(
                {
                    "authorization": auth,
                    "user": decoded,
                    "query": query,
                    "headers": dict(req.headers),
                },
                status=status,
            )
        text = (
            f"{'.' * pad}rejected {bare} decoded {decoded} | Authorization: {auth} | "
            f"X-Api-Key: {req.headers.get('X-Api-Key', '-')} | query {query}"
        )
        return Response(status, text)

    return answer


def _answer(item: Answer, req: Request) -> Response:
    return item if isinstance(item, Response) else item(req)


@dataclass
class _Route:
    method: str
    pattern: re.Pattern[str]
    handler: Answer | None = None
    queue: list[Answer] = field(default_factory=list)

    def matches(self, method: str, path: str) -> re.Match[str] | None:
        head_of_get = method == "HEAD" and self.method == "GET"  # as real servers do
        if self.method not in ("*", method) and not head_of_get:
            return None
        return self.pattern.fullmatch(path)

    def next_answer(self) -> Answer:
        # Queued answers first; then the fallback handler, or else the last queued one repeats.
        if len(self.queue) > 1 or (self.queue and self.handler is not None):
            return self.queue.pop(0)
        if self.queue:
            return self.queue[0]
        assert self.handler is not None
        return self.handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    fake: FakeServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like real APIs
    disable_nagle_algorithm = True  # small answers on a kept-alive socket must not wait 40 ms
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.fake._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.fake._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        pass  # keep test output clean; `srv.requests` is the log

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        fake = self.server.fake
        started = time.perf_counter()
        if fake.latency_s and fake._stopping.wait(fake.latency_s):
            self.close_connection = True
            return
        body = self._read_body()
        split = urlsplit(self.path)
        req = Request(
            method=self.command,
            path=split.path,
            query=parse_qs(split.query, keep_blank_values=True),
            headers=CaseInsensitiveDict(self.headers.items()),
            body=body,
            target=self.path,
        )
        resp = fake._dispatch(req)
        self._send(resp, head=self.command == "HEAD")
        with fake._lock:
            fake.spans.append((started, time.perf_counter()))

    def _send(self, resp: Response, *, head: bool) -> None:
        fake = self.server.fake
        if resp.delay_s and fake._stopping.wait(resp.delay_s):
            self.close_connection = True
            return
        if resp.disconnect:
            if resp.disconnect == "reset":
                # SO_LINGER 0 makes close() send RST instead of FIN: "connection reset by peer".
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.connection.close()  # before socketserver's polite shutdown() sends a FIN
            self.close_connection = True
            return
        payload, headers = resp.encoded()
        self.send_response_only(resp.status)
        for name, value in headers.items():
            self.send_header(name, value)
        if "content-length" not in {k.lower() for k in headers}:
            self.send_header("Content-Length", str(len(payload)))
        if resp.truncate_to is not None:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if head:
            return
        if resp.truncate_to is not None:
            payload = payload[: resp.truncate_to]
        try:
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (e.g. its read timeout fired)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (ConnectionResetError, BrokenPipeError, TimeoutError, OSError):
            self.close_connection = True


class FakeServer:
    """`with FakeServer() as srv:` serves on 127.0.0.1:<free port> in a daemon thread.

    Strict: a request no route matches is answered 599 and recorded in `srv.unexpected`;
    a handler that raises is answered 598 and recorded in `srv.errors`.

    `latency_s`: every request waits this long before it is handled, as a remote API's round
    trip does (benchmarks of parallel pulls); `spans` records (start, end) of each request in
    `time.perf_counter()` seconds.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._routes: list[_Route] = []
        self._conns: set[socket.socket] = set()
        self._stopping = threading.Event()
        self.requests: list[Request] = []
        self.unexpected: list[Request] = []
        self.errors: list[tuple[Request, BaseException]] = []
        self.latency_s = 0.0
        self.spans: list[tuple[float, float]] = []
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> FakeServer:
        httpd = _Server(("127.0.0.1", 0), _Handler)
        httpd.fake = self
        self._httpd = httpd
        # A short poll interval: shutdown() waits for the next poll, once per test.
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:  # idle keep-alive connections would otherwise park a thread each
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._httpd = None

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- routes ------------------------------------------------------------------------------
    def route(self, method: str, path_regex: str, handler: Answer) -> None:
        """Answer `method path_regex` (fullmatch on the path, no query) with `handler(req)` or a
        fixed Response. Later routes win over earlier ones; method '*' matches any, and a GET
        route answers HEAD too (headers only)."""
        self._add(_Route(method.upper(), re.compile(path_regex), handler=handler))

    def script(
        self,
        method: str,
        path_regex: str,
        responses: Iterable[Answer],
        then: Answer | None = None,
    ) -> None:
        """Answer with `responses` in order; afterwards `then` (a handler or Response) if
        given, else the last response repeats."""
        queue = list(responses)
        if not queue and then is None:
            raise ValueError("script() needs at least one response or a `then` handler")
        self._add(_Route(method.upper(), re.compile(path_regex), handler=then, queue=queue))

    def _add(self, route: _Route) -> None:
        with self._lock:
            self._routes.insert(0, route)

    def reset(self) -> None:
        """Forget routes and recorded requests (reuse one server across cases)."""
        with self._lock:
            self._routes.clear()
            self.requests.clear()
            self.unexpected.clear()
            self.errors.clear()
            self.spans.clear()

    # -- inspection --------------------------------------------------------------------------
    def requests_to(self, path_regex: str, method: str | None = None) -> list[Request]:
        pattern = re.compile(path_regex)
        with self._lock:
            return [
                r
                for r in self.requests
                if pattern.fullmatch(r.path) and (method is None or r.method == method.upper())
            ]

    def assert_clean(self) -> None:
        """Strict-mock check: every request was planned and no handler failed."""
        assert not self.unexpected, [f"{r.method} {r.target}" for r in self.unexpected]
        assert not self.errors, [(f"{r.method} {r.target}", repr(e)) for r, e in self.errors]

    # -- internals ---------------------------------------------------------------------------
    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    def _dispatch(self, req: Request) -> Response:
        with self._lock:
            self.requests.append(req)
            for route in self._routes:
                match = route.matches(req.method, req.path)
                if match:
                    req.groups = match.groupdict()
                    answer = route.next_answer()
                    break
            else:
                self.unexpected.append(req)
                return Response(STATUS_UNEXPECTED, f"no route for {req.method} {req.path}")
        try:  # outside the lock: a handler may stall or call the server's inspection helpers
            return _answer(answer, req)
        except Exception as exc:  # a failing handler is a test bug: surface it, do not hang
            with self._lock:
                self.errors.append((req, exc))
            return Response(STATUS_HANDLER_ERROR, f"handler raised {exc!r}")
