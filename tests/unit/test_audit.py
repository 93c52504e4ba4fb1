from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from claude_bottle import audit
from claude_bottle.audit import AuditEntry, append_audit, read_audit, render_diff, scan_audit
from claude_bottle.errors import BottleError


def entry(action: str = "approve", reason: str = "ok", diff: str = "") -> AuditEntry:
    return AuditEntry.now(identity="dev-abcde", tool="pipelock-block", action=action, reason=reason, diff=diff)


def test_render_diff() -> None:
    assert render_diff("a\n", "a\n") == ""
    diff = render_diff("a\nb\n", "a\nc\n")
    assert diff.splitlines() == ["--- before", "+++ after", "@@ -1,2 +1,2 @@", " a", "-b", "+c"]
    assert render_diff("", "x\n").splitlines()[-1] == "+x"
    no_newline = render_diff("x\n", "x")
    assert "-x\n+x\n\\ No newline at end of file\n" in no_newline
    assert render_diff("a\rb\n", "a\rc\n").count("\n") == 5  # "\r" is content, not a line break
    assert render_diff("a", "b", before_label="routes.json (live)").startswith("--- routes.json (live)")


def test_append_and_read_round_trip(tmp_path: Path) -> None:
    log = tmp_path / "home" / "audit.jsonl"
    first = entry(diff=render_diff("a.org\n", "a.org\nb.org\n"))
    second = entry("reject", reason="not today\nsorry \u00e9")
    append_audit(log, first)
    append_audit(log, second)
    assert read_audit(log) == [first, second]
    lines = log.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 3
    assert json.loads(lines[0])["action"] == "approve"
    assert log.stat().st_mode & 0o777 == 0o600


def test_a_missing_log_is_empty(tmp_path: Path) -> None:
    assert read_audit(tmp_path / "audit.jsonl") == []


def test_a_failed_write_leaves_no_partial_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "audit.jsonl"
    append_audit(log, entry())
    before = log.read_bytes()

    def disk_fills_halfway(fd: int, data: bytes) -> None:
        os.write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(audit, "_write_all", disk_fills_halfway)
    with pytest.raises(BottleError, match="No space left on device.*nothing was written"):
        append_audit(log, entry("reject", reason="x" * 1000))
    assert log.read_bytes() == before
    monkeypatch.undo()
    append_audit(log, entry("operator-edit"))
    assert [e.action for e in read_audit(log)] == ["approve", "operator-edit"]


def test_a_failed_fsync_takes_the_line_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "audit.jsonl"
    append_audit(log, entry())
    before = log.read_bytes()
    real_fsync = os.fsync
    calls: list[int] = []

    def fsync_fails_once(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 1:
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(audit.os, "fsync", fsync_fails_once)
    with pytest.raises(BottleError, match="Input/output error"):
        append_audit(log, entry("reject", reason="no"))
    assert log.read_bytes() == before


def test_an_unwritable_log_is_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "audit.jsonl").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(BottleError, match="cannot open the audit log") as info:
        append_audit(tmp_path / "audit.jsonl", entry())
    assert "\n" not in str(info.value)
    assert not (tmp_path / "elsewhere").exists()


def test_reading_skips_and_counts_malformed_lines(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    good = entry()
    lines = [
        json.dumps(good.to_json()),
        "not json",
        json.dumps({**good.to_json(), "action": "delete-everything"}),
        json.dumps({**good.to_json(), "diff": 3}),
        json.dumps({**good.to_json(), "extra": "x"}),
        "[1, 2]",
        "",
        json.dumps(good.to_json()),
    ]
    log.write_text("\n".join(lines) + "\n")
    scan = scan_audit(log)
    assert scan.entries == (good, good)
    assert scan.skipped == 5
    assert [p.split(": ", 1)[0] for p in scan.problems] == [f"{log}:{n}" for n in (2, 3, 4, 5, 6)]
    assert "action 'delete-everything'" in scan.problems[1]
    assert read_audit(log) == [good, good]


def test_a_torn_last_line_from_elsewhere_stays_separate(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    log.write_text('{"time": "2025-01-01T00:00:00Z", "ident')  # a writer that died mid-line
    append_audit(log, entry())
    scan = scan_audit(log)
    assert scan.skipped == 1 and len(scan.entries) == 1


@pytest.mark.parametrize(("field", "value", "message"), [
    ("action", "approve-all", "action 'approve-all' is not one of"),
    ("tool", "shell", "tool 'shell' is not one of"),
    ("identity", "../x", "is not a bottle identity"),
    ("time", "now", "not an ISO-8601 UTC time"),
])
def test_invalid_entries_cannot_be_made(field: str, value: str, message: str) -> None:
    fields = {**entry().to_json(), field: value}
    with pytest.raises(BottleError, match=message):
        AuditEntry(**fields)
