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

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from ..errors import BottleError
from ..fsutil import atomic_write_bytes
from .claim import Claim, claim, release
from .discover import PendingItem, discover_pending, proposal_from_json
from .layout import PROPOSAL_SUFFIX, RESPONSE_SUFFIX, archive_dir, claim_path, proposal_path, response_path
from .reading import read_json_file
from .records import DECISIONS, MAX_FILE_BYTES, TOOLS, Proposal, Response, check_id, make_response, new_proposal_id

__all__ = [
    "DECISIONS", "TOOLS", "Claim", "PendingItem", "Proposal", "ProposalStatus", "Response", "archive",
    "archive_dir", "claim", "claim_path", "discover_pending", "make_response", "new_proposal_id", "proposal_path",
    "proposal_status", "read_proposal", "read_response", "release", "response_path", "write_proposal",
    "read_queue_file", "write_response",
]


def read_queue_file(path: Path) -> object:
    """The JSON in a queue file that is a regular file (not a symlink) of at most MAX_FILE_BYTES."""
    return read_json_file(str(path), where=str(path))[0]


def read_proposal(path: Path, *, identity: str | None = None) -> Proposal:
    """Parse one proposal file; its id must match its name (and `identity`, when given)."""
    return proposal_from_json(read_queue_file(path), name=path.name, where=str(path), identity=identity)


def read_response(path: Path) -> Response:
    response = Response.from_json(read_queue_file(path), where=str(path))
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
