"""The cred-proxy server: `python3 -m claude_bottle.cred_proxy --routes FILE [--secrets FILE] --listen H:P`.

`/<route>/<rest>?query` goes to `<upstream>/<rest>?query` with the route's header set from
its template; nothing else is reachable, so the agent can use a credential it never sees.
HTTP/1.1 is spoken by hand on both sides rather than through http.server/http.client:
the proxy needs exact request-size limits, chunk-by-chunk streaming (SSE) and pooled
upstream connections, and it must add well under a millisecond.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import signal
import socket
import socketserver
import ssl
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from types import FrameType
from typing import cast
from urllib.parse import unquote_to_bytes, urlsplit

from ..errors import BottleError
from . import CredProxyRoute, MissingSecretError, parse_routes_file, render_value, secret_names

MAX_REQUEST_LINE = 8 * 1024
MAX_HEADER_BYTES = 32 * 1024
MAX_HEADER_LINES = 100
MAX_RESPONSE_HEAD = 64 * 1024
MAX_CHUNK_LINE = 4 * 1024
IO_CHUNK = 64 * 1024
# Small bodies are read whole before sending so a request on a pooled connection that
# the upstream closed meanwhile can be replayed on a fresh one.
REPLAYABLE_BODY = 64 * 1024
CLIENT_TIMEOUT = 300.0
CONNECT_TIMEOUT = 30.0
UPSTREAM_TIMEOUT = 600.0
POOL_IDLE_SECONDS = 20.0
POOL_MAX_IDLE = 32

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
    "upgrade", "proxy-authorization", "proxy-authenticate",
})
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_BAD_PERCENT = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")


class _Refusal(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _ClientGone(Exception):
    """The client's connection broke; nothing more can be sent to it."""


class _UpstreamFailed(Exception):
    def __init__(self, message: str, *, timeout: bool = False) -> None:
        super().__init__(message)
        self.timeout = timeout


# --- configuration ------------------------------------------------------------


@dataclass(frozen=True)
class Upstream:
    scheme: str
    host: str
    port: int
    host_header: str
    path_prefix: str  # no trailing slash

    @staticmethod
    def from_url(url: str) -> Upstream:
        parts = urlsplit(url)
        https = parts.scheme == "https"
        return Upstream(
            scheme=parts.scheme, host=parts.hostname or "", port=parts.port or (443 if https else 80),
            host_header=parts.netloc, path_prefix=parts.path.rstrip("/"),
        )


@dataclass(frozen=True)
class LiveRoute:
    route: CredProxyRoute
    upstream: Upstream


@dataclass(frozen=True)
class ProxyConfig:
    routes: Mapping[str, LiveRoute]
    secrets: Mapping[str, str]

    @staticmethod
    def build(routes: Sequence[CredProxyRoute], secrets: Mapping[str, str]) -> ProxyConfig:
        live = {r.name: LiveRoute(r, Upstream.from_url(r.upstream)) for r in routes}
        return ProxyConfig(routes=live, secrets=dict(secrets))

    def missing_secrets(self) -> list[str]:
        names = secret_names(lr.route for lr in self.routes.values())
        return [n for n in names if not self.secrets.get(n)]


def read_secrets_file(path: Path) -> dict[str, str]:
    """`{"NAME": "value"}`; errors name the file and key, never a value."""
    try:
        obj: object = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise BottleError(f"{path}: cannot read: {e.strerror or e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BottleError(f"{path}: not valid JSON (expected {{\"NAME\": \"value\", ...}})") from None
    if not isinstance(obj, dict):
        raise BottleError(f"{path}: must be a JSON object of NAME: value")
    secrets: dict[str, str] = {}
    for key, value in cast("dict[str, object]", obj).items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise BottleError(f"{path}: {key!r} is not a valid variable name")
        if not isinstance(value, str):
            raise BottleError(f"{path}: {key}: must be a string")
        secrets[key] = value
    return secrets


def load_config(routes_path: Path, secrets_path: Path | None, environ: Mapping[str, str]) -> ProxyConfig:
    try:
        text = routes_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else "not UTF-8"
        raise BottleError(f"{routes_path}: cannot read: {reason or e}") from None
    routes = parse_routes_file(text, where=str(routes_path))
    secrets = dict(environ)
    if secrets_path is not None:
        secrets.update(read_secrets_file(secrets_path))
    return ProxyConfig.build(routes, secrets)


# --- byte-level I/O -------------------------------------------------------------


class _Reader:
    """Buffered reads from one socket; `on_block` runs before any read that may wait,
    so output collected meanwhile is flushed instead of held back (SSE event by event)."""

    __slots__ = ("sock", "buf", "on_block", "error", "malformed")

    def __init__(
        self, sock: socket.socket, error: Callable[[str, bool], Exception], malformed: Callable[[str], Exception],
    ) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.on_block: Callable[[], None] | None = None
        self.error = error  # the connection failed or timed out
        self.malformed = malformed  # the peer broke the protocol

    def _recv(self, n: int) -> bytes:
        if self.on_block is not None:
            self.on_block()
        try:
            return self.sock.recv(n)
        except TimeoutError:
            raise self.error("timed out", True) from None
        except OSError as e:
            raise self.error(e.strerror or str(e), False) from None

    def read_head(self, *, line_max: int, head_max: int, lines_max: int) -> list[bytes] | None:
        """The start line and header lines, or None on a clean close before any byte."""
        buf = self.buf
        scanned = 0
        while True:
            while buf.startswith(b"\r\n"):
                del buf[:2]
            end = buf.find(b"\r\n\r\n", max(0, scanned - 3))
            if end >= 0:
                break
            first = buf.find(b"\r\n")
            if (first < 0 and len(buf) > line_max) or first > line_max:
                raise _Refusal(414, f"request line longer than {line_max} bytes")
            if first >= 0 and len(buf) - first > head_max:
                raise _Refusal(431, f"headers larger than {head_max} bytes")
            scanned = len(buf)
            data = self._recv(IO_CHUNK)
            if not data:
                if not buf:
                    return None
                raise self.malformed("connection closed in the middle of a message head")
            buf += data
        lines = bytes(buf[:end]).split(b"\r\n")
        del buf[:end + 4]
        if len(lines[0]) > line_max:
            raise _Refusal(414, f"request line longer than {line_max} bytes")
        if end - len(lines[0]) > head_max:
            raise _Refusal(431, f"headers larger than {head_max} bytes")
        if len(lines) - 1 > lines_max:
            raise _Refusal(431, f"more than {lines_max} header lines")
        return lines

    def read_line(self, limit: int) -> bytes:
        buf = self.buf
        while True:
            i = buf.find(b"\r\n", 0, limit + 2)
            if i >= 0:
                line = bytes(buf[:i])
                del buf[:i + 2]
                return line
            if len(buf) > limit:
                raise self.malformed("line too long in a chunked body")
            data = self._recv(IO_CHUNK)
            if not data:
                raise self.malformed("connection closed in the middle of a chunked body")
            buf += data

    def read_some(self, n: int) -> bytes:
        """Up to n bytes, waiting only if none are buffered; b"" at end of stream."""
        if self.buf:
            data = bytes(self.buf[:n])
            del self.buf[:n]
            return data
        return self._recv(min(n, IO_CHUNK))

    def read_exact(self, n: int) -> bytes:
        parts: list[bytes] = []
        while n:
            data = self.read_some(n)
            if not data:
                raise self.malformed("connection closed in the middle of a body")
            parts.append(data)
            n -= len(data)
        return b"".join(parts)


class _Writer:
    """Collects output and sends it in one syscall when the peer would otherwise wait."""

    __slots__ = ("sock", "parts", "size", "chunked", "error")

    def __init__(self, sock: socket.socket, error: Callable[[str, bool], Exception], *, chunked: bool = False) -> None:
        self.sock = sock
        self.parts: list[bytes] = []
        self.size = 0
        self.chunked = chunked
        self.error = error

    def write(self, data: bytes) -> None:
        self.parts.append(data)
        self.size += len(data)
        if self.size >= IO_CHUNK:
            self.flush()

    def body(self, data: bytes) -> None:
        if self.chunked:
            self.write(b"%x\r\n" % len(data))
            self.write(data)
            self.write(b"\r\n")
        else:
            self.write(data)

    def end(self) -> None:
        if self.chunked:
            self.write(b"0\r\n\r\n")
        self.flush()

    def flush(self) -> None:
        if not self.parts:
            return
        data = self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)
        self.parts.clear()
        self.size = 0
        try:
            self.sock.sendall(data)
        except TimeoutError:
            raise self.error("timed out", True) from None
        except OSError as e:
            raise self.error(e.strerror or str(e), False) from None


def _client_error(message: str, timeout: bool) -> Exception:
    return _ClientGone(message)


def _client_malformed(message: str) -> Exception:
    return _Refusal(400, message)


def _upstream_error(message: str, timeout: bool) -> Exception:
    return _UpstreamFailed(message, timeout=timeout)


def _upstream_malformed(message: str) -> Exception:
    return _UpstreamFailed(f"malformed response: {message}")


def _relay_body(src: _Reader, dst: _Writer, mode: str, length: int) -> None:
    """Copy one message body from src to dst as it arrives. mode: length, chunked or eof."""
    src.on_block = dst.flush
    try:
        if mode == "length":
            while length:
                data = src.read_some(min(length, IO_CHUNK))
                if not data:
                    raise src.malformed("connection closed in the middle of a body")
                dst.body(data)
                length -= len(data)
        elif mode == "chunked":
            while True:
                size_field = src.read_line(MAX_CHUNK_LINE).split(b";", 1)[0].strip(b" \t")
                if not _HEX.fullmatch(size_field):
                    raise src.malformed("malformed chunk size")
                size = int(size_field, 16)
                if size == 0:
                    for _ in range(MAX_HEADER_LINES + 1):  # trailers are dropped
                        if not src.read_line(MAX_CHUNK_LINE):
                            break
                    else:
                        raise src.malformed("too many trailer lines")
                    break
                while size:
                    data = src.read_some(min(size, IO_CHUNK))
                    if not data:
                        raise src.malformed("connection closed in the middle of a chunk")
                    dst.body(data)
                    size -= len(data)
                if src.read_line(2):
                    raise src.malformed("malformed chunk terminator")
        else:
            while data := src.read_some(IO_CHUNK):
                dst.body(data)
    finally:
        src.on_block = None
    dst.end()


def _parse_headers(lines: Sequence[bytes]) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    for raw in lines:
        name, colon, value = raw.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            raise _Refusal(400, "malformed header line")
        value = value.strip(b" \t")
        if _BAD_VALUE.search(value):
            raise _Refusal(400, "control character in a header value")
        headers.append((name.decode("ascii"), value.decode("latin-1")))
    return headers


def _tokens(headers: Sequence[tuple[str, str]], name: str) -> list[str]:
    return [t.strip().lower() for n, v in headers if n.lower() == name for t in v.split(",") if t.strip()]


def _body_framing(headers: Sequence[tuple[str, str]], fail: Callable[[str], Exception]) -> tuple[str, int]:
    """("chunked", 0), ("length", n), or ("none", 0) when there is no declared body."""
    te = _tokens(headers, "transfer-encoding")
    lengths = {v.strip() for n, v in headers if n.lower() == "content-length"}
    if te:
        if lengths:
            raise fail("both Transfer-Encoding and Content-Length")
        if te != ["chunked"]:
            raise fail("unsupported Transfer-Encoding")
        return "chunked", 0
    if not lengths:
        return "none", 0
    if len(lengths) > 1 or not all(c in "0123456789" for c in next(iter(lengths))) or not next(iter(lengths)):
        raise fail("invalid Content-Length")
    return "length", int(next(iter(lengths)))


def _route_path(target: str) -> tuple[str, str, str | None]:
    """Split and check an origin-form target into (route name, rest of path, query)."""
    path, qmark, query = target.partition("?")
    if any(not ("\x21" <= c <= "\x7e") for c in target):
        raise _Refusal(400, "request target has spaces, control or non-ASCII characters")
    for segment in path.split("/")[1:]:
        raw = segment.encode("ascii")
        if b"%" in raw:
            if _BAD_PERCENT.search(raw):
                raise _Refusal(400, "malformed percent-encoding in the path")
            raw = unquote_to_bytes(raw)
        if raw in (b".", b".."):
            raise _Refusal(400, "dot segments are not allowed in the path")
        if b"/" in raw or b"\\" in raw or b"\0" in raw:
            raise _Refusal(400, "encoded slashes, backslashes and NUL are not allowed in the path")
    name, slash, rest = path[1:].partition("/")
    return name, slash + rest, query if qmark else None


# --- upstream connections ---------------------------------------------------------


class _UpstreamConn:
    __slots__ = ("sock", "reader", "idle_since")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = _Reader(sock, _upstream_error, _upstream_malformed)
        self.idle_since = 0.0

    def usable(self) -> bool:
        """Still open with nothing unread: a readable idle socket means EOF or junk."""
        if time.monotonic() - self.idle_since > POOL_IDLE_SECONDS or self.reader.buf:
            return False
        if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
            return False
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        return not poller.poll(0)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class UpstreamPool:
    """Idle keep-alive connections per (scheme, host, port), most recently used first."""

    def __init__(self, ssl_context: ssl.SSLContext | None) -> None:
        self._ssl_context = ssl_context
        self._idle: dict[tuple[str, str, int], list[_UpstreamConn]] = {}
        self._lock = threading.Lock()

    def acquire(self, up: Upstream) -> tuple[_UpstreamConn, bool]:
        key = (up.scheme, up.host, up.port)
        while True:
            with self._lock:
                idle = self._idle.get(key)
                conn = idle.pop() if idle else None
            if conn is None:
                return self._connect(up), False
            if conn.usable():
                return conn, True
            conn.close()

    def release(self, up: Upstream, conn: _UpstreamConn) -> None:
        conn.idle_since = time.monotonic()
        with self._lock:
            idle = self._idle.setdefault((up.scheme, up.host, up.port), [])
            if len(idle) < POOL_MAX_IDLE:
                idle.append(conn)
                return
        conn.close()

    def close_all(self) -> None:
        with self._lock:
            conns = [c for idle in self._idle.values() for c in idle]
            self._idle.clear()
        for conn in conns:
            conn.close()

    def _connect(self, up: Upstream) -> _UpstreamConn:
        try:
            sock = socket.create_connection((up.host, up.port), timeout=CONNECT_TIMEOUT)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if up.scheme == "https":
                if self._ssl_context is None:
                    self._ssl_context = ssl.create_default_context()
                sock = self._ssl_context.wrap_socket(sock, server_hostname=up.host)
            sock.settimeout(UPSTREAM_TIMEOUT)
        except TimeoutError:
            raise _UpstreamFailed(f"connecting to {up.host_header} timed out", timeout=True) from None
        except ssl.SSLError as e:
            raise _UpstreamFailed(f"TLS with {up.host_header} failed: {e.reason or e}") from None
        except OSError as e:
            raise _UpstreamFailed(f"cannot connect to {up.host_header}: {e.strerror or e}") from None
        return _UpstreamConn(sock)


# --- the server --------------------------------------------------------------------


def _log(line: str) -> None:
    os.write(2, f"cred-proxy: {line}\n".encode("utf-8", "replace"))


class CredProxyServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        config: ProxyConfig,
        *,
        reload_config: Callable[[], ProxyConfig] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.config = config
        self.pool = UpstreamPool(ssl_context)
        self._reload_config = reload_config
        super().__init__(address, socketserver.BaseRequestHandler)

    def reload(self) -> None:
        """Swap in new routes and secrets; an invalid file keeps the old ones serving."""
        if self._reload_config is None:
            return
        try:
            config = self._reload_config()
        except BottleError as e:
            _log(f"reload failed, keeping the previous routes and secrets: {e}")
            return
        self.config = config
        _log(f"reloaded: {len(config.routes)} routes ({', '.join(config.routes) or 'none'})")
        warn_missing_secrets(config)

    def finish_request(self, request: socket.socket | tuple[bytes, socket.socket], client_address: object) -> None:
        if isinstance(request, socket.socket):
            _ClientSession(self, request).serve()

    def server_close(self) -> None:
        super().server_close()
        self.pool.close_all()


def warn_missing_secrets(config: ProxyConfig) -> None:
    for name in config.missing_secrets():
        _log(f"warning: ${{{name}}} is not set; requests on routes that use it get 502")


def _status_line(status: int, reason: str = "") -> bytes:
    if not reason:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            pass
    return f"HTTP/1.1 {status} {reason}\r\n".encode("latin-1")


class _ClientSession:
    """One client connection: requests are served in turn while it stays keep-alive."""

    def __init__(self, server: CredProxyServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        sock.settimeout(CLIENT_TIMEOUT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = _Reader(sock, _client_error, _client_malformed)
        self.method = self.route_name = "-"
        self.status_sent = 0  # the status already sent to the client, 0 before any

    def serve(self) -> None:
        try:
            while self._serve_one():
                pass
        except (_ClientGone, _UpstreamFailed, OSError):
            pass

    def _reply(self, status: int, text: str, *, keep: bool = False) -> None:
        body = text.encode() + b"\n"
        head = (f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
                + ("" if keep else "Connection: close\r\n") + "\r\n")
        out = _Writer(self.sock, _client_error)
        out.write(_status_line(status) + head.encode() + body)
        out.flush()

    def _serve_one(self) -> bool:
        try:
            lines = self.reader.read_head(line_max=MAX_REQUEST_LINE, head_max=MAX_HEADER_BYTES,
                                          lines_max=MAX_HEADER_LINES)
        except _Refusal as r:
            self._reply(r.status, f"cred-proxy: {r}")
            _log(f"- - {r.status} 0.0ms")
            return False
        if lines is None:
            return False
        started = time.perf_counter()
        self.method, self.route_name, self.status_sent = "-", "-", 0
        keep = False
        try:
            keep = self._dispatch(lines)
        except _Refusal as r:
            self.status_sent = r.status
            self._reply(r.status, f"cred-proxy: {r}")
        except _UpstreamFailed as e:
            # Once the response head is out, the only way to signal failure is to cut the connection.
            if not self.status_sent:
                self.status_sent = 504 if e.timeout else 502
                self._reply(self.status_sent, f"cred-proxy: upstream of route {self.route_name!r} failed: {e}")
        except _ClientGone:
            self.status_sent = self.status_sent or 499
        finally:
            elapsed = (time.perf_counter() - started) * 1000
            _log(f"{self.method} {self.route_name} {self.status_sent} {elapsed:.1f}ms")
        return keep

    def _dispatch(self, lines: list[bytes]) -> bool:
        parts = lines[0].split(b" ")
        if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]):
            raise _Refusal(400, "malformed request line")
        method = self.method = parts[0].decode("ascii")
        if parts[2] not in (b"HTTP/1.1", b"HTTP/1.0"):
            raise _Refusal(505, "only HTTP/1.0 and HTTP/1.1 are supported")
        if method == "CONNECT":
            raise _Refusal(405, "CONNECT is refused: this is not a forward proxy")
        target = parts[1].decode("latin-1")
        if not target.startswith("/"):
            raise _Refusal(400, "only origin-form request targets (/<route>/<path>) are accepted")
        headers = _parse_headers(lines[1:])
        framing = _body_framing(headers, _client_malformed)
        client_keep = parts[2] == b"HTTP/1.1" and "close" not in _tokens(headers, "connection")

        if target.split("?", 1)[0] == "/_health":
            if method not in ("GET", "HEAD"):
                raise _Refusal(405, "/_health answers GET only")
            keep = client_keep and framing[0] == "none"
            self._reply(200, "ok", keep=keep)
            self.status_sent = 200
            return keep
        name, rest, query = _route_path(target)
        config = self.server.config
        live = config.routes.get(name)
        if live is None:
            known = ", ".join(sorted(config.routes)) or "none"
            raise _Refusal(404, f"no route named {name!r} (routes: {known})")
        self.route_name = name
        if method == "TRACE":
            raise _Refusal(405, "TRACE is refused: it would echo the injected credential back")
        try:
            credential = render_value(live.route.value, config.secrets)
        except MissingSecretError as e:
            raise _Refusal(502, f"route {name!r} needs secret ${{{e.name}}}, which the proxy does not have")
        return self._forward(method, live, rest, query, headers, framing, credential, client_keep)

    def _forward(
        self, method: str, live: LiveRoute, rest: str, query: str | None, headers: list[tuple[str, str]],
        framing: tuple[str, int], credential: str, client_keep: bool,
    ) -> bool:
        up = live.upstream
        route_header = live.route.header
        drop = HOP_BY_HOP | set(_tokens(headers, "connection")) | {"host", "content-length", "expect",
                                                                    route_header.lower()}
        path = (up.path_prefix + rest) or "/"
        if query is not None:
            path += "?" + query
        out_lines = [f"{method} {path} HTTP/1.1", f"Host: {up.host_header}"]
        out_lines += [f"{n}: {v}" for n, v in headers if n.lower() not in drop]
        out_lines.append(f"{route_header}: {credential}")
        mode, length = framing
        if mode == "chunked":
            out_lines.append("Transfer-Encoding: chunked")
        elif mode == "length":
            out_lines.append(f"Content-Length: {length}")
        try:
            head = ("\r\n".join(out_lines) + "\r\n\r\n").encode("latin-1")
        except UnicodeEncodeError:
            raise _Refusal(502, f"secret for route {live.route.name!r} cannot be sent in an HTTP header") from None

        if mode != "none" and "100-continue" in _tokens(headers, "expect"):
            self._reply_continue()
        payload: bytes | None = None
        if mode == "none" or (mode == "length" and length <= REPLAYABLE_BODY):
            payload = head + self.reader.read_exact(length) if mode == "length" else head

        conn, lines = self._exchange(up, head, payload, mode, length)
        while True:
            status, reason, resp_headers, version11 = self._parse_status(lines)
            if not 100 <= status < 200:
                break
            if status == 101:
                conn.close()
                raise _UpstreamFailed("upstream tried to switch protocols")
            lines = self._read_response_head(conn)
        return self._relay_response(method, up, conn, status, reason, resp_headers, version11,
                                    client_keep=client_keep)

    def _reply_continue(self) -> None:
        out = _Writer(self.sock, _client_error)
        out.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        out.flush()

    def _exchange(
        self, up: Upstream, head: bytes, payload: bytes | None, mode: str, length: int,
    ) -> tuple[_UpstreamConn, list[bytes]]:
        """Send the request and read the response head, replaying once on a stale pooled connection."""
        for attempt in range(2):
            conn, reused = self.server.pool.acquire(up)
            try:
                if payload is not None:
                    out = _Writer(conn.sock, _upstream_error)
                    out.write(payload)
                    out.flush()
                else:
                    out = _Writer(conn.sock, _upstream_error, chunked=mode == "chunked")
                    out.write(head)
                    _relay_body(self.reader, out, "chunked" if mode == "chunked" else "length", length)
                return conn, self._read_response_head(conn)
            except _UpstreamFailed:
                conn.close()
                if not (reused and payload is not None and attempt == 0):
                    raise
            except BaseException:
                conn.close()
                raise
        raise AssertionError("unreachable")

    @staticmethod
    def _read_response_head(conn: _UpstreamConn) -> list[bytes]:
        try:
            lines = conn.reader.read_head(line_max=MAX_REQUEST_LINE, head_max=MAX_RESPONSE_HEAD,
                                          lines_max=2 * MAX_HEADER_LINES)
        except _Refusal as r:
            raise _UpstreamFailed(f"response head too large ({r})") from None
        if lines is None:
            raise _UpstreamFailed("closed the connection without responding")
        return lines

    @staticmethod
    def _parse_status(lines: list[bytes]) -> tuple[int, str, list[tuple[str, str]], bool]:
        version, _, rest = lines[0].partition(b" ")
        code, _, reason = rest.partition(b" ")
        if version not in (b"HTTP/1.1", b"HTTP/1.0") or len(code) != 3 or not code.isdigit():
            raise _UpstreamFailed("malformed status line")
        try:
            headers = _parse_headers(lines[1:])
        except _Refusal as r:
            raise _UpstreamFailed(f"malformed response: {r}") from None
        return int(code), reason.decode("latin-1"), headers, version == b"HTTP/1.1"

    def _relay_response(
        self, method: str, up: Upstream, conn: _UpstreamConn, status: int, reason: str,
        headers: list[tuple[str, str]], version11: bool, *, client_keep: bool,
    ) -> bool:
        if method == "HEAD" or status in (204, 304):
            mode, length = "none", 0
        else:
            te = _tokens(headers, "transfer-encoding")
            if te:
                mode, length = ("chunked" if te[-1] == "chunked" else "eof"), 0
            else:
                mode, length = _body_framing(headers, lambda m: _UpstreamFailed(f"malformed response: {m}"))
                if mode == "none":
                    mode = "eof"
        conn_tokens = set(_tokens(headers, "connection"))
        upstream_keep = version11 and "close" not in conn_tokens and mode != "eof"
        # HTTP/1.0 clients get the body raw and the connection closed after it.
        to_client_chunked = mode in ("chunked", "eof") and client_keep
        keep = client_keep
        drop = HOP_BY_HOP | conn_tokens
        if mode != "none":
            drop = drop | {"content-length"}
        lines = [_status_line(status, reason)]
        lines += [f"{n}: {v}\r\n".encode("latin-1") for n, v in headers if n.lower() not in drop]
        if mode == "length":
            lines.append(b"Content-Length: %d\r\n" % length)
        elif to_client_chunked:
            lines.append(b"Transfer-Encoding: chunked\r\n")
        if not keep:
            lines.append(b"Connection: close\r\n")
        lines.append(b"\r\n")

        out = _Writer(self.sock, _client_error, chunked=to_client_chunked)
        out.write(b"".join(lines))
        self.status_sent = status
        if mode == "none":
            out.flush()
        else:
            _relay_body(conn.reader, out, mode, length)
        if upstream_keep:
            self.server.pool.release(up, conn)
        else:
            conn.close()
        return keep


def _parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise BottleError(f"--listen {listen!r}: expected HOST:PORT, e.g. 0.0.0.0:8080")
    return host, int(port)


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m claude_bottle.cred_proxy",
                                     description="cred-proxy: inject credentials into requests to declared upstreams")
    parser.add_argument("--routes", required=True, type=Path, help="routes.json ({\"routes\": [...]})")
    parser.add_argument("--secrets", type=Path, help="JSON {\"NAME\": \"value\"}; overrides the environment")
    parser.add_argument("--listen", default="0.0.0.0:8080", help="HOST:PORT (default 0.0.0.0:8080)")
    args = parser.parse_args(argv)
    routes_path = cast(Path, args.routes)
    secrets_path = cast("Path | None", args.secrets)

    def load() -> ProxyConfig:
        return load_config(routes_path, secrets_path, os.environ)

    try:
        address = _parse_listen(cast(str, args.listen))
        config = load()
        server = CredProxyServer(address, config, reload_config=load)
    except BottleError as e:
        _log(str(e))
        return 1
    except OSError as e:
        _log(f"cannot listen on {args.listen}: {e.strerror or e}")
        return 1
    signal.signal(signal.SIGHUP, lambda signum, frame: server.reload())
    signal.signal(signal.SIGTERM, _exit_on_signal)
    host, port = server.server_address[:2]
    _log(f"listening on {host}:{port} with {len(config.routes)} routes ({', '.join(config.routes) or 'none'})")
    warn_missing_secrets(config)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
