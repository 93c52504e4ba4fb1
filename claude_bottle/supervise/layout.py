"""File names inside one identity's queue folder; ids are checked before they become paths."""

from __future__ import annotations

from pathlib import Path

from .records import check_id

PROPOSAL_SUFFIX = ".proposal.json"
RESPONSE_SUFFIX = ".response.json"
CLAIM_SUFFIX = ".claim"
ARCHIVE = "archive"


def proposal_path(queue_dir: Path, proposal_id: str) -> Path:
    return queue_dir / f"{check_id(proposal_id)}{PROPOSAL_SUFFIX}"


def response_path(queue_dir: Path, proposal_id: str) -> Path:
    return queue_dir / f"{check_id(proposal_id)}{RESPONSE_SUFFIX}"


def claim_path(queue_dir: Path, proposal_id: str) -> Path:
    return queue_dir / f"{check_id(proposal_id)}{CLAIM_SUFFIX}"


def archive_dir(queue_dir: Path) -> Path:
    return queue_dir / ARCHIVE
