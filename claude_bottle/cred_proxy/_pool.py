"""Connections to upstreams, kept alive and shared between client connections."""

from __future__ import annotations

import select
import socket
import ssl
import time

from ._http import UpstreamFailed, upstream_error, upstream_malformed
from ._io import Reader, set_io_timeout
from .config import Upstream

CONNECT_TIMEOUT = 30.0
UPSTREAM_TIMEOUT = 600
POOL_IDLE_SECONDS = 20.0
# Servers close idle keep-alive connections after seconds, not milliseconds: a request that
# can be replayed anyway skips the poll() that detects a closed one, if it is this fresh.
POOL_FRESH_SECONDS = 1.0
POOL_MAX_IDLE = 32


class UpstreamConn:
    __slots__ = ("sock", "reader", "idle_since")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = Reader(sock, upstream_error, upstream_malformed)
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
        self._idle: dict[str, list[UpstreamConn]] = {}

    def acquire(self, up: Upstream, *, replayable: bool) -> tuple[UpstreamConn, bool]:
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

    def release(self, up: Upstream, conn: UpstreamConn) -> None:
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

    def _connect(self, up: Upstream) -> UpstreamConn:
        where = up.host_header.decode()
        try:
            sock = socket.create_connection((up.host, up.port), timeout=CONNECT_TIMEOUT)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if up.scheme == "https":
                if self._ssl_context is None:
                    self._ssl_context = ssl.create_default_context()
                sock = self._ssl_context.wrap_socket(sock, server_hostname=up.host)
            set_io_timeout(sock, UPSTREAM_TIMEOUT)
        except TimeoutError:
            raise UpstreamFailed(f"connecting to {where} timed out", timeout=True) from None
        except ssl.SSLError as e:
            raise UpstreamFailed(f"TLS with {where} failed: {e.reason or e}") from None
        except OSError as e:
            raise UpstreamFailed(f"cannot connect to {where}: {e.strerror or e}") from None
        return UpstreamConn(sock)
