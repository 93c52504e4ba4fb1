"""HTTP/1.1 message heads: the grammar, the limits, and the fields that frame a body.

HTTP/1.1 is spoken by hand on both sides rather than through http.server/http.client:
the proxy needs exact request-size limits, chunk-by-chunk streaming (SSE) and pooled
upstream connections, and it must add well under a millisecond per request.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import cast
from urllib.parse import unquote_to_bytes

MAX_REQUEST_LINE = 8 * 1024
MAX_HEADER_BYTES = 32 * 1024
MAX_HEADER_LINES = 100
MAX_RESPONSE_HEAD = 64 * 1024
MAX_CHUNK_LINE = 4 * 1024

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
REQUEST_HEAD = re.compile(rb"(" + _TCHAR + rb"+) (/[\x21-\x7e]*) HTTP/1\.([01])\r\n" + _FIELDS)
RESPONSE_HEAD = re.compile(rb"HTTP/1\.([01]) ([0-9]{3}(?: [^\x00-\x08\x0a-\x1f\x7f]*)?)\r\n" + _FIELDS)
_FIELD_BLOCK = re.compile(_FIELD_LINES)
TOKEN = re.compile(_TCHAR + rb"+")
# Field patterns start at the "\n" before a line (the block is searched with one put in
# front): a literal first character lets the regex engine skip ahead instead of trying
# every position, which makes these searches several times faster than with ^ and re.M.
REQUEST_FIELDS = re.compile(rb"\n(connection|transfer-encoding|content-length|expect):[ \t]*([^\r\n]*)")
# For responses, every hop-by-hop name too: the header block is then filtered only when
# one is there, which for most responses it is not.
RESPONSE_FIELDS = re.compile(rb"\n(" + b"|".join(sorted(HOP_BY_HOP | {b"content-length"})) + rb"):[ \t]*([^\r\n]*)")
_BAD_PERCENT = re.compile(rb"%(?![0-9A-Fa-f]{2})")
HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
_NO_FIELDS: Mapping[bytes, list[bytes]] = {}


def field_lines(names: Iterable[bytes]) -> re.Pattern[bytes]:
    """Matches the named fields' lines, from the LF before to the CR after, in LF + block."""
    alternatives = b"|".join(re.escape(n) for n in sorted(set(names)))
    return re.compile(rb"\n(?:" + alternatives + rb"):[^\r\n]*\r", re.IGNORECASE)


REQUEST_DROP = HOP_BY_HOP | {b"host", b"content-length", b"expect"}
RESPONSE_DROP = field_lines(HOP_BY_HOP)
RESPONSE_DROP_FRAMED = field_lines(HOP_BY_HOP | {b"content-length"})


class Refusal(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ClientGone(Exception):
    """The client's connection broke; nothing more can be sent to it."""


class UpstreamFailed(Exception):
    def __init__(self, message: str, *, timeout: bool = False) -> None:
        super().__init__(message)
        self.timeout = timeout


def special_fields(fields: bytes, grammar: re.Pattern[bytes]) -> Mapping[bytes, list[bytes]]:
    """Values (lowercased) of the fields that decide framing and connection handling."""
    found = cast("list[tuple[bytes, bytes]]", grammar.findall(b"\n" + fields.lower()))
    if not found:
        return _NO_FIELDS
    special: dict[bytes, list[bytes]] = {}
    for name, value in found:
        special.setdefault(name, []).append(value.rstrip(b" \t"))
    return special


def field_tokens(special: Mapping[bytes, list[bytes]], name: bytes) -> list[bytes]:
    if name not in special:
        return []
    return [t.strip().lower() for v in special[name] for t in v.split(b",") if t.strip()]


def without_fields(fields: bytes, special: Mapping[bytes, list[bytes]], drop: re.Pattern[bytes]) -> bytes:
    """`fields` without `drop`'s lines, nor those that Connection names as hop-by-hop."""
    if b"connection" in special:
        extra = set(field_tokens(special, b"connection")) - {b"close", b"keep-alive"}
        if extra:
            fields = field_lines(extra).sub(b"", b"\n" + fields)[1:]
    return drop.sub(b"", b"\n" + fields)[1:]


def body_framing(special: Mapping[bytes, list[bytes]], fail: Callable[[str], Exception]) -> tuple[str, int]:
    """("chunked", 0), ("length", n) or ("none", 0) when no body is declared."""
    if not special:
        return "none", 0
    lengths = set(special.get(b"content-length", ()))
    if b"transfer-encoding" in special:
        if lengths:
            raise fail("both Transfer-Encoding and Content-Length")
        if field_tokens(special, b"transfer-encoding") != [b"chunked"]:
            raise fail("unsupported Transfer-Encoding")
        return "chunked", 0
    if not lengths:
        return "none", 0
    length = lengths.pop()
    if lengths or not length.isdigit() or len(length) > 18:
        raise fail("invalid Content-Length")
    return "length", int(length)


def check_path(path: bytes) -> None:
    """Refuse what could leave the route's prefix once the upstream decodes the path."""
    for segment in path.split(b"/"):
        if b"%" in segment:
            if _BAD_PERCENT.search(segment):
                raise Refusal(400, "malformed percent-encoding in the path")
            segment = unquote_to_bytes(segment)
        if segment in (b".", b".."):
            raise Refusal(400, "dot segments (. and ..) are not allowed in the path")
        if b"/" in segment or b"\\" in segment or b"\0" in segment:
            raise Refusal(400, "encoded slashes, backslashes and NUL are not allowed in the path")


def why_not_a_request(head: bytes) -> Refusal:
    """The refusal for a complete request head that the request grammar does not match."""
    start, _, fields = head.partition(b"\r\n")
    parts = start.split(b" ")
    if len(parts) != 3 or not TOKEN.fullmatch(parts[0]):
        return Refusal(400, "malformed request line")
    method, target, version = parts
    if method == b"CONNECT":
        return Refusal(405, "CONNECT is refused: this is not a forward proxy")
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        return Refusal(505, "only HTTP/1.0 and HTTP/1.1 are supported")
    if not target.startswith(b"/"):
        return Refusal(400, "only origin-form request targets (/<route>/<path>) are accepted")
    if not _FIELD_BLOCK.fullmatch(fields[:-2]):
        return Refusal(400, "malformed header line")
    return Refusal(400, "the request target has spaces, control or non-ASCII characters")


def client_error(message: str, timeout: bool) -> Exception:
    return ClientGone(message)


def client_malformed(message: str) -> Exception:
    return Refusal(400, message)


def upstream_error(message: str, timeout: bool) -> Exception:
    return UpstreamFailed(message, timeout=timeout)


def upstream_malformed(message: str) -> Exception:
    return UpstreamFailed(f"malformed response: {message}")
