"""Claims: two dashboards open at once never decide (and apply) one proposal twice.

A claim is an exclusive flock(2) on `<id>.claim`, held while the Claim is open. The
kernel drops the lock when its holder exits or is killed, so a claim left behind by a
crashed dashboard is free again at once — no guessing whether a recorded pid is alive
(pids are reused, and a pid from another pid namespace means nothing here). The file
records the holder's pid and time only for people reading the folder.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from types import TracebackType

from ..errors import BottleError
from .layout import claim_path, proposal_path, response_path
from .checks import iso_utc, utc_now

_CLAIM_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC


class Claim:
    """The right to decide one proposal; `release()` it (or use it as a context manager)."""

    def __init__(self, proposal_id: str, path: Path, fd: int) -> None:
        self.proposal_id = proposal_id
        self.path = path
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if _names_fd(self.path, fd):
                os.unlink(self.path)  # unlink before unlocking: see _names_fd
        except OSError:
            pass
        finally:
            os.close(fd)

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def claim(queue_dir: Path, proposal_id: str) -> Claim | None:
    """Claim a pending proposal; None when another process holds it or it is no longer
    pending (decided or archived since it was listed)."""
    path = claim_path(queue_dir, proposal_id)
    for _ in range(5):
        try:
            fd = os.open(path, _CLAIM_FLAGS, 0o644)
        except OSError as e:
            raise BottleError(f"{path}: cannot create the claim file: {e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # BlockingIOError: someone else holds it
            os.close(fd)
            return None
        if not _names_fd(path, fd):
            os.close(fd)  # its holder released and removed it between our open and lock
            continue
        held = Claim(proposal_id, path, fd)
        if os.path.lexists(response_path(queue_dir, proposal_id)) or \
                not os.path.lexists(proposal_path(queue_dir, proposal_id)):
            release(held)
            return None
        _record_holder(fd)
        return held
    return None


def release(held: Claim) -> None:
    """Give a claim up (removing its file); releasing twice is harmless."""
    held.release()


def _names_fd(path: Path, fd: int) -> bool:
    """Whether `path` still names the file open as `fd`. A claimer that opened the file
    just before its holder unlinked it would otherwise lock an orphan and believe it won."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _record_holder(fd: int) -> None:
    info = json.dumps({"pid": os.getpid(), "claimed_at": iso_utc(utc_now())}) + "\n"
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.encode(), 0)
    except OSError:
        pass  # informational only; the lock is what counts
