"""Atomic file writes: nothing under $CLAUDE_BOTTLE_HOME is ever half-written."""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Generator
from contextlib import contextmanager
from pathlib import Path

from .errors import BottleError


def atomic_write_bytes(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write `data` to `path` via a temp file in the same folder, fsync, rename.

    On any OS error (a full disk, a read-only folder) the temp file is removed, the
    old file (if any) is untouched, and a BottleError names the path.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:  # no space, no inodes, a read-only or missing folder
        raise BottleError(f"cannot write {path}: {e.strerror or e}") from e
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise BottleError(f"cannot write {path}: {e.strerror or e}") from e


def atomic_write_text(path: Path, text: str, *, mode: int = 0o644) -> None:
    atomic_write_bytes(path, text.encode(), mode=mode)


@contextmanager
def folder_lock(path: Path) -> Generator[None]:
    """An exclusive flock on an existing folder: no lock file to leave behind, and the
    kernel drops the lock if we die."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as e:
        raise BottleError(f"cannot lock {path}: {e.strerror or e}") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def parse_json(text: str, *, source: str) -> object:
    """json.loads with one-line errors: where the syntax breaks, or why the value is unusable."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise BottleError(f"{source}: line {e.lineno} column {e.colno}: not valid JSON: {e.msg}") from None
    except (RecursionError, ValueError) as e:  # absurd nesting, a number past Python's digit limit
        detail = "nested too deeply" if isinstance(e, RecursionError) else " ".join(str(e).split())
        raise BottleError(f"{source}: not usable JSON: {detail}") from None
