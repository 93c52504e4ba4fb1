"""Approved capability changes: a new Dockerfile for one bottle, applied by rebuilding.

A running container cannot gain a package safely, so the bottle is stopped with its
state kept — the approved Dockerfile and a snapshot of the conversation — and
`resume <identity>` builds the new image and continues the same session.
"""

from __future__ import annotations

import re

from .backend.docker.backend import DockerBottleBackend
from .bottle_state import read_metadata, state_dir
from .errors import BottleError
from .fsutil import atomic_write_text

MAX_DOCKERFILE = 64 * 1024
FROM_RE = re.compile(r"^\s*FROM\s+\S+", re.IGNORECASE | re.MULTILINE)


def dockerfile_problem(text: str) -> str | None:
    if not text.strip():
        return "the Dockerfile is empty"
    if len(text.encode()) > MAX_DOCKERFILE:
        return f"the Dockerfile is larger than {MAX_DOCKERFILE // 1024} KiB"
    if "\x00" in text:
        return "the Dockerfile contains a NUL byte"
    if not FROM_RE.search(text):
        return "the Dockerfile has no FROM line"
    return None


def apply_capability_change(identity: str, dockerfile: str) -> str:
    """Record the new Dockerfile, snapshot the session, stop the bottle; returns the
    command that brings it back. The proposal text is data: it is written to a file
    and built later by `docker build`, never run here."""
    problem = dockerfile_problem(dockerfile)
    if problem:
        raise BottleError(f"capability change for {identity}: {problem}")
    read_metadata(identity)  # a known bottle, with state to keep
    atomic_write_text(state_dir(identity) / "Dockerfile", dockerfile if dockerfile.endswith("\n") else dockerfile + "\n")
    DockerBottleBackend().stop_bottle(identity)
    return f"./cli.py resume {identity}"
