"""The proposal / response queue on disk, shared by the supervise sidecar and the dashboard.

    <queue root>/<identity>/<id>.proposal.json    written by the sidecar (the agent's ask)
    <queue root>/<identity>/<id>.response.json    written by the dashboard (the decision)
    <queue root>/<identity>/<id>.claim            held by the dashboard deciding it
    <queue root>/<identity>/archive/              both files, once the agent has its answer

The sidecar sees only its own `<identity>/` folder (a bind mount). Everything here is
content from the agent's side and is only ever parsed: files are opened without
following symlinks, must be regular and small, and a bad one is reported, not raised,
by `discover_pending`.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from operator import attrgetter
from dataclasses import dataclass
from pathlib import Path

from ..bottle_state import IDENTITY_RE
from ..errors import BottleError
from ..fsutil import atomic_write_bytes
from .claim import Claim, claim, release
from .layout import PROPOSAL_SUFFIX, RESPONSE_SUFFIX, archive_dir, claim_path, proposal_path, response_path
from .records import (
    DECISIONS, ID_RE, MAX_FILE_BYTES, TOOLS, Proposal, Response, check_id, loads_strict, make_response,
    new_proposal_id, shown,
)

__all__ = [
    "DECISIONS", "TOOLS", "Claim", "PendingItem", "Proposal", "ProposalStatus", "Response", "archive",
    "archive_dir", "claim", "claim_path", "discover_pending", "make_response", "new_proposal_id", "proposal_path",
    "proposal_status", "read_proposal", "read_response", "release", "response_path", "write_proposal",
    "write_response",
]

_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # NONBLOCK: a FIFO must not hang us
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def read_queue_file(path: Path) -> object:
    """The JSON in a queue file that is a regular file (not a symlink) of at most MAX_FILE_BYTES."""
    return _read_json(str(path), where=str(path))


def _read_json(name: str, *, where: str, dir_fd: int | None = None) -> object:
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
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
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_FILE_BYTES:
            wanted = max(st.st_size + 1 - size, 4096)
            chunk = os.read(fd, wanted)
            chunks.append(chunk)
            size += len(chunk)
            if len(chunk) < wanted:  # end of file (a regular file is read in full otherwise)
                break
    except OSError as e:
        raise BottleError(f"{where}: cannot read: {e.strerror or e}") from None
    finally:
        os.close(fd)
    if size > MAX_FILE_BYTES:
        raise BottleError(f"{where}: is more than the limit of {MAX_FILE_BYTES} bytes")
    try:
        return loads_strict(chunks[0] if len(chunks) == 1 else b"".join(chunks))
    except json.JSONDecodeError as e:
        raise BottleError(f"{where}: not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except ValueError as e:  # bad UTF-8, NaN, a duplicate key, deep nesting
        raise BottleError(f"{where}: not valid JSON: {e}") from None


def read_proposal(path: Path, *, identity: str | None = None) -> Proposal:
    """Parse one proposal file; its id must match its name (and `identity`, when given)."""
    where = str(path)
    return _proposal_from(_read_json(where, where=where), name=path.name, where=where, identity=identity)


def _proposal_from(obj: object, *, name: str, where: str, identity: str | None) -> Proposal:
    proposal = Proposal.from_json(obj, where=where)
    if name != proposal.id + PROPOSAL_SUFFIX:
        raise BottleError(f"{where}: holds proposal {proposal.id}, which does not match its file name")
    if identity is not None and proposal.identity != identity:
        raise BottleError(f"{where}: claims identity {proposal.identity}, but sits in the queue of {identity}")
    return proposal


def read_response(path: Path) -> Response:
    response = Response.from_json(_read_json(str(path), where=str(path)), where=str(path))
    if path.name != f"{response.id}{RESPONSE_SUFFIX}":
        raise BottleError(f"{path}: holds the response to {response.id}, which does not match its file name")
    return response


def _encode(obj: dict[str, object], *, path: Path) -> bytes:
    data = (json.dumps(obj, ensure_ascii=False, indent=2) + "\n").encode()
    if len(data) > MAX_FILE_BYTES:
        raise BottleError(f"{path}: would be {len(data)} bytes, more than the limit of {MAX_FILE_BYTES}")
    return data


def write_proposal(queue_dir: Path, proposal: Proposal) -> Path:
    path = proposal_path(queue_dir, proposal.id)
    data = _encode(proposal.to_json(), path=path)
    if os.path.lexists(path):
        raise BottleError(f"{path}: a proposal with this id already exists")
    atomic_write_bytes(path, data)
    return path


def write_response(queue_dir: Path, response: Response) -> Path:
    """Record the operator's decision on a pending proposal (never overwrites one)."""
    path = response_path(queue_dir, response.id)
    data = _encode(response.to_json(), path=path)
    if not os.path.lexists(proposal_path(queue_dir, response.id)):
        raise BottleError(f"{path.parent}: no pending proposal {response.id} to answer")
    if os.path.lexists(path):
        raise BottleError(f"{path}: proposal {response.id} is already decided")
    atomic_write_bytes(path, data)
    return path


def archive(queue_dir: Path, proposal_id: str) -> None:
    """Move a proposal and its response into archive/; files already gone are skipped.

    The proposal moves first: a crash in between leaves a lone response, which is not
    pending, rather than a lone proposal, which would be asked again.
    """
    folder = archive_dir(queue_dir)
    try:
        folder.mkdir(exist_ok=True)
        if not stat.S_ISDIR(os.lstat(folder).st_mode):
            raise BottleError(f"{folder}: is not a folder")
        for suffix in (PROPOSAL_SUFFIX, RESPONSE_SUFFIX):
            name = f"{check_id(proposal_id)}{suffix}"
            try:
                os.rename(queue_dir / name, folder / name)
            except FileNotFoundError:
                continue
    except OSError as e:
        raise BottleError(f"{queue_dir}: cannot archive proposal {proposal_id}: {e.strerror or e}") from None


@dataclass(frozen=True)
class PendingItem:
    """A proposal waiting for a decision, or a file or folder in the queue that is broken.

    `error` is set (and `proposal` is None) for an invalid item; the dashboard lists it
    with its message and never acts on it. A broken folder has an empty `id` and `name`.
    """

    identity: str
    id: str
    folder: Path
    name: str
    proposal: Proposal | None = None
    error: str | None = None

    @property
    def path(self) -> Path:
        return self.folder / self.name if self.name else self.folder

    @property
    def valid(self) -> bool:
        return self.error is None


def discover_pending(queue_root: Path) -> list[PendingItem]:
    """Every undecided proposal under `queue_root`, across identities, oldest first.

    Broken files and folders come back as invalid items (see PendingItem); only a queue
    root that exists but cannot be listed raises.
    """
    items: list[PendingItem] = []
    try:
        entries = list(os.scandir(queue_root))
    except FileNotFoundError:
        return items
    except OSError as e:
        raise BottleError(f"{queue_root}: cannot list the queue: {e.strerror or e}") from None
    for entry in entries:
        if entry.name.startswith("."):
            continue
        folder = queue_root / entry.name
        if entry.is_symlink():
            items.append(PendingItem(entry.name, "", folder, "", error=f"{folder}: is a symlink; never followed"))
        elif not entry.is_dir(follow_symlinks=False):
            continue
        elif not IDENTITY_RE.fullmatch(entry.name):
            items.append(PendingItem(entry.name, "", folder, "", error=f"{folder}: not named like a bottle identity"))
        else:
            items.extend(_pending_in(folder, entry.name))
    items.sort(key=attrgetter("id", "identity"))
    return items


def _pending_in(folder: Path, identity: str) -> list[PendingItem]:
    prefix = f"{folder}/"
    try:
        dir_fd = os.open(folder, _DIR_FLAGS)
    except OSError as e:
        return [PendingItem(identity, "", folder, "", error=f"{folder}: cannot open: {e.strerror or e}")]
    items: list[PendingItem] = []
    try:
        names = os.listdir(dir_fd)
        present = set(names)
        for name in names:
            if not name.endswith(PROPOSAL_SUFFIX) or name.startswith("."):
                continue
            proposal_id = name[: -len(PROPOSAL_SUFFIX)]
            if proposal_id + RESPONSE_SUFFIX in present:
                continue  # decided; the agent has not collected its answer yet
            where = prefix + name
            if not ID_RE.fullmatch(proposal_id):
                items.append(PendingItem(identity, proposal_id, folder, name,
                                         error=f"{prefix}{shown(name)}: file name is not <id>{PROPOSAL_SUFFIX}"))
                continue
            try:
                obj = _read_json(name, where=where, dir_fd=dir_fd)
                proposal = _proposal_from(obj, name=name, where=where, identity=identity)
            except BottleError as e:
                items.append(PendingItem(identity, proposal_id, folder, name, error=str(e)))
            else:
                items.append(PendingItem(identity, proposal_id, folder, name, proposal=proposal))
    except OSError as e:
        items.append(PendingItem(identity, "", folder, "", error=f"{folder}: cannot list: {e.strerror or e}"))
    finally:
        os.close(dir_fd)
    return items


@dataclass(frozen=True)
class ProposalStatus:
    """Where a proposal stands: pending, decided (with the response), closed (archived
    without a decision) or unknown."""

    state: str
    proposal: Proposal | None = None
    response: Response | None = None


def proposal_status(queue_dir: Path, proposal_id: str) -> ProposalStatus:
    """Look a proposal up in the queue folder, then in its archive; raises on a bad file."""
    check_id(proposal_id)
    for _ in range(3):  # files may move to archive/ while we look
        for folder, state in ((queue_dir, "pending"), (archive_dir(queue_dir), "closed")):
            response = _read_if_present(response_path(folder, proposal_id))
            if response is not None:
                return ProposalStatus("decided", _proposal_if_readable(folder, proposal_id), response)
            if os.path.lexists(proposal_path(folder, proposal_id)):
                if os.path.lexists(response_path(folder, proposal_id)):
                    break  # decided this instant: look again
                return ProposalStatus(state, _proposal_if_readable(folder, proposal_id))
        else:
            if not os.path.lexists(proposal_path(queue_dir, proposal_id)):
                return ProposalStatus("unknown")
    return ProposalStatus("unknown")


def _read_if_present(path: Path) -> Response | None:
    if not os.path.lexists(path):
        return None
    try:
        return read_response(path)
    except BottleError:
        if not os.path.lexists(path):
            return None  # archived while we read it
        raise


def _proposal_if_readable(folder: Path, proposal_id: str) -> Proposal | None:
    try:
        return read_proposal(proposal_path(folder, proposal_id))
    except BottleError:
        return None
