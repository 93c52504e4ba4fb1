"""Pick the host user's known_hosts lines for the gate's ssh remotes.

The lines are copied verbatim (hashed or not, markers kept), so the gate's ssh reads
them exactly as the user's ssh does. Only lines naming a declared host are copied.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Iterable, Sequence
from pathlib import Path


def default_known_hosts_files() -> tuple[Path, ...]:
    return (Path.home() / ".ssh" / "known_hosts", Path("/etc/ssh/ssh_known_hosts"))


def matching_known_hosts(files: Iterable[Path], names: Sequence[str]) -> str:
    """The lines of `files` (unreadable ones skipped) that apply to any of `names`."""
    out: list[str] = []
    for path in files:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            if line_matches(line, names) and line not in out:
                out.append(line)
    return "".join(f"{line}\n" for line in out)


def line_matches(line: str, names: Sequence[str]) -> bool:
    fields = line.split()
    if not fields or fields[0].startswith("#"):
        return False
    if fields[0].startswith("@"):  # @cert-authority / @revoked
        fields = fields[1:]
    if len(fields) < 3:
        return False
    patterns = fields[0]
    if patterns.startswith("|1|"):
        return any(_hashed_matches(patterns, name) for name in names)
    return any(_patterns_match(patterns.split(","), name) for name in names)


def _hashed_matches(entry: str, name: str) -> bool:
    try:
        _, _, salt_b64, hash_b64 = entry.split("|", 3)
        salt = base64.b64decode(salt_b64, validate=True)
        want = base64.b64decode(hash_b64, validate=True)
    except (ValueError, binascii.Error):
        return False
    got = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return hmac.compare_digest(got, want)


def _patterns_match(patterns: Sequence[str], name: str) -> bool:
    matched = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        if _glob_matches(pattern.lstrip("!"), name):
            if negated:
                return False
            matched = True
    return matched


def _glob_matches(pattern: str, name: str) -> bool:
    """ssh's host patterns: `*` and `?` are wildcards, everything else (brackets too) literal."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, name, re.IGNORECASE) is not None
