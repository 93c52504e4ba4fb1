"""Copy the agent's Claude Code session files out of its container, safely.

Everything that comes out of the agent container is hostile: the tar stream is
unpacked by hand, regular files and folders only, names checked, sizes capped,
nothing followed and nothing executed.
"""

from __future__ import annotations

import io
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from ...bottle_state import state_dir
from ...errors import BottleError
from ...fsutil import atomic_write_bytes
from .provision import PROJECTS_DIR

MAX_FILE = 64 * 1024 * 1024
MAX_TOTAL = 256 * 1024 * 1024


def transcript_dir(identity: str) -> Path:
    return state_dir(identity) / "transcript"


def snapshot_transcript(identity: str, docker_bytes: Callable[..., bytes]) -> Path | None:
    """Copy ~/.claude/projects (one folder per working directory, named by Claude Code's
    own mangling of the path) into the state; None when the agent never wrote a session
    (e.g. `claude --version`)."""
    src = PROJECTS_DIR
    try:
        stream = docker_bytes("cp", f"claude-bottle-{identity}:{src}/.", "-")
    except BottleError as e:
        if "Could not find the file" in str(e):
            return None
        raise
    return save_transcript_tar(stream, transcript_dir(identity))


def save_transcript_tar(stream: bytes, dest: Path) -> Path:
    """Unpack a session-folder tar into `dest`, replacing it only when the whole tar was good."""
    staging = dest.with_name(dest.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    total = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(stream)) as tar:
            for member in tar:
                rel = _safe_relative(member.name)
                if rel is None or member.isdir():
                    continue
                if not member.isfile():
                    continue  # symlinks, devices, hard links: never recreated on the host
                total += member.size
                if member.size > MAX_FILE or total > MAX_TOTAL:
                    raise BottleError(f"transcript file {rel} is larger than the {MAX_FILE >> 20} MiB limit")
                data = tar.extractfile(member)
                if data is None:
                    continue
                atomic_write_bytes(staging / rel, data.read(), mode=0o600)
    except tarfile.TarError as e:
        shutil.rmtree(staging, ignore_errors=True)
        raise BottleError(f"transcript archive from the agent is not readable: {' '.join(str(e).split())}") from None
    except BottleError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    staging.mkdir(parents=True, exist_ok=True)
    old = dest.with_name(dest.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        dest.rename(old)
    staging.rename(dest)
    shutil.rmtree(old, ignore_errors=True)
    return dest


def _safe_relative(name: str) -> Path | None:
    parts = [p for p in PurePosixPath(name).parts if p not in (".", "")]
    if not parts or any(p == ".." or p.startswith("/") for p in parts) or name.startswith("/"):
        return None
    return Path(*parts)
