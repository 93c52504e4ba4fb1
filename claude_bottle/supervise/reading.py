"""Reading queue files without trusting them: they come from the agent's side.

A queue file is opened without following a symlink (and without blocking on a FIFO),
must be a regular file of at most MAX_FILE_BYTES, and must hold strict JSON. Anything
else is a BottleError naming the file; nothing in it is ever followed or executed.
"""

from __future__ import annotations

import errno
import json
import os
import stat

from ..errors import BottleError
from .checks import loads_strict
from .records import MAX_FILE_BYTES

_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

FileSignature = tuple[int, int, int, int]  # inode, size, mtime_ns, ctime_ns: changes whenever content may


class VanishedError(BottleError):
    """The file was there when listed and is gone now (archived meanwhile)."""


def signature(st: os.stat_result) -> FileSignature:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def read_json_file(name: str, *, where: str, dir_fd: int | None = None) -> tuple[object, FileSignature]:
    """The JSON in `name` (relative to `dir_fd` when given), and the signature of what was read."""
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        raise VanishedError(f"{where}: no longer exists") from None
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.EMLINK):
            raise BottleError(f"{where}: is a symlink; queue files are never followed") from None
        raise BottleError(f"{where}: cannot open: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise BottleError(f"{where}: is not a regular file")
        if st.st_size > MAX_FILE_BYTES:
            raise BottleError(f"{where}: is {st.st_size} bytes, more than the limit of {MAX_FILE_BYTES}")
        data = os.read(fd, st.st_size + 1)  # one read; a second only if the file grew meanwhile
        while len(data) > st.st_size and len(data) <= MAX_FILE_BYTES:
            more = os.read(fd, MAX_FILE_BYTES + 1 - len(data))
            if not more:
                break
            data += more
    except OSError as e:
        raise BottleError(f"{where}: cannot read: {e.strerror or e}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise BottleError(f"{where}: grew past the limit of {MAX_FILE_BYTES} bytes while being read")
    try:
        return loads_strict(data), signature(st)
    except json.JSONDecodeError as e:
        raise BottleError(f"{where}: not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except ValueError as e:  # bad UTF-8, NaN, a duplicate key, deep nesting
        raise BottleError(f"{where}: not valid JSON: {e}") from None
