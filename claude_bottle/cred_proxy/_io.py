"""Byte-level I/O on one socket: buffered reads of heads, lines and bodies, batched writes."""

from __future__ import annotations

import re
import socket
import ssl
import struct
from collections.abc import Callable
from typing import cast

from ._http import HEX, MAX_CHUNK_LINE, MAX_HEADER_LINES, Refusal

IO_CHUNK = 64 * 1024


def set_io_timeout(sock: socket.socket, seconds: int) -> None:
    # Kernel timeouts on a blocking socket: Python's own timeout costs a poll() per call.
    sock.settimeout(None)
    timeval = struct.pack("ll", seconds, 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)


def send_all(sock: socket.socket, data: bytes, error: Callable[[str, bool], Exception]) -> None:
    try:
        sock.sendall(data)
    except (BlockingIOError, TimeoutError, ssl.SSLWantWriteError):
        raise error("timed out", True) from None
    except OSError as e:
        raise error(e.strerror or str(e), False) from None


class Reader:
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
        on a clean close before its first byte. Raises a 414 or 431 Refusal over a limit."""
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
                raise Refusal(414, f"request line longer than {line_max} bytes")
            if first >= 0 and len(buf) - first > head_max + 4:
                raise Refusal(431, f"headers larger than {head_max} bytes")
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
            raise Refusal(414, f"request line longer than {line_max} bytes")
        if end - first > head_max:
            raise Refusal(431, f"headers larger than {head_max} bytes")
        if head.count(b"\n", first) - 1 > lines_max:
            raise Refusal(431, f"more than {lines_max} header lines")
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


class Writer:
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
            send_all(self.sock, data, self.error)


def relay_body(src: Reader, dst: Writer, mode: str, length: int) -> None:
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
                if not HEX.fullmatch(size_field):
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
