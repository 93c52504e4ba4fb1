"""Atomic file writes: nothing under $CLAUDE_BOTTLE_HOME is ever half-written."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import BottleError


def atomic_write_bytes(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write `data` to `path` via a temp file in the same folder, fsync, rename.

    On any OS error (a full disk, a read-only folder) the temp file is removed, the
    old file (if any) is untouched, and a BottleError names the path.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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
