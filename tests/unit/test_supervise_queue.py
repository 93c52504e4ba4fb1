from __future__ import annotations

import dataclasses
import json
import os
import re
import random
from pathlib import Path

import pytest

from claude_bottle.errors import BottleError
from claude_bottle.supervise.queue import (
    PendingItem, Proposal, archive, archive_dir, discover_pending, make_response, new_proposal_id,
    proposal_path, proposal_status, read_proposal, read_response, response_path, write_proposal, write_response,
)
from claude_bottle.supervise.checks import iso_utc, utc_now
from claude_bottle.supervise.records import ID_RE, MAX_FILE_BYTES, check_id

ROUTES = '{"routes": [{"name": "gh", "upstream": "https://api.github.com", "header": "Authorization", ' \
         '"value": "token ${GH_TOKEN}"}]}\n'


def make_proposal(identity: str = "dev-abcde", tool: str = "cred-proxy-block", *, routes: str | None = None,
                  hosts: tuple[str, ...] | None = None, allowlist: tuple[str, ...] | None = None,
                  dockerfile: str | None = None) -> Proposal:
    if (routes, hosts, allowlist, dockerfile) == (None, None, None, None):
        if tool == "cred-proxy-block":
            routes = ROUTES
        elif tool == "pipelock-block":
            hosts = ("pypi.org",)
        else:
            dockerfile = "FROM debian\n"
    return Proposal(id=new_proposal_id(), identity=identity, tool=tool, reason="I need it",
                    created_at=iso_utc(utc_now()), routes=routes, hosts=hosts, allowlist=allowlist,
                    dockerfile=dockerfile)


@pytest.mark.parametrize("tool", ["cred-proxy-block", "pipelock-block", "capability-block"])
def test_proposal_round_trip(tmp_path: Path, tool: str) -> None:
    proposal = make_proposal(tool=tool)
    path = write_proposal(tmp_path / "dev-abcde", proposal)
    assert path == tmp_path / "dev-abcde" / f"{proposal.id}.proposal.json"
    assert read_proposal(path) == proposal
    assert json.loads(path.read_text())["tool"] == tool


def test_pipelock_allowlist_proposal_and_content() -> None:
    add = make_proposal(tool="pipelock-block", hosts=("b.org", "a.org"))
    assert add.content == "b.org\na.org\n"
    assert add.proposed_allowlist(["a.org", "c.org"]) == ("a.org", "c.org", "b.org")
    full = make_proposal(tool="pipelock-block", allowlist=("x.org",))
    assert full.proposed_allowlist(["a.org"]) == ("x.org",)
    with pytest.raises(BottleError, match="not a pipelock-block"):
        make_proposal().proposed_allowlist([])


def test_response_round_trip_and_no_overwrite(tmp_path: Path) -> None:
    proposal = make_proposal()
    write_proposal(tmp_path, proposal)
    response = make_response(proposal.id, "approve-modified", "trimmed it", "{}\n")
    path = write_response(tmp_path, response)
    assert path == response_path(tmp_path, proposal.id)
    assert read_response(path) == response
    with pytest.raises(BottleError, match="already decided"):
        write_response(tmp_path, make_response(proposal.id, "reject", "no", ""))
    with pytest.raises(BottleError, match="no pending proposal"):
        write_response(tmp_path, make_response(new_proposal_id(), "reject", "no", ""))


def test_ids_sort_by_arrival_and_are_unique() -> None:
    ids = [new_proposal_id() for _ in range(2000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(ID_RE.fullmatch(i) for i in ids)


@pytest.mark.parametrize("bad", ["", "../x", "a/b", "a.b", "Upper", "-lead", "x" * 65, "a\nb", ".hidden"])
def test_ids_that_are_not_safe_file_names_are_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(BottleError, match="not a proposal id"):
        check_id(bad)
    with pytest.raises(BottleError):
        proposal_path(tmp_path, bad)


BAD_PROPOSALS: list[tuple[dict[str, object], str]] = [
    ({"tool": "shell-block"}, "tool 'shell-block' is not one of"),
    ({"identity": "../etc"}, "is not a bottle identity"),
    ({"identity": "Dev-abcde"}, "is not a bottle identity"),
    ({"reason": "  "}, "reason must not be empty"),
    ({"reason": "x" * 5000}, "more than the limit of 4096"),
    ({"reason": "ok \x1b[2J"}, "U+001B"),
    ({"routes": "{}\u202e"}, "U+202E (line 1)"),
    ({"routes": "a\nb\x9b"}, "U+009B (line 2)"),
    ({"created_at": "2025-01-01T12:00:00+02:00"}, "not an ISO-8601 UTC time"),
    ({"created_at": "yesterday"}, "not an ISO-8601 UTC time"),
    ({"routes": None, "dockerfile": "FROM x"}, "carries routes, not dockerfile"),
    ({"routes": None}, "carries routes, not nothing"),
]


@pytest.mark.parametrize(("change", "message"), BAD_PROPOSALS)
def test_invalid_proposals_cannot_be_made(change: dict[str, object], message: str) -> None:
    with pytest.raises(BottleError, match=re.escape(message)):
        dataclasses.replace(make_proposal(), **change)


def test_pipelock_proposal_needs_exactly_one_host_list() -> None:
    with pytest.raises(BottleError, match=re.escape("carries hosts or allowlist, not hosts+allowlist")):
        make_proposal(tool="pipelock-block", hosts=("a.org",), allowlist=("b.org",))
    with pytest.raises(BottleError, match="hosts must name at least one host"):
        make_proposal(tool="pipelock-block", hosts=())
    assert make_proposal(tool="pipelock-block", allowlist=()).allowlist == ()


def test_reject_needs_a_reason() -> None:
    with pytest.raises(BottleError, match="reason must not be empty"):
        make_response(new_proposal_id(), "reject", "", "")
    with pytest.raises(BottleError, match="decision 'maybe'"):
        make_response(new_proposal_id(), "maybe", "", "")
    assert make_response(new_proposal_id(), "approve", "", "x").reason == ""


def test_discover_pending_is_fifo_across_identities(tmp_path: Path) -> None:
    identities = [f"agent{i}-{i:05d}" for i in range(6)]
    rng = random.Random(7)
    made = [make_proposal(identity=rng.choice(identities)) for _ in range(40)]
    for proposal in reversed(made):  # write order must not matter, arrival (id) does
        write_proposal(tmp_path / proposal.identity, proposal)
    decided = made[3]
    write_response(tmp_path / decided.identity, make_response(decided.id, "reject", "no", ""))
    items = discover_pending(tmp_path)
    assert [i.id for i in items] == [p.id for p in made if p is not decided]
    assert all(i.valid and i.proposal is not None and i.identity == i.proposal.identity for i in items)
    assert items[0].path == proposal_path(tmp_path / made[0].identity, made[0].id)


def test_discover_pending_without_a_queue_is_empty(tmp_path: Path) -> None:
    assert discover_pending(tmp_path / "missing") == []
    (tmp_path / "dev-abcde" / "archive").mkdir(parents=True)
    (tmp_path / "dev-abcde" / ".x.proposal.json.tmp").write_text("half")
    assert discover_pending(tmp_path) == []


def _invalid(items: list[PendingItem], proposal_id: str) -> str:
    [item] = [i for i in items if i.id == proposal_id]
    assert item.proposal is None and item.error is not None and "\n" not in item.error
    return item.error


def test_bad_proposal_files_are_listed_as_invalid_never_followed(tmp_path: Path) -> None:
    folder = tmp_path / "dev-abcde"
    good = make_proposal()
    write_proposal(folder, good)

    def named(suffix: str) -> Path:
        return folder / f"{new_proposal_id()}-{suffix}.proposal.json"

    (malformed := named("malformed")).write_text('{"version": 1, "id": ')
    (oversized := named("oversized")).write_bytes(b" " * (MAX_FILE_BYTES + 1))
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps(make_proposal().to_json()))
    (symlink := named("symlink")).symlink_to(outside)
    (directory := named("dir")).mkdir()
    os.mkfifo(fifo := named("fifo"))  # would block a plain open() forever
    (a_list := named("list")).write_text("[1, 2]")
    (nan := named("nan")).write_text('{"version": NaN}')
    (binary := named("binary")).write_bytes(b"\xff\xfe{}")
    other = make_proposal(identity="other-abcde")
    (wrong_identity := folder / f"{other.id}.proposal.json").write_text(json.dumps(other.to_json()))
    mismatch = make_proposal()
    (wrong_name := named("renamed")).write_text(json.dumps(mismatch.to_json()))
    (bad_name := folder / "Bad_Name.proposal.json").write_text("{}")
    (tmp_path / "not-an-identity").mkdir()
    (tmp_path / "link-abcde").symlink_to(folder)

    items = discover_pending(tmp_path)
    stem = len(".proposal.json")
    expectations = {
        malformed: "not valid JSON", oversized: "more than the limit", symlink: "is a symlink",
        directory: "not a regular file", fifo: "not a regular file", a_list: "must be a JSON object, not a list",
        nan: "NaN is not JSON", binary: "not valid JSON", wrong_identity: "sits in the queue of dev-abcde",
        wrong_name: "does not match its file name", bad_name: "file name is not <id>.proposal.json",
    }
    for path, message in expectations.items():
        assert message in _invalid(items, path.name[:-stem]), path.name
    folders = {i.identity: i.error for i in items if i.id == ""}
    assert "not named like a bottle identity" in str(folders["not-an-identity"])
    assert "is a symlink" in str(folders["link-abcde"])
    assert [i.id for i in items if i.valid] == [good.id]


def test_archive_moves_both_files_and_status_still_finds_them(tmp_path: Path) -> None:
    proposal = make_proposal()
    write_proposal(tmp_path, proposal)
    assert proposal_status(tmp_path, proposal.id).state == "pending"
    response = make_response(proposal.id, "approve", "fine", ROUTES)
    write_response(tmp_path, response)
    assert proposal_status(tmp_path, proposal.id).response == response
    archive(tmp_path, proposal.id)
    archive(tmp_path, proposal.id)  # again: nothing left to move, no error
    assert sorted(p.name for p in archive_dir(tmp_path).iterdir()) == [
        f"{proposal.id}.proposal.json", f"{proposal.id}.response.json"]
    assert not proposal_path(tmp_path, proposal.id).exists()
    status = proposal_status(tmp_path, proposal.id)
    assert (status.state, status.response, status.proposal) == ("decided", response, proposal)
    assert proposal_status(tmp_path, new_proposal_id()).state == "unknown"


def test_archived_without_a_response_is_closed(tmp_path: Path) -> None:
    proposal = make_proposal()
    folder = tmp_path / "dev-abcde"
    write_proposal(folder, proposal)
    archive(folder, proposal.id)
    assert proposal_status(folder, proposal.id).state == "closed"
    assert discover_pending(tmp_path) == []


def test_a_rescan_sees_every_change_to_a_remembered_file(tmp_path: Path) -> None:
    folder = tmp_path / "dev-abcde"
    proposal = make_proposal()
    path = write_proposal(folder, proposal)
    assert [i.proposal for i in discover_pending(tmp_path)] == [proposal]
    text = path.read_text()
    path.write_text(text.replace('"I need it"', '"I need \\u001b"'))  # rewritten in place
    assert "U+001B" in str(discover_pending(tmp_path)[0].error)
    path.write_text(text)
    assert [i.proposal for i in discover_pending(tmp_path)] == [proposal]
    outside = tmp_path / "outside.json"
    outside.write_text(text)
    path.unlink()
    path.symlink_to(outside)  # swapped for a symlink after it was remembered
    assert "is a symlink" in str(discover_pending(tmp_path)[0].error)
    path.unlink()
    assert discover_pending(tmp_path) == []
