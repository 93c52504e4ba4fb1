"""Finding what waits for the operator: every undecided proposal, across all bottles, FIFO.

The dashboard calls `discover_pending` on every refresh, over a queue that may hold
thousands of proposals. Parsing and checking each file is most of the cost, so results
are remembered per file by a signature of what was read (inode, size, mtime, ctime);
the next scan only lstat()s a file it has seen. Files are replaced by rename, never
rewritten in place, so a new content always comes with a new signature.
"""

from __future__ import annotations

import os
import stat
from operator import attrgetter
from pathlib import Path
from typing import NamedTuple

from ..bottle_state import IDENTITY_RE
from ..errors import BottleError
from .layout import PROPOSAL_SUFFIX, RESPONSE_SUFFIX
from .reading import FileSignature, VanishedError, read_json_file, signature
from .checks import shown
from .records import ID_RE, Proposal

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

# file path -> (signature, the proposal or why it is invalid), as of the last scan.
_Seen = dict[str, tuple[FileSignature, "Proposal | str"]]
_seen: _Seen = {}


class PendingItem(NamedTuple):  # a NamedTuple: made ten thousand times a scan, cheaply
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


def forget_seen() -> None:
    """Drop what earlier scans remembered (the next scan reads every file again)."""
    global _seen
    _seen = {}


def proposal_from_json(obj: object, *, name: str, where: str, identity: str | None) -> Proposal:
    """A parsed proposal file as a Proposal; its id must match `name`, and its identity the folder."""
    proposal = Proposal.from_json(obj, where=where)
    if name != proposal.id + PROPOSAL_SUFFIX:
        raise BottleError(f"{where}: holds proposal {proposal.id}, which does not match its file name")
    if identity is not None and proposal.identity != identity:
        raise BottleError(f"{where}: claims identity {proposal.identity}, but sits in the queue of {identity}")
    return proposal


def discover_pending(queue_root: Path) -> list[PendingItem]:
    """Every undecided proposal under `queue_root`, across identities, oldest first.

    Broken files and folders come back as invalid items; only a queue root that exists
    but cannot be listed raises.
    """
    global _seen
    items: list[PendingItem] = []
    try:
        entries = list(os.scandir(queue_root))
    except FileNotFoundError:
        return items
    except OSError as e:
        raise BottleError(f"{queue_root}: cannot list the queue: {e.strerror or e}") from None
    seen: _Seen = {}
    for entry in entries:
        if entry.name.startswith("."):
            continue
        folder = queue_root / entry.name
        if entry.is_symlink():
            items.append(PendingItem(entry.name, "", folder, "", error=f"{shown(entry.name)}: is a symlink; never followed"))
        elif not entry.is_dir(follow_symlinks=False):
            continue
        elif not IDENTITY_RE.fullmatch(entry.name):
            items.append(PendingItem(entry.name, "", folder, "",
                                     error=f"{shown(entry.name)}: not named like a bottle identity"))
        else:
            items.extend(_pending_in(folder, entry.name, seen))
    _seen = seen  # only what exists now: the memory never outgrows the queue
    items.sort(key=attrgetter("id"))  # ids begin with their arrival time
    return items


def _pending_in(folder: Path, identity: str, seen: _Seen) -> list[PendingItem]:
    try:
        dir_fd = os.open(folder, _DIR_FLAGS)
    except OSError as e:
        return [PendingItem(identity, "", folder, "", error=f"{folder}: cannot open: {e.strerror or e}")]
    prefix = f"{folder}/"
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
            if not ID_RE.fullmatch(proposal_id):
                items.append(PendingItem(identity, proposal_id, folder, name,
                                         error=f"{prefix}{shown(name)}: file name is not <id>{PROPOSAL_SUFFIX}"))
                continue
            outcome = _load(dir_fd, name, prefix + name, identity, seen)
            if outcome is None:
                continue
            if isinstance(outcome, str):
                items.append(PendingItem(identity, proposal_id, folder, name, error=outcome))
            else:
                items.append(PendingItem(identity, proposal_id, folder, name, proposal=outcome))
    except OSError as e:
        items.append(PendingItem(identity, "", folder, "", error=f"{folder}: cannot list: {e.strerror or e}"))
    finally:
        os.close(dir_fd)
    return items


def _load(dir_fd: int, name: str, where: str, identity: str, seen: _Seen) -> Proposal | str | None:
    """The proposal in one file, why it is invalid, or None if it vanished meanwhile."""
    known = _seen.get(where)
    if known is not None:
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        except OSError:
            st = None  # reading it below reports the problem
        if st is not None and stat.S_ISREG(st.st_mode) and known[0] == signature(st):
            seen[where] = known
            return known[1]
    try:
        obj, sig = read_json_file(name, where=where, dir_fd=dir_fd)
    except VanishedError:
        return None
    except BottleError as e:
        return str(e)
    try:
        outcome: Proposal | str = proposal_from_json(obj, name=name, where=where, identity=identity)
    except BottleError as e:
        outcome = str(e)
    seen[where] = (sig, outcome)
    return outcome
