"""The audit log: `$CLAUDE_BOTTLE_HOME/audit.jsonl`, one JSON object a line, append-only.

Every decision that changes (or refuses to change) a running bottle's routes or
allowlist is one line: who (identity), what (tool, action), why (reason) and the change
itself as a unified diff. A line is written whole or not at all, so a reader never
meets half an entry from us; a line that is broken anyway (edited by hand, torn by a
crash of some other writer) is skipped and counted, never fatal.
"""

from __future__ import annotations

import difflib
import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from .bottle_state import IDENTITY_RE
from .errors import BottleError
from .errors import json_type
from .supervise.checks import InvalidRecord, iso_utc, loads_strict, shown, timestamp_problem, utc_now
from .supervise.records import TOOLS

ACTIONS = ("approve", "approve-modified", "reject", "operator-edit")
_KEYS = ("time", "identity", "tool", "action", "reason", "diff")


@dataclass(frozen=True)
class AuditEntry:
    time: str  # ISO-8601 UTC
    identity: str
    tool: str  # one of supervise's TOOLS (operator edits name the sidecar's tool too)
    action: str  # one of ACTIONS
    reason: str
    diff: str  # unified diff before -> after; empty for a reject

    def __post_init__(self) -> None:
        problem = _entry_problem(self)
        if problem:
            raise InvalidRecord("audit entry", problem)

    @classmethod
    def now(cls, *, identity: str, tool: str, action: str, reason: str, diff: str) -> AuditEntry:
        return cls(time=iso_utc(utc_now()), identity=identity, tool=tool, action=action, reason=reason, diff=diff)

    def to_json(self) -> dict[str, str]:
        return {"time": self.time, "identity": self.identity, "tool": self.tool, "action": self.action,
                "reason": self.reason, "diff": self.diff}

    @classmethod
    def from_json(cls, obj: object, *, where: str) -> AuditEntry:
        if not isinstance(obj, dict):
            raise BottleError(f"{where}: must be a JSON object, not {json_type(obj)}")
        d = cast("dict[str, object]", obj)
        if set(d) != set(_KEYS):
            odd = sorted(set(d) ^ set(_KEYS))[0]
            raise BottleError(f"{where}: {'unknown' if odd in d else 'missing'} key {shown(odd)}")
        values = {k: d[k] for k in _KEYS}
        for key, value in values.items():
            if not isinstance(value, str):
                raise BottleError(f"{where}: {key} must be a string, not {json_type(value)}")
        fields = cast("dict[str, str]", values)
        try:
            return cls(**fields)
        except InvalidRecord as e:
            raise BottleError(f"{where}: {e.problem}") from None


def _entry_problem(entry: AuditEntry) -> str | None:
    if entry.action not in ACTIONS:
        return f"action {shown(entry.action)} is not one of {', '.join(ACTIONS)}"
    if entry.tool not in TOOLS:
        return f"tool {shown(entry.tool)} is not one of {', '.join(TOOLS)}"
    if not IDENTITY_RE.fullmatch(entry.identity):
        return f"identity {shown(entry.identity)} is not a bottle identity"
    return timestamp_problem("time", entry.time)


def render_diff(before: str, after: str, *, before_label: str = "before", after_label: str = "after") -> str:
    """A unified diff of two texts ("" when they are equal), marking a missing final newline."""
    if before == after:
        return ""
    return "".join(difflib.unified_diff(_diff_lines(before), _diff_lines(after),
                                        fromfile=before_label, tofile=after_label))


def _diff_lines(text: str) -> list[str]:
    # Split on "\n" only: a "\r" or "\u2028" inside a line is content, not a line break.
    parts = text.split("\n")
    last = parts.pop()
    lines = [part + "\n" for part in parts]
    if last:
        lines.append(last + "\n\\ No newline at end of file\n")
    return lines


def append_audit(path: Path, entry: AuditEntry) -> None:
    """Append one line and fsync it; on any failure leave the file as it was and raise."""
    line = (json.dumps(entry.to_json(), ensure_ascii=False) + "\n").encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise BottleError(f"{path}: cannot open the audit log: {e.strerror or e}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # two dashboards: one line at a time, and truncation stays ours
        start = os.fstat(fd).st_size
        if start and os.pread(fd, 1, start - 1) != b"\n":
            line = b"\n" + line  # someone else's torn last line stays a line of its own
        try:
            _write_all(fd, line)
            os.fsync(fd)
        except OSError as e:
            leftover = _truncate_to(fd, start)
            raise BottleError(f"{path}: cannot append to the audit log: {e.strerror or e}"
                              f"{leftover}") from None
    except OSError as e:
        raise BottleError(f"{path}: cannot append to the audit log: {e.strerror or e}") from None
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(0, "short write")
        view = view[written:]


def _truncate_to(fd: int, size: int) -> str:
    """Cut a partly written line off again; returns a note for the error if that failed."""
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    except OSError as e:
        return f" (and removing the partial line failed: {e.strerror or e}; readers skip it)"
    return " (nothing was written)"


@dataclass(frozen=True)
class AuditScan:
    entries: tuple[AuditEntry, ...]
    skipped: int  # malformed lines left out
    problems: tuple[str, ...]  # one message per skipped line


def scan_audit(path: Path) -> AuditScan:
    """Every well-formed entry in order, and what was skipped; a missing log is empty."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return AuditScan((), 0, ())
    except OSError as e:
        raise BottleError(f"{path}: cannot read the audit log: {e.strerror or e}") from None
    with os.fdopen(fd, "rb") as f:
        try:
            data = f.read()
        except OSError as e:
            raise BottleError(f"{path}: cannot read the audit log: {e.strerror or e}") from None
    entries: list[AuditEntry] = []
    problems: list[str] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        where = f"{path}:{number}"
        try:
            entries.append(AuditEntry.from_json(loads_strict(raw), where=where))
        except ValueError as e:
            problems.append(f"{where}: not valid JSON: {e}")
        except BottleError as e:
            problems.append(str(e))
    return AuditScan(tuple(entries), len(problems), tuple(problems))


def read_audit(path: Path) -> list[AuditEntry]:
    """The well-formed entries, oldest first (see scan_audit for what was skipped)."""
    return list(scan_audit(path).entries)
