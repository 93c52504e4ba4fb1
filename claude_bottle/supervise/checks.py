"""Small checks shared by the queue records, the MCP tools and the audit log.

Every message they produce is one line: values are shown through repr(), which escapes
control characters, so nothing read from a file or a request can break a line or a terminal.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone

from ..errors import BottleError

# C0 (except tab, LF, CR), DEL, C1, zero-width and bidi controls, BOM.
_UNSAFE_CHAR_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")

_ZERO = timedelta(0)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def iso_utc(t: datetime) -> str:
    """`2025-01-31T12:00:00.123456Z`."""
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def shown(value: str, limit: int = 80) -> str:
    """A value quoted for a one-line message: repr escapes control characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"




def text_problem(text: str, *, max_bytes: int) -> str | None:
    """Why `text` cannot be shown to the operator as is, or None."""
    try:
        size = len(text) if text.isascii() else len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return "contains an unpaired surrogate"
    if size > max_bytes:
        return f"is {size} bytes, more than the limit of {max_bytes}"
    m = _UNSAFE_CHAR_RE.search(text)
    if m:
        line = text.count("\n", 0, m.start()) + 1
        return f"contains the control or invisible character U+{ord(m.group()):04X} (line {line})"
    return None


class InvalidRecord(BottleError):
    """A Proposal or Response that breaks a rule; `problem` is the message without its subject."""

    def __init__(self, subject: str, problem: str) -> None:
        super().__init__(f"{subject}: {problem}")
        self.problem = problem


def timestamp_problem(key: str, value: str) -> str | None:
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        t = None
    if t is None or len(value) > 40 or t.utcoffset() != _ZERO:
        return f"{key} {shown(value)} is not an ISO-8601 UTC time"
    return None


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _unique_keys(items: list[tuple[str, object]]) -> dict[str, object]:
    obj = dict(items)
    if len(obj) != len(items):
        raise ValueError("duplicate key in an object")
    return obj


_DECODER = json.JSONDecoder(parse_constant=_no_constant, object_pairs_hook=_unique_keys)


def loads_strict(data: bytes | str) -> object:
    """Parse JSON (bytes must be UTF-8), refusing NaN/Infinity, duplicate keys and deep nesting."""
    try:
        return _DECODER.decode(data.decode() if isinstance(data, bytes) else data)
    except RecursionError:
        raise ValueError("nested too deeply") from None
