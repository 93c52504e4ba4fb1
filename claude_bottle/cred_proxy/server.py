"""The cred-proxy server: `/<route>/<rest>?query` goes to `<upstream>/<rest>?query` with the
route's header set from its template; nothing else is reachable, so the agent can use a
credential it never sees."""

from __future__ import annotations

import socket
import socketserver
import ssl
import time
from collections.abc import Callable
from http import HTTPStatus

from ..errors import BottleError
from ._http import (
    MAX_HEADER_BYTES, MAX_HEADER_LINES, MAX_REQUEST_LINE, MAX_RESPONSE_HEAD, REQUEST_FIELDS, REQUEST_HEAD,
    RESPONSE_DROP, RESPONSE_DROP_FRAMED, RESPONSE_FIELDS, RESPONSE_HEAD, TOKEN, ClientGone, Refusal,
    UpstreamFailed, body_framing, check_path, client_error, client_malformed, field_tokens, special_fields,
    upstream_error, upstream_malformed, why_not_a_request, without_fields,
)
from ._io import IO_CHUNK, Reader, Writer, relay_body, send_all, set_io_timeout
from ._log import log, log_request, start_log_flusher
from ._pool import UpstreamConn, UpstreamPool
from .config import ProxyConfig, Upstream

# Small bodies are read whole before sending, so that a request that meets a pooled
# connection the upstream has just closed can be replayed on a fresh one.
REPLAYABLE_BODY = 64 * 1024
CLIENT_TIMEOUT = 300
LINGER_SECONDS = 1.0


def warn_missing_secrets(config: ProxyConfig) -> None:
    for name in config.missing_secrets():
        log(f"warning: ${{{name}}} is not set or not usable; requests on routes that use it get 502")


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
        request_log: Callable[[str], None] = log_request,
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.config = config
        self.pool = UpstreamPool(ssl_context)
        self._reload_config = reload_config
        self.request_log = request_log
        if request_log is log_request:
            start_log_flusher()
        super().__init__(address, socketserver.BaseRequestHandler)

    def reload(self) -> None:
        """Swap in new routes and secrets; an invalid file keeps the old ones serving."""
        if self._reload_config is None:
            return
        try:
            config = self._reload_config()
        except BottleError as e:
            log(f"reload failed, keeping the previous routes and secrets: {e}")
            return
        self.config = config
        log(f"reloaded: {len(config.routes)} routes ({', '.join(config.routes) or 'none'})")
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
        set_io_timeout(sock, CLIENT_TIMEOUT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = Reader(sock, client_error, client_malformed)
        self.method = self.route_name = "-"
        self.status_sent = 0  # the status already sent for this request, 0 before any

    def serve(self) -> None:
        try:
            while self._serve_one():
                pass
        except (ClientGone, UpstreamFailed, OSError):
            pass
        self._linger()

    def _linger(self) -> None:
        """Half-close and drain briefly before closing: closing with unread input makes the
        kernel send a reset, which can destroy a refusal before the client has read it."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
            set_io_timeout(self.sock, 1)
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
        send_all(self.sock, head.encode() + body, client_error)

    def _serve_one(self) -> bool:
        self.method, self.route_name, self.status_sent = "-", "-", 0
        started = 0.0
        keep = False
        try:
            request = self.reader.read_head(REQUEST_HEAD, MAX_REQUEST_LINE, MAX_HEADER_BYTES, MAX_HEADER_LINES)
            if request is None:
                return False
            started = time.perf_counter()  # time the request, not the wait for it
            if isinstance(request, bytes):
                method = request.split(b" ", 1)[0]
                if TOKEN.fullmatch(method):
                    self.method = method.decode("ascii")
                raise why_not_a_request(request)
            keep = self._handle(*request)
        except Refusal as r:
            self._reply(r.status, f"cred-proxy: {r}")
        except UpstreamFailed as e:
            # Once the response head is out, cutting the connection is the only way to say so.
            if not self.status_sent:
                self._reply(504 if e.timeout else 502, f"cred-proxy: upstream of route {self.route_name!r} failed: {e}")
        except ClientGone:
            self.status_sent = self.status_sent or 499
        tenths = int((time.perf_counter() - started) * 10_000) if started else 0
        self.server.request_log(f"{self.method} {self.route_name} {self.status_sent} {tenths // 10}.{tenths % 10}ms")
        return keep

    def _handle(self, method: bytes, target: bytes, minor: bytes, fields: bytes) -> bool:
        self.method = method.decode("ascii")
        if method == b"CONNECT" or method == b"TRACE":
            raise Refusal(405, f"{self.method} is refused: this is a reverse proxy that adds credentials")
        special = special_fields(fields, REQUEST_FIELDS)
        if special:
            mode, length = body_framing(special, client_malformed)
            client_keep = minor == b"1" and b"close" not in field_tokens(special, b"connection")
        else:
            mode, length, client_keep = "none", 0, minor == b"1"
        path, qmark, query = target.partition(b"?")
        if path == b"/_health":
            if method != b"GET" and method != b"HEAD":
                raise Refusal(405, "/_health answers GET only")
            keep = client_keep and mode == "none"
            self._reply(200, "ok", keep=keep)
            return keep
        if b"%" in path or b"\\" in path or b"/." in path:
            check_path(path)
        name, slash, rest = path[1:].partition(b"/")
        config = self.server.config
        live = config.routes.get(name.decode("ascii"))
        if live is None:
            known = ", ".join(sorted(config.routes)) or "none"
            raise Refusal(404, f"no route named {name.decode('ascii')!r} (routes: {known})")
        self.route_name = live.route.name
        if live.credential_line is None:
            raise Refusal(502, f"route {self.route_name!r} needs secret ${{{live.missing_secret}}}, "
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
            up.host_header, b"\r\n", without_fields(fields, special, live.drop_fields), live.credential_line, framing,
            b"\r\n",
        ))
        if mode != "none" and b"100-continue" in field_tokens(special, b"expect"):
            send_all(self.sock, b"HTTP/1.1 100 Continue\r\n\r\n", client_error)
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
    ) -> tuple[UpstreamConn, tuple[bytes, ...]]:
        """Send the request and read the final response head; if a pooled connection turns
        out closed before any response, replay once on a fresh one (when the body allows)."""
        for attempt in range(2):
            conn, reused = self.server.pool.acquire(up, replayable=payload is not None)
            try:
                if payload is not None:
                    send_all(conn.sock, payload, upstream_error)
                else:
                    out = Writer(conn.sock, upstream_error, chunked=mode == "chunked")
                    out.write(request_head)
                    relay_body(self.reader, out, mode, length)
                while True:
                    response = conn.reader.read_head(RESPONSE_HEAD, MAX_REQUEST_LINE, MAX_RESPONSE_HEAD,
                                                     2 * MAX_HEADER_LINES)
                    if response is None:
                        raise UpstreamFailed("closed the connection without responding")
                    if isinstance(response, bytes):
                        raise UpstreamFailed("malformed response head")
                    if response[1][0] != 0x31:  # not 1xx
                        return conn, response
                    if response[1].startswith(b"101"):
                        raise UpstreamFailed("the upstream tried to switch protocols")
            except UpstreamFailed:
                conn.close()
                if not (reused and payload is not None and attempt == 0):
                    raise
            except Refusal as r:
                conn.close()
                if r.status in (414, 431):  # a limit hit by the response head
                    raise UpstreamFailed(f"response head too large: {r}") from None
                raise
            except BaseException:
                conn.close()
                raise
        raise AssertionError("unreachable")

    def _relay_response(
        self, method: bytes, up: Upstream, conn: UpstreamConn, response: tuple[bytes, ...], client_keep: bool,
    ) -> bool:
        minor, status, fields = response
        special = special_fields(fields, RESPONSE_FIELDS)
        code = status[:3]
        if method == b"HEAD" or code == b"204" or code == b"304":
            mode, length = "none", 0
        elif b"transfer-encoding" in special:
            mode, length = ("chunked" if field_tokens(special, b"transfer-encoding")[-1:] == [b"chunked"] else "eof"), 0
        else:
            mode, length = body_framing(special, upstream_malformed)
            if mode == "none":
                mode = "eof"
        upstream_keep = minor == b"1" and mode != "eof" and b"close" not in field_tokens(special, b"connection")
        # HTTP/1.0 clients get an unframed body and the connection closed after it.
        chunked = client_keep and (mode == "chunked" or mode == "eof")
        # A valid Content-Length stays as the upstream wrote it; any other framing is redone.
        framing = b"Transfer-Encoding: chunked\r\n" if chunked else b""
        if mode == "none" or mode == "length":
            if special and any(name != b"content-length" for name in special):
                fields = without_fields(fields, special, RESPONSE_DROP)
        else:
            fields = without_fields(fields, special, RESPONSE_DROP_FRAMED)
        head = b"".join((
            b"HTTP/1.1 ", status, b"\r\n", fields, framing, b"" if client_keep else b"Connection: close\r\n",
            b"\r\n",
        ))
        self.status_sent = int(code)
        buffered = conn.reader.buf
        if mode == "none":
            send_all(self.sock, head, client_error)
        elif mode == "length" and len(buffered) >= length:  # the common small reply, all here already
            send_all(self.sock, head + buffered[:length], client_error)
            del buffered[:length]
        else:
            out = Writer(self.sock, client_error, chunked=chunked)
            out.write(head)
            relay_body(conn.reader, out, mode, length)
        if upstream_keep:
            self.server.pool.release(up, conn)
        else:
            conn.close()
        return client_keep
