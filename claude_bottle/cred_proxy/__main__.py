"""The cred-proxy server: `python3 -m claude_bottle.cred_proxy --routes FILE [--secrets FILE] --listen H:P`.

`/<route>/<rest>?query` goes to `<upstream>/<rest>?query` with the route's header set from
its template; nothing else is reachable, so the agent can use a credential it never sees.
HTTP/1.1 is spoken by hand on both sides rather than through http.server/http.client:
the proxy needs exact request-size limits, chunk-by-chunk streaming (SSE) and pooled
upstream connections, and it must add well under a millisecond per request.
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
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from types import FrameType
from typing import cast
from urllib.parse import unquote_to_bytes, urlsplit

from ..errors import BottleError
from . import CredProxyRoute, MissingSecretError, parse_routes_file, render_value

MAX_REQUEST_LINE = 8 * 1024
MAX_HEADER_BYTES = 32 * 1024
MAX_HEADER_LINES = 100
MAX_RESPONSE_HEAD = 64 * 1024
MAX_CHUNK_LINE = 4 * 1024
IO_CHUNK = 64 * 1024
# Small bodies are read whole before sending, so that a request that meets a pooled
# connection the upstream has just closed can be replayed on a fresh one.
REPLAYABLE_BODY = 64 * 1024
CLIENT_TIMEOUT = 300
LINGER_SECONDS = 1.0
CONNECT_TIMEOUT = 30.0
UPSTREAM_TIMEOUT = 600
POOL_IDLE_SECONDS = 20.0
# Servers close idle keep-alive connections after seconds, not milliseconds: a request that
# can be replayed anyway skips the poll() that detects a closed one, if it is this fresh.
POOL_FRESH_SECONDS = 1.0
POOL_MAX_IDLE = 32
LOG_FLUSH_SECONDS = 0.05

HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding",
    b"upgrade", b"proxy-authorization", b"proxy-authenticate",
})

# --- HTTP/1.1 grammar ----------------------------------------------------------------
# A whole head is validated and split by one regex match: done line by line in Python,
# parsing would cost more than everything else the proxy does per request.
_TCHAR = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]"
_FIELD_LINES = rb"(?:" + _TCHAR + rb"+:[^\x00-\x08\x0a-\x1f\x7f]*\r\n)*"  # no obs-fold, no CR/LF/NUL
_FIELDS = rb"(" + _FIELD_LINES + rb")\r\n"  # the last group of both head patterns
_REQUEST_HEAD = re.compile(rb"(" + _TCHAR + rb"+) (/[\x21-\x7e]*) HTTP/1\.([01])\r\n" + _FIELDS)
_RESPONSE_HEAD = re.compile(rb"HTTP/1\.([01]) ([0-9]{3}(?: [^\x00-\x08\x0a-\x1f\x7f]*)?)\r\n" + _FIELDS)
_FIELD_BLOCK = re.compile(_FIELD_LINES)
_TOKEN = re.compile(_TCHAR + rb"+")
# Field patterns start at the "\n" before a line (the block is searched with one put in
# front): a literal first character lets the regex engine skip ahead instead of trying
# every position, which makes these searches several times faster than with ^ and re.M.
_REQUEST_FIELDS = re.compile(rb"\n(connection|transfer-encoding|content-length|expect):[ \t]*([^\r\n]*)")
# For responses, every hop-by-hop name too: the header block is then filtered only when
# one is there, which for most responses it is not.
_RESPONSE_FIELDS = re.compile(rb"\n(" + b"|".join(sorted(HOP_BY_HOP | {b"content-length"})) + rb"):[ \t]*([^\r\n]*)")
_BAD_PERCENT = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
_NO_FIELDS: Mapping[bytes, list[bytes]] = {}


def _field_lines(names: Iterable[bytes]) -> re.Pattern[bytes]:
    """Matches the named fields' lines, from the LF before to the CR after, in LF + block."""
    alternatives = b"|".join(re.escape(n) for n in sorted(set(names)))
    return re.compile(rb"\n(?:" + alternatives + rb"):[^\r\n]*\r", re.IGNORECASE)


_REQUEST_DROP = HOP_BY_HOP | {b"host", b"content-length", b"expect"}
_RESPONSE_DROP = _field_lines(HOP_BY_HOP)
_RESPONSE_DROP_FRAMED = _field_lines(HOP_BY_HOP | {b"content-length"})


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


def _special_fields(fields: bytes, grammar: re.Pattern[bytes]) -> Mapping[bytes, list[bytes]]:
    """Values (lowercased) of the fields that decide framing and connection handling."""
    found = cast("list[tuple[bytes, bytes]]", grammar.findall(b"\n" + fields.lower()))
    if not found:
        return _NO_FIELDS
    special: dict[bytes, list[bytes]] = {}
    for name, value in found:
        special.setdefault(name, []).append(value.rstrip(b" \t"))
    return special


def _tokens(special: Mapping[bytes, list[bytes]], name: bytes) -> list[bytes]:
    if name not in special:
        return []
    return [t.strip().lower() for v in special[name] for t in v.split(b",") if t.strip()]


def _without(fields: bytes, special: Mapping[bytes, list[bytes]], drop: re.Pattern[bytes]) -> bytes:
    """`fields` without `drop`'s lines, nor those that Connection names as hop-by-hop."""
    if b"connection" in special:
        extra = set(_tokens(special, b"connection")) - {b"close", b"keep-alive"}
        if extra:
            fields = _field_lines(extra).sub(b"", b"\n" + fields)[1:]
    return drop.sub(b"", b"\n" + fields)[1:]


def _body_framing(special: Mapping[bytes, list[bytes]], fail: Callable[[str], Exception]) -> tuple[str, int]:
    """("chunked", 0), ("length", n) or ("none", 0) when no body is declared."""
    if not special:
        return "none", 0
    lengths = set(special.get(b"content-length", ()))
    if b"transfer-encoding" in special:
        if lengths:
            raise fail("both Transfer-Encoding and Content-Length")
        if _tokens(special, b"transfer-encoding") != [b"chunked"]:
            raise fail("unsupported Transfer-Encoding")
        return "chunked", 0
    if not lengths:
        return "none", 0
    length = lengths.pop()
    if lengths or not length.isdigit() or len(length) > 18:
        raise fail("invalid Content-Length")
    return "length", int(length)


def _check_path(path: bytes) -> None:
    """Refuse what could leave the route's prefix once the upstream decodes the path."""
    for segment in path.split(b"/"):
        if b"%" in segment:
            if _BAD_PERCENT.search(segment):
                raise _Refusal(400, "malformed percent-encoding in the path")
            segment = unquote_to_bytes(segment)
        if segment in (b".", b".."):
            raise _Refusal(400, "dot segments (. and ..) are not allowed in the path")
        if b"/" in segment or b"\\" in segment or b"\0" in segment:
            raise _Refusal(400, "encoded slashes, backslashes and NUL are not allowed in the path")


def _why_not_a_request(head: bytes) -> _Refusal:
    """The refusal for a complete request head that the request grammar does not match."""
    start, _, fields = head.partition(b"\r\n")
    parts = start.split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]):
        return _Refusal(400, "malformed request line")
    method, target, version = parts
    if method == b"CONNECT":
        return _Refusal(405, "CONNECT is refused: this is not a forward proxy")
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        return _Refusal(505, "only HTTP/1.0 and HTTP/1.1 are supported")
    if not target.startswith(b"/"):
        return _Refusal(400, "only origin-form request targets (/<route>/<path>) are accepted")
    if not _FIELD_BLOCK.fullmatch(fields[:-2]):
        return _Refusal(400, "malformed header line")
    return _Refusal(400, "the request target has spaces, control or non-ASCII characters")


# --- configuration --------------------------------------------------------------------


@dataclass(frozen=True)
class Upstream:
    scheme: str
    host: str
    port: int
    host_header: bytes
    path_prefix: bytes  # without a trailing slash
    pool_key: str  # scheme://host:port, which connections can be shared by

    @staticmethod
    def from_url(url: str) -> Upstream:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
        return Upstream(
            scheme=parts.scheme, host=host, port=port, host_header=parts.netloc.encode("ascii"),
            path_prefix=parts.path.rstrip("/").encode("ascii"), pool_key=f"{parts.scheme}://{host}:{port}",
        )


@dataclass(frozen=True)
class LiveRoute:
    route: CredProxyRoute
    upstream: Upstream
    drop_fields: re.Pattern[bytes]  # what the client sent that is not forwarded
    credential_line: bytes | None  # "Header: value\r\n", rendered once per (re)load
    missing_secret: str | None


@dataclass(frozen=True)
class ProxyConfig:
    routes: Mapping[str, LiveRoute]

    @staticmethod
    def build(routes: Sequence[CredProxyRoute], secrets: Mapping[str, str]) -> ProxyConfig:
        live: dict[str, LiveRoute] = {}
        for r in routes:
            try:
                line, missing = f"{r.header}: {render_value(r.value, secrets)}\r\n".encode("latin-1"), None
            except MissingSecretError as e:
                line, missing = None, e.name
            drop = _field_lines(_REQUEST_DROP | {r.header.lower().encode("ascii")})
            live[r.name] = LiveRoute(r, Upstream.from_url(r.upstream), drop, line, missing)
        return ProxyConfig(live)

    def missing_secrets(self) -> list[str]:
        return sorted({lr.missing_secret for lr in self.routes.values() if lr.missing_secret})


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
    """Routes from `routes_path`; secret values from `environ`, overridden by `secrets_path`."""
    try:
        text = routes_path.read_text(encoding="utf-8")
    except OSError as e:
        raise BottleError(f"{routes_path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise BottleError(f"{routes_path}: not UTF-8 text") from None
    routes = parse_routes_file(text, where=str(routes_path))
    secrets = dict(environ)
    if secrets_path is not None:
        secrets.update(read_secrets_file(secrets_path))
    return ProxyConfig.build(routes, secrets)


# --- byte-level I/O ---------------------------------------------------------------------


def _set_io_timeout(sock: socket.socket, seconds: int) -> None:
    # Kernel timeouts on a blocking socket: Python's own timeout costs a poll() per call.
    sock.settimeout(None)
    timeval = struct.pack("ll", seconds, 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)


def _send_all(sock: socket.socket, data: bytes, error: Callable[[str, bool], Exception]) -> None:
    try:
        sock.sendall(data)
    except (BlockingIOError, TimeoutError, ssl.SSLWantWriteError):
        raise error("timed out", True) from None
    except OSError as e:
        raise error(e.strerror or str(e), False) from None


class _Reader:
    """Buffered reads from one socket. `on_block` runs before any read that may wait, so
    output collected meanwhile goes out first (this is what streams SSE event by event)."""

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
        except (BlockingIOError, TimeoutError, ssl.SSLWantReadError):
            raise self.error("timed out", True) from None
        except OSError as e:
            raise self.error(e.strerror or str(e), False) from None

    def read_head(
        self, grammar: re.Pattern[bytes], line_max: int, head_max: int, lines_max: int,
    ) -> tuple[bytes, ...] | bytes | None:
        """The groups of the next head if `grammar` matches it, else the whole head; None
        on a clean close before its first byte. Raises a 414 or 431 _Refusal over a limit."""
        buf = self.buf
        if not buf:
            data = self._recv(IO_CHUNK)
            if not data:
                return None
            buf += data
        m = grammar.match(buf)
        if m is not None:
            end = m.end()
            groups = cast("tuple[bytes, ...]", m.groups())
            if end <= line_max and groups[-1].count(b"\n") <= lines_max:
                del buf[:end]
                return groups
        head = self._read_whole_head(line_max, head_max, lines_max)
        if head is None:
            return None
        m = grammar.fullmatch(head)
        return cast("tuple[bytes, ...]", m.groups()) if m else head

    def _read_whole_head(self, line_max: int, head_max: int, lines_max: int) -> bytes | None:
        buf = self.buf
        scanned = 0
        while True:
            if buf.startswith(b"\r\n"):  # empty lines before a request are to be ignored
                del buf[:len(buf) - len(buf.lstrip(b"\r\n"))]
            first = buf.find(b"\r\n")
            end = buf.find(b"\r\n\r\n", max(first, scanned - 3)) if first >= 0 else -1
            if end >= 0:
                break
            if first > line_max or (first < 0 and len(buf) > line_max):
                raise _Refusal(414, f"request line longer than {line_max} bytes")
            if first >= 0 and len(buf) - first > head_max + 4:
                raise _Refusal(431, f"headers larger than {head_max} bytes")
            scanned = len(buf)
            data = self._recv(IO_CHUNK)
            if not data:
                if not buf:
                    return None
                raise self.malformed("connection closed in the middle of a message head")
            buf += data
        head = bytes(buf[:end + 4])
        del buf[:end + 4]
        if first > line_max:
            raise _Refusal(414, f"request line longer than {line_max} bytes")
        if end - first > head_max:
            raise _Refusal(431, f"headers larger than {head_max} bytes")
        if head.count(b"\n", first) - 1 > lines_max:
            raise _Refusal(431, f"more than {lines_max} header lines")
        return head

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
    """Collects output and sends it in one syscall once the next read would wait."""

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
        if self.parts:
            data = b"".join(self.parts)
            self.parts.clear()
            self.size = 0
            _send_all(self.sock, data, self.error)


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
    # A small fixed-length body is no stream: sending it with its head saves a syscall and
    # a wakeup of the reader on the other side.
    if mode != "length" or length > IO_CHUNK:
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
                    for _ in range(MAX_HEADER_LINES + 1):  # trailers are read and dropped
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


# --- upstream connections -------------------------------------------------------------


class _UpstreamConn:
    __slots__ = ("sock", "reader", "idle_since")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = _Reader(sock, _upstream_error, _upstream_malformed)
        self.idle_since = 0.0

    def usable(self, *, replayable: bool) -> bool:
        """Still open with nothing unread: an idle socket that is readable is at EOF or has junk."""
        idle = time.monotonic() - self.idle_since
        if idle > POOL_IDLE_SECONDS or self.reader.buf:
            return False
        if replayable and idle < POOL_FRESH_SECONDS:
            return True
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
    """Idle keep-alive connections per upstream, most recently used first.

    No lock: list.pop and list.append are atomic under the GIL, and the worst a race can
    do is leave a few more than POOL_MAX_IDLE connections idle."""

    def __init__(self, ssl_context: ssl.SSLContext | None) -> None:
        self._ssl_context = ssl_context
        self._idle: dict[str, list[_UpstreamConn]] = {}

    def acquire(self, up: Upstream, *, replayable: bool) -> tuple[_UpstreamConn, bool]:
        """A connection to `up` and whether it was reused from the pool."""
        idle = self._idle.get(up.pool_key)
        while idle:
            try:
                conn = idle.pop()
            except IndexError:
                break
            if conn.usable(replayable=replayable):
                return conn, True
            conn.close()
        return self._connect(up), False

    def release(self, up: Upstream, conn: _UpstreamConn) -> None:
        conn.idle_since = time.monotonic()
        idle = self._idle.get(up.pool_key)
        if idle is None:
            idle = self._idle.setdefault(up.pool_key, [])
        if len(idle) < POOL_MAX_IDLE:
            idle.append(conn)
        else:
            conn.close()

    def close_all(self) -> None:
        for idle in list(self._idle.values()):
            while idle:
                idle.pop().close()

    def _connect(self, up: Upstream) -> _UpstreamConn:
        where = up.host_header.decode()
        try:
            sock = socket.create_connection((up.host, up.port), timeout=CONNECT_TIMEOUT)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if up.scheme == "https":
                if self._ssl_context is None:
                    self._ssl_context = ssl.create_default_context()
                sock = self._ssl_context.wrap_socket(sock, server_hostname=up.host)
            _set_io_timeout(sock, UPSTREAM_TIMEOUT)
        except TimeoutError:
            raise _UpstreamFailed(f"connecting to {where} timed out", timeout=True) from None
        except ssl.SSLError as e:
            raise _UpstreamFailed(f"TLS with {where} failed: {e.reason or e}") from None
        except OSError as e:
            raise _UpstreamFailed(f"cannot connect to {where}: {e.strerror or e}") from None
        return _UpstreamConn(sock)


# --- logging ------------------------------------------------------------------------------

_pending_log: deque[str] = deque()
_log_flusher = threading.Thread(target=lambda: _flush_log_forever(), name="cred-proxy-log", daemon=True)


def _flush_log() -> None:
    lines: list[str] = []
    while _pending_log:
        lines.append(_pending_log.popleft())
    if lines:
        os.write(2, "".join(lines).encode("utf-8", "replace"))


def _flush_log_forever() -> None:
    while True:
        time.sleep(LOG_FLUSH_SECONDS)
        _flush_log()


def _log_request(line: str) -> None:
    """Queue one request's log line: a write per request would cost a syscall and a GIL
    handoff on the hot path, so a background thread writes them in batches."""
    _pending_log.append(f"cred-proxy: {line}\n")


def _log(line: str) -> None:
    _flush_log()
    os.write(2, f"cred-proxy: {line}\n".encode("utf-8", "replace"))


def warn_missing_secrets(config: ProxyConfig) -> None:
    for name in config.missing_secrets():
        _log(f"warning: ${{{name}}} is not set or not usable; requests on routes that use it get 502")


# --- the server ----------------------------------------------------------------------------


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
        request_log: Callable[[str], None] = _log_request,
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.config = config
        self.pool = UpstreamPool(ssl_context)
        self._reload_config = reload_config
        self.request_log = request_log
        if request_log is _log_request and not _log_flusher.is_alive():
            _log_flusher.start()
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


class _ClientSession:
    """One client connection: requests are served in turn while it stays keep-alive."""

    def __init__(self, server: CredProxyServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        _set_io_timeout(sock, CLIENT_TIMEOUT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = _Reader(sock, _client_error, _client_malformed)
        self.method = self.route_name = "-"
        self.status_sent = 0  # the status already sent for this request, 0 before any

    def serve(self) -> None:
        try:
            while self._serve_one():
                pass
        except (_ClientGone, _UpstreamFailed, OSError):
            pass
        self._linger()

    def _linger(self) -> None:
        """Half-close and drain briefly before closing: closing with unread input makes the
        kernel send a reset, which can destroy a refusal before the client has read it."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
            _set_io_timeout(self.sock, 1)
            deadline = time.monotonic() + LINGER_SECONDS
            while time.monotonic() < deadline and self.sock.recv(IO_CHUNK):
                pass
        except OSError:
            pass

    def _reply(self, status: int, text: str, *, keep: bool = False) -> None:
        self.status_sent = status
        body = f"{text}\n".encode()
        close = "" if keep else "Connection: close\r\n"
        head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                f"Content-Length: {len(body)}\r\n{close}\r\n")
        _send_all(self.sock, head.encode() + body, _client_error)

    def _serve_one(self) -> bool:
        self.method, self.route_name, self.status_sent = "-", "-", 0
        started = 0.0
        keep = False
        try:
            request = self.reader.read_head(_REQUEST_HEAD, MAX_REQUEST_LINE, MAX_HEADER_BYTES, MAX_HEADER_LINES)
            if request is None:
                return False
            started = time.perf_counter()  # time the request, not the wait for it
            if isinstance(request, bytes):
                method = request.split(b" ", 1)[0]
                if _TOKEN.fullmatch(method):
                    self.method = method.decode("ascii")
                raise _why_not_a_request(request)
            keep = self._handle(*request)
        except _Refusal as r:
            self._reply(r.status, f"cred-proxy: {r}")
        except _UpstreamFailed as e:
            # Once the response head is out, cutting the connection is the only way to say so.
            if not self.status_sent:
                self._reply(504 if e.timeout else 502, f"cred-proxy: upstream of route {self.route_name!r} failed: {e}")
        except _ClientGone:
            self.status_sent = self.status_sent or 499
        tenths = int((time.perf_counter() - started) * 10_000) if started else 0
        self.server.request_log(f"{self.method} {self.route_name} {self.status_sent} {tenths // 10}.{tenths % 10}ms")
        return keep

    def _handle(self, method: bytes, target: bytes, minor: bytes, fields: bytes) -> bool:
        self.method = method.decode("ascii")
        if method == b"CONNECT" or method == b"TRACE":
            raise _Refusal(405, f"{self.method} is refused: this is a reverse proxy that adds credentials")
        special = _special_fields(fields, _REQUEST_FIELDS)
        if special:
            mode, length = _body_framing(special, _client_malformed)
            client_keep = minor == b"1" and b"close" not in _tokens(special, b"connection")
        else:
            mode, length, client_keep = "none", 0, minor == b"1"
        path, qmark, query = target.partition(b"?")
        if path == b"/_health":
            if method != b"GET" and method != b"HEAD":
                raise _Refusal(405, "/_health answers GET only")
            keep = client_keep and mode == "none"
            self._reply(200, "ok", keep=keep)
            return keep
        if b"%" in path or b"\\" in path or b"/." in path:
            _check_path(path)
        name, slash, rest = path[1:].partition(b"/")
        config = self.server.config
        live = config.routes.get(name.decode("ascii"))
        if live is None:
            known = ", ".join(sorted(config.routes)) or "none"
            raise _Refusal(404, f"no route named {name.decode('ascii')!r} (routes: {known})")
        self.route_name = live.route.name
        if live.credential_line is None:
            raise _Refusal(502, f"route {self.route_name!r} needs secret ${{{live.missing_secret}}}, "
                                "which the proxy does not have")

        up = live.upstream
        if mode == "chunked":
            framing = b"Transfer-Encoding: chunked\r\n"
        elif mode == "length":
            framing = b"Content-Length: %d\r\n" % length
        else:
            framing = b""
        request_head = b"".join((
            method, b" ", up.path_prefix + slash + rest or b"/", qmark, query, b" HTTP/1.1\r\nHost: ",
            up.host_header, b"\r\n", _without(fields, special, live.drop_fields), live.credential_line, framing,
            b"\r\n",
        ))
        if mode != "none" and b"100-continue" in _tokens(special, b"expect"):
            _send_all(self.sock, b"HTTP/1.1 100 Continue\r\n\r\n", _client_error)
        payload: bytes | None = None
        if mode == "none":
            payload = request_head
        elif mode == "length" and length <= REPLAYABLE_BODY:
            payload = request_head + self.reader.read_exact(length)

        conn, response = self._exchange(up, request_head, payload, mode, length)
        try:
            return self._relay_response(method, up, conn, response, client_keep)
        except BaseException:
            conn.close()
            raise

    def _exchange(
        self, up: Upstream, request_head: bytes, payload: bytes | None, mode: str, length: int,
    ) -> tuple[_UpstreamConn, tuple[bytes, ...]]:
        """Send the request and read the final response head; if a pooled connection turns
        out closed before any response, replay once on a fresh one (when the body allows)."""
        for attempt in range(2):
            conn, reused = self.server.pool.acquire(up, replayable=payload is not None)
            try:
                if payload is not None:
                    _send_all(conn.sock, payload, _upstream_error)
                else:
                    out = _Writer(conn.sock, _upstream_error, chunked=mode == "chunked")
                    out.write(request_head)
                    _relay_body(self.reader, out, mode, length)
                while True:
                    response = conn.reader.read_head(_RESPONSE_HEAD, MAX_REQUEST_LINE, MAX_RESPONSE_HEAD,
                                                     2 * MAX_HEADER_LINES)
                    if response is None:
                        raise _UpstreamFailed("closed the connection without responding")
                    if isinstance(response, bytes):
                        raise _UpstreamFailed("malformed response head")
                    if response[1][0] != 0x31:  # not 1xx
                        return conn, response
                    if response[1].startswith(b"101"):
                        raise _UpstreamFailed("the upstream tried to switch protocols")
            except _UpstreamFailed:
                conn.close()
                if not (reused and payload is not None and attempt == 0):
                    raise
            except _Refusal as r:
                conn.close()
                if r.status in (414, 431):  # a limit hit by the response head
                    raise _UpstreamFailed(f"response head too large: {r}") from None
                raise
            except BaseException:
                conn.close()
                raise
        raise AssertionError("unreachable")

    def _relay_response(
        self, method: bytes, up: Upstream, conn: _UpstreamConn, response: tuple[bytes, ...], client_keep: bool,
    ) -> bool:
        minor, status, fields = response
        special = _special_fields(fields, _RESPONSE_FIELDS)
        code = status[:3]
        if method == b"HEAD" or code == b"204" or code == b"304":
            mode, length = "none", 0
        elif b"transfer-encoding" in special:
            mode, length = ("chunked" if _tokens(special, b"transfer-encoding")[-1:] == [b"chunked"] else "eof"), 0
        else:
            mode, length = _body_framing(special, _upstream_malformed)
            if mode == "none":
                mode = "eof"
        upstream_keep = minor == b"1" and mode != "eof" and b"close" not in _tokens(special, b"connection")
        # HTTP/1.0 clients get an unframed body and the connection closed after it.
        chunked = client_keep and (mode == "chunked" or mode == "eof")
        # A valid Content-Length stays as the upstream wrote it; any other framing is redone.
        framing = b"Transfer-Encoding: chunked\r\n" if chunked else b""
        if mode == "none" or mode == "length":
            if special and any(name != b"content-length" for name in special):
                fields = _without(fields, special, _RESPONSE_DROP)
        else:
            fields = _without(fields, special, _RESPONSE_DROP_FRAMED)
        head = b"".join((
            b"HTTP/1.1 ", status, b"\r\n", fields, framing, b"" if client_keep else b"Connection: close\r\n",
            b"\r\n",
        ))
        self.status_sent = int(code)
        buffered = conn.reader.buf
        if mode == "none":
            _send_all(self.sock, head, _client_error)
        elif mode == "length" and len(buffered) >= length:  # the common small reply, all here already
            _send_all(self.sock, head + buffered[:length], _client_error)
            del buffered[:length]
        else:
            out = _Writer(self.sock, _client_error, chunked=chunked)
            out.write(head)
            _relay_body(conn.reader, out, mode, length)
        if upstream_keep:
            self.server.pool.release(up, conn)
        else:
            conn.close()
        return client_keep


# --- command line ----------------------------------------------------------------------------


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
                                     description="Inject credentials into requests to declared upstreams.")
    parser.add_argument("--routes", required=True, type=Path, help='routes.json: {"routes": [...]}')
    parser.add_argument("--secrets", type=Path, help='JSON {"NAME": "value"}; overrides the environment')
    parser.add_argument("--listen", default="0.0.0.0:8080", help="HOST:PORT (default 0.0.0.0:8080)")
    args = parser.parse_args(argv)
    routes_path = cast(Path, args.routes)
    secrets_path = cast("Path | None", args.secrets)
    listen = cast(str, args.listen)

    def load() -> ProxyConfig:
        return load_config(routes_path, secrets_path, os.environ)

    try:
        config = load()
        server = CredProxyServer(_parse_listen(listen), config, reload_config=load)
    except BottleError as e:
        _log(str(e))
        return 1
    except OSError as e:
        _log(f"cannot listen on {listen}: {e.strerror or e}")
        return 1
    signal.signal(signal.SIGHUP, lambda signum, frame: server.reload())
    # As PID 1 in a container, a signal without a handler is ignored: `docker stop` would hang.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    host, port = server.server_address[:2]
    _log(f"listening on {host!s}:{port} with {len(config.routes)} routes ({', '.join(config.routes) or 'none'})")
    warn_missing_secrets(config)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        _flush_log()
    return 0


if __name__ == "__main__":
    sys.exit(main())
