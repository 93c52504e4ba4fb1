"""What the dashboard does with a decision: apply, then answer, then audit.

Order matters. The change is applied first; only when it is live is the response
written (the agent then learns the decision) and the audit line appended. A failed
apply writes nothing and leaves the proposal pending; a claim keeps two dashboards
from applying one proposal twice.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from ..audit import AuditEntry, append_audit, render_diff
from ..bottle_state import bottle_home, queue_dir, state_dir
from ..capability import apply_capability_change
from ..cred_proxy.apply import apply_routes_change, read_live_routes
from ..errors import BottleError
from ..fsutil import folder_lock
from ..pipelock import apply_allowlist_change, parse_allowlist, read_live_allowlist, render_allowlist
from ..supervise.claim import claim, release
from ..supervise.discover import PendingItem, discover_pending
from ..supervise.queue import archive, write_response
from ..supervise.records import Proposal, make_response


def queue_root() -> Path:
    return bottle_home() / "queue"


def audit_path() -> Path:
    return bottle_home() / "audit.jsonl"


def pending() -> list[PendingItem]:
    return discover_pending(queue_root())


@dataclass(frozen=True)
class Decided:
    status: str  # one line for the status bar


def live_content(proposal: Proposal) -> str:
    """What the proposal would replace, as the operator sees it (for the diff)."""
    if proposal.tool == "cred-proxy-block":
        return read_live_routes(proposal.identity)
    if proposal.tool == "pipelock-block":
        return render_allowlist(read_live_allowlist(proposal.identity))
    current = state_dir(proposal.identity) / "Dockerfile"
    return current.read_text() if current.is_file() else ""


def proposed_content(proposal: Proposal, *, live: str | None = None) -> str:
    """The full file the proposal asks for (a pipelock-block's hosts merged into the live
    list, read from the sidecar unless the caller already holds it as `live`)."""
    if proposal.tool == "pipelock-block":
        current = parse_allowlist(live) if live is not None else read_live_allowlist(proposal.identity)
        return render_allowlist(proposal.proposed_allowlist(current))
    return proposal.content


def approve(item: PendingItem, *, edited: str | None = None, reason: str = "") -> Decided:
    """Approve (or, with `edited`, approve the operator's version of) a pending proposal."""
    proposal = _valid(item)
    folder = queue_dir(proposal.identity)
    held = claim(folder, proposal.id)
    if held is None:
        raise BottleError(f"proposal {proposal.id} is already decided or being decided by another dashboard")
    try:
        with bottle_lock(proposal.identity):
            return _approve_claimed(proposal, folder, edited=edited, reason=reason)
    finally:
        release(held)


def bottle_lock(identity: str) -> AbstractContextManager[None]:
    """One apply at a time per bottle: a read-merge-write of its live files by two
    dashboards at once would lose one of the changes."""
    return folder_lock(state_dir(identity))


def _approve_claimed(proposal: Proposal, folder: Path, *, edited: str | None, reason: str) -> Decided:
    proposed = proposed_content(proposal)
    content = edited if edited is not None else proposed
    action = "approve" if content == proposed else "approve-modified"
    reason = reason or ("approved by the operator" if action == "approve" else "approved with the operator's edits")
    status = f"approved {proposal.tool} for {proposal.identity}"
    if proposal.tool == "cred-proxy-block":
        before, after = apply_routes_change(proposal.identity, content)
    elif proposal.tool == "pipelock-block":
        before, after = apply_allowlist_change(proposal.identity, parse_allowlist(content))
    else:
        before = live_content(proposal)
        hint = apply_capability_change(proposal.identity, content)
        after = content
        status += f"; bottle stopped with its state: {hint}"
    try:
        write_response(folder, make_response(proposal.id, action, reason, after))
    except BottleError as e:
        # Unrecorded, the change must not stay live: the proposal is still pending.
        _undo(proposal, before)
        raise BottleError(f"could not record the decision, so the change was undone: {e}") from None
    append_audit(audit_path(), AuditEntry.now(identity=proposal.identity, tool=proposal.tool, action=action,
                                              reason=reason, diff=render_diff(before, after)))
    if proposal.tool == "capability-block":
        archive(folder, proposal.id)  # its supervise sidecar is gone and cannot archive it
    return Decided(status)


def _undo(proposal: Proposal, before: str) -> None:
    if proposal.tool == "cred-proxy-block":
        apply_routes_change(proposal.identity, before)
    elif proposal.tool == "pipelock-block":
        apply_allowlist_change(proposal.identity, parse_allowlist(before))
    # A capability change has already stopped the bottle; its Dockerfile waits in the
    # state and the proposal stays pending, so the operator can decide again.


def reject(item: PendingItem, reason: str) -> Decided:
    proposal = _valid(item)
    if not reason.strip():
        raise BottleError("a rejection needs a reason: the agent reads it")
    folder = queue_dir(proposal.identity)
    held = claim(folder, proposal.id)
    if held is None:
        raise BottleError(f"proposal {proposal.id} is already decided or being decided by another dashboard")
    try:
        write_response(folder, make_response(proposal.id, "reject", reason, ""))
        append_audit(audit_path(), AuditEntry.now(identity=proposal.identity, tool=proposal.tool, action="reject",
                                                  reason=reason, diff=""))
        if proposal.tool == "capability-block":
            archive(folder, proposal.id)
        return Decided(f"rejected {proposal.tool} for {proposal.identity}")
    finally:
        release(held)


def operator_edit_routes(identity: str, new_text: str) -> Decided:
    with bottle_lock(identity):
        before, after = apply_routes_change(identity, new_text)
    append_audit(audit_path(), AuditEntry.now(identity=identity, tool="cred-proxy-block", action="operator-edit",
                                              reason="edited by the operator", diff=render_diff(before, after)))
    return Decided(f"routes of {identity} updated")


def operator_edit_allowlist(identity: str, new_text: str) -> Decided:
    with bottle_lock(identity):
        before, after = apply_allowlist_change(identity, parse_allowlist(new_text))
    append_audit(audit_path(), AuditEntry.now(identity=identity, tool="pipelock-block", action="operator-edit",
                                              reason="edited by the operator", diff=render_diff(before, after)))
    return Decided(f"allowlist of {identity} updated")


def _valid(item: PendingItem) -> Proposal:
    if item.proposal is None:
        raise BottleError(f"{item.name or item.identity} is not a valid proposal; it is listed, never acted on")
    return item.proposal
