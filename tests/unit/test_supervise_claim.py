from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from claude_bottle.errors import BottleError
from claude_bottle.supervise.queue import (
    Proposal, claim, claim_path, make_response, new_proposal_id, release, write_proposal, write_response,
)
from claude_bottle.supervise.checks import iso_utc, utc_now

REPO = Path(__file__).resolve().parents[2]


def queued(folder: Path) -> str:
    proposal = Proposal(id=new_proposal_id(), identity="dev-abcde", tool="capability-block", reason="rg",
                        created_at=iso_utc(utc_now()), dockerfile="FROM debian\n")
    write_proposal(folder, proposal)
    return proposal.id


def test_two_claims_one_wins_until_released(tmp_path: Path) -> None:
    pid = queued(tmp_path)
    first = claim(tmp_path, pid)
    assert first is not None and first.held
    assert claim(tmp_path, pid) is None
    assert json.loads(claim_path(tmp_path, pid).read_text())["pid"] == os.getpid()
    release(first)
    release(first)  # twice is harmless
    assert not first.held and not claim_path(tmp_path, pid).exists()
    second = claim(tmp_path, pid)
    assert second is not None
    with second:
        assert second.held
    assert not second.held


def test_claims_are_per_proposal(tmp_path: Path) -> None:
    a, b = queued(tmp_path), queued(tmp_path)
    held_a, held_b = claim(tmp_path, a), claim(tmp_path, b)
    assert held_a is not None and held_b is not None
    release(held_a)
    release(held_b)


def test_a_decided_or_missing_proposal_cannot_be_claimed(tmp_path: Path) -> None:
    pid = queued(tmp_path)
    write_response(tmp_path, make_response(pid, "reject", "no", ""))
    assert claim(tmp_path, pid) is None
    assert claim(tmp_path, new_proposal_id()) is None
    assert not list(tmp_path.glob("*.claim"))


def test_a_claim_file_left_by_a_dead_process_is_free(tmp_path: Path) -> None:
    pid = queued(tmp_path)
    claim_path(tmp_path, pid).write_text('{"pid": 999999, "claimed_at": "2020-01-01T00:00:00Z"}\n')
    held = claim(tmp_path, pid)
    assert held is not None
    release(held)


def test_a_claim_held_by_another_process_blocks_until_it_dies(tmp_path: Path) -> None:
    pid = queued(tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys
            from pathlib import Path
            from claude_bottle.supervise.queue import claim
            held = claim(Path({str(tmp_path)!r}), {pid!r})
            print("held" if held else "refused", flush=True)
            sys.stdin.read()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        assert claim(tmp_path, pid) is None
        holder.kill()  # no release: the file stays, the lock goes with the process
        holder.wait(timeout=10)
        assert claim_path(tmp_path, pid).exists()
        held = claim(tmp_path, pid)
        assert held is not None
        release(held)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=10)


def test_a_symlinked_claim_file_is_refused(tmp_path: Path) -> None:
    pid = queued(tmp_path)
    claim_path(tmp_path, pid).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(BottleError, match="cannot create the claim file"):
        claim(tmp_path, pid)
    assert not (tmp_path / "elsewhere").exists()
