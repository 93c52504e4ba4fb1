"""Fuzzing the proposal reader and the queue scan: any JSON, any bytes, any queue folder.

Proposal files come from the agent's side. Reading one gives a Proposal or one
BottleError line (invariant 6); `discover_pending` over a queue full of junk (odd names,
symlinks, FIFOs, folders named like proposals) returns a list with one item for every
proposal file, never raises, and reports each broken file on one line.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from dataclasses import dataclass
from datetime import timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from claude_bottle.bottle_state import IDENTITY_RE
from claude_bottle.errors import BottleError
from claude_bottle.supervise.discover import PendingItem, discover_pending
from claude_bottle.supervise.layout import PROPOSAL_SUFFIX, RESPONSE_SUFFIX
from claude_bottle.supervise.queue import Proposal, read_proposal
from claude_bottle.supervise.records import ID_RE, MAX_FILE_BYTES, MAX_HOSTS, TOOLS
from tests.unit.test_fuzz_common import (
    ANY_CHAR, assert_one_line, bug_settings, fuzz_settings, json_lists, json_values, leaf, near_object, parse,
    sometimes_wrong, weighted,
)

IDENTITY = "dev-abcde"
OTHER_IDENTITY = "web-0z9y8"
VALID_ID = "20250131-120000-123456-k3j9x"
_IDS = (VALID_ID, "20250131-120000-123457-aaaaa", "a", "0-0", "a" * 64)

ids: SearchStrategy[str] = leaf(_IDS, ("", "A", "-a", "a_b", "a" * 65, "a.b", "../x"),
                                st.from_regex(ID_RE, fullmatch=True))
identities: SearchStrategy[str] = leaf((IDENTITY, "a-00000", "x" * 40 + "-abcde"),
                                       ("dev", "dev-ABCDE", "-abcde", "dev_abcde", OTHER_IDENTITY + "\n"),
                                       st.from_regex(IDENTITY_RE, fullmatch=True))
tools: SearchStrategy[str] = leaf(TOOLS, ("", "proposal-status", "Pipelock-block"))
timestamps: SearchStrategy[str] = leaf(
    ("2025-01-31T12:00:00.123456Z", "2025-01-31T12:00:00+00:00", "2025-01-31T12:00:00Z"),
    ("2025-01-31T12:00:00", "2025-01-31T12:00:00+01:00", "", "2025-13-01T00:00:00Z", "2" * 41, "2025-01-31",
     "9999-12-31T23:59:59.999999-00:00"),
    st.datetimes(timezones=st.sampled_from((timezone.utc, timezone(timedelta(hours=1)), None))).map(
        lambda t: t.isoformat()),
)
reasons: SearchStrategy[str] = leaf(("need pypi", "two\nlines", "é", "tab\there"),
                                    ("", " ", "\x1b[31m", "\u202e", "\x00", "a" * 5000))
file_texts: SearchStrategy[str] = leaf(('{"routes": []}', "FROM debian\nRUN true\n"), ("", "\x00", "\ufeff", "\r\n"))
host_names: SearchStrategy[str] = leaf(("pypi.org", "*.pythonhosted.org", "1.2.3.4"),
                                      ("", "a b", "é", "x" * 254, "a\x00"))
host_lists: SearchStrategy[list[str]] = weighted(
    (8, json_lists(host_names)), (1, st.just(["h.org"] * (MAX_HOSTS + 1))), (1, st.just([])),
)
_CONTENT: dict[str, SearchStrategy[object]] = {
    "routes": sometimes_wrong(file_texts), "dockerfile": sometimes_wrong(file_texts),
    "hosts": sometimes_wrong(host_lists), "allowlist": sometimes_wrong(host_lists),
}
_CONTENT_FOR_TOOL = {"cred-proxy-block": (("routes",),), "pipelock-block": (("hosts",), ("allowlist",)),
                     "capability-block": (("dockerfile",),)}


@st.composite
def proposal_objects(draw: st.DrawFn, pid: str | None = None) -> dict[str, object]:
    """A proposal's JSON: mostly the content keys its tool takes, sometimes any mix of them."""
    tool = draw(tools)
    keys: tuple[str, ...] = draw(st.sampled_from(_CONTENT_FOR_TOOL.get(tool, ((),))))
    if draw(st.sampled_from(range(8))) == 7:
        keys = tuple(draw(st.lists(st.sampled_from(sorted(_CONTENT)), unique=True, max_size=3)))
    required: dict[str, SearchStrategy[object]] = {
        "version": weighted((6, st.just(1)), (1, st.sampled_from((2, 0, True, 1.0, "1", None)))),
        "id": sometimes_wrong(ids if pid is None else st.just(pid)),
        "identity": sometimes_wrong(identities),
        "tool": st.just(tool),
        "reason": sometimes_wrong(reasons),
        "created_at": sometimes_wrong(timestamps),
    }
    required.update((key, _CONTENT[key]) for key in keys)
    return draw(near_object(required))


def valid_proposal_json(pid: str, identity: str = IDENTITY) -> bytes:
    obj = {"version": 1, "id": pid, "identity": identity, "tool": "pipelock-block", "reason": "need pypi",
           "created_at": "2025-01-31T12:00:00.123456Z", "hosts": ["pypi.org"]}
    return json.dumps(obj).encode()


@st.composite
def _mangled_bytes(draw: st.DrawFn, data: bytes) -> bytes:
    at = draw(st.integers(0, len(data)))
    edit = draw(st.sampled_from(range(6)))
    if edit == 0:
        return data[:at]
    if edit == 1:
        return data[:at] + draw(st.binary(min_size=1, max_size=4)) + data[at:]
    if edit == 2:
        return b"\xef\xbb\xbf" + data
    return data


@st.composite
def proposal_file_bytes(draw: st.DrawFn, pid: str) -> bytes:
    """What a proposal file may hold: a near-valid proposal (perhaps mangled), any JSON, any bytes."""
    kind = draw(st.sampled_from(range(8)))
    if kind == 0:
        return draw(st.binary(max_size=100))
    if kind == 1:
        return draw(st.sampled_from((
            b"", b"{}", b"null", b"[" * 100_000, b'{"version": NaN}', b'{"id": 1, "id": 2}', b"\xff\xfe",
            b"1" * 5000, b" " * (MAX_FILE_BYTES + 1), b'{"version": 1e999}',
        )))
    if kind == 2:
        return json.dumps(draw(json_values)).encode("utf-8", "surrogatepass")
    text = json.dumps(draw(proposal_objects(pid)), ensure_ascii=draw(st.booleans()))
    return draw(_mangled_bytes(text.encode("utf-8", "surrogatepass")))


def assert_round_trips(proposal: Proposal) -> None:
    assert Proposal.from_json(proposal.to_json(), where="again") == proposal


@fuzz_settings(300)
@given(json_values)
def test_any_json_value_as_a_proposal(obj: object) -> None:
    proposal = parse(lambda: Proposal.from_json(obj, where="x.proposal.json"))
    if isinstance(proposal, Proposal):
        assert_round_trips(proposal)


@fuzz_settings(500)
@given(proposal_objects())
def test_near_valid_proposals(obj: dict[str, object]) -> None:
    proposal = parse(lambda: Proposal.from_json(obj, where="x.proposal.json"))
    if isinstance(proposal, Proposal):
        assert_round_trips(proposal)


# data_too_large: a file over MAX_FILE_BYTES is one of the inputs.
@fuzz_settings(300, health_checks=(HealthCheck.data_too_large,))
@given(st.sampled_from(_IDS).flatmap(lambda pid: st.tuples(st.just(pid), proposal_file_bytes(pid))),
       st.sampled_from((None, IDENTITY, OTHER_IDENTITY)))
def test_any_bytes_in_a_proposal_file(named: tuple[str, bytes], identity: str | None) -> None:
    pid, data = named
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{pid}{PROPOSAL_SUFFIX}"
        path.write_bytes(data)
        proposal = parse(lambda: read_proposal(path, identity=identity))
    if isinstance(proposal, Proposal):
        assert proposal.id == pid and identity in (None, proposal.identity)
        assert_round_trips(proposal)


# --- the queue scan -----------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One thing in a queue folder: a file, a folder, a symlink or a FIFO."""

    kind: str
    name: bytes
    data: bytes = b""
    target: bytes = b""


_TARGETS = (b"/etc/passwd", b"/nonexistent", b".", b"..", b"/dev/zero", b"loop", f"{VALID_ID}{PROPOSAL_SUFFIX}".encode())
raw_names: SearchStrategy[bytes] = st.binary(min_size=1, max_size=24).map(
    lambda b: b.replace(b"/", b"|").replace(b"\x00", b"0") + (b"x" if b in (b".", b"..") else b""))


@st.composite
def entries_in_an_identity_folder(draw: st.DrawFn) -> list[Entry]:
    entries: list[Entry] = []
    for _ in range(draw(st.integers(0, 8))):
        pid = draw(st.sampled_from(_IDS))
        kind = draw(st.sampled_from(("file",) * 6 + ("dir", "symlink", "fifo")))
        name = draw(weighted(
            (6, st.just(f"{pid}{PROPOSAL_SUFFIX}".encode())), (2, st.just(f"{pid}{RESPONSE_SUFFIX}".encode())),
            (1, raw_names), (1, raw_names.map(lambda b: b + PROPOSAL_SUFFIX.encode())),
            (1, st.sampled_from((b".hidden" + PROPOSAL_SUFFIX.encode(), b"archive", b"x.claim",
                                 PROPOSAL_SUFFIX.encode()))),
        ))
        data = draw(weighted((3, st.just(valid_proposal_json(pid))),
                             (1, st.just(valid_proposal_json(pid, OTHER_IDENTITY))),
                             (4, proposal_file_bytes(pid))))
        target = draw(st.sampled_from(_TARGETS))
        entries.append(Entry(kind, name, data, target))
    return entries


@st.composite
def queue_roots(draw: st.DrawFn) -> dict[bytes, list[Entry] | Entry]:
    """The queue root: identity folders with their entries, and junk beside them."""
    root: dict[bytes, list[Entry] | Entry] = {IDENTITY.encode(): draw(entries_in_an_identity_folder())}
    if draw(st.booleans()):
        root[OTHER_IDENTITY.encode()] = draw(entries_in_an_identity_folder())
    for _ in range(draw(st.integers(0, 3))):
        name = draw(weighted((3, raw_names), (1, st.from_regex(IDENTITY_RE, fullmatch=True).map(str.encode)),
                             (1, st.just(b".hidden"))))
        kind = draw(st.sampled_from(("file", "dir", "symlink", "fifo")))
        root.setdefault(name, Entry(kind, name, b"{}", IDENTITY.encode()))
    return root


def _make(folder: bytes, entry: Entry) -> None:
    path = os.path.join(folder, entry.name)
    if os.path.lexists(path):
        return
    if entry.kind == "file":
        with open(path, "wb") as f:
            f.write(entry.data)
    elif entry.kind == "dir":
        os.mkdir(path)
    elif entry.kind == "fifo":
        os.mkfifo(path)
    else:
        os.symlink(entry.name if entry.target == b"loop" else entry.target, path)


def build_queue(root: bytes, spec: dict[bytes, list[Entry] | Entry]) -> None:
    for name, content in spec.items():
        if isinstance(content, Entry):
            _make(root, content)
            continue
        folder = os.path.join(root, name)
        os.mkdir(folder)
        for entry in content:
            _make(folder, entry)


def expected_names(root: Path) -> set[tuple[str, str]]:
    """(identity, name) of every undecided `*.proposal.json` entry in an identity folder."""
    found: set[tuple[str, str]] = set()
    for identity in os.listdir(root):
        folder = root / identity
        if not IDENTITY_RE.fullmatch(identity) or not stat.S_ISDIR(os.lstat(folder).st_mode):
            continue
        names = set(os.listdir(folder))
        for name in names:
            pid = name[: -len(PROPOSAL_SUFFIX)]
            if name.endswith(PROPOSAL_SUFFIX) and not name.startswith(".") and pid + RESPONSE_SUFFIX not in names:
                found.add((identity, name))
    return found


def _is_known_raw_folder_name(item: PendingItem) -> bool:
    """test_bug_queue_root_entry_with_a_line_break: a folder's name goes verbatim into its error."""
    return item.name == "" and any(c in item.identity for c in "\n\r")


def assert_scan_is_sound(root: Path, items: list[PendingItem]) -> None:
    assert [item.id for item in items] == sorted(item.id for item in items)
    for item in items:
        if item.proposal is not None:
            assert item.error is None and item.proposal.id == item.id
            assert item.proposal.identity == item.identity and item.name == item.id + PROPOSAL_SUFFIX
            assert stat.S_ISREG(os.lstat(item.path).st_mode)
            assert not os.path.lexists(item.folder / f"{item.id}{RESPONSE_SUFFIX}")
        else:
            assert item.error is not None
            if not _is_known_raw_folder_name(item):
                assert_one_line(item.error, what="PendingItem.error")
    assert {(i.identity, i.name) for i in items if i.name} == expected_names(root)


# too_slow: each example builds a folder tree of files, FIFOs and symlinks.
@fuzz_settings(150, health_checks=(HealthCheck.too_slow, HealthCheck.data_too_large))
@given(queue_roots())
def test_discover_pending_on_a_queue_full_of_junk(spec: dict[bytes, list[Entry] | Entry]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        build_queue(os.fsencode(tmp), spec)
        root = Path(tmp)
        first = parse(lambda: discover_pending(root))
        assert isinstance(first, list)
        assert_scan_is_sound(root, first)
        assert parse(lambda: discover_pending(root)) == first  # the second scan answers from its memory


@pytest.mark.parametrize("kind", ["dir", "symlink", "fifo", "missing"])
def test_read_proposal_refuses_what_is_not_a_regular_file(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"{VALID_ID}{PROPOSAL_SUFFIX}"
    if kind != "missing":
        _make(os.fsencode(tmp_path), Entry(kind, path.name.encode(), target=b"/etc/passwd"))
    assert isinstance(parse(lambda: read_proposal(path), tolerate_known_bugs=False), BottleError)


# --- bugs found by the tests above, not fixed yet ----------------------------------------


@bug_settings()
@given(st.text(ANY_CHAR.filter(lambda c: c not in "/\x00" and not 0xD800 <= ord(c) <= 0xDFFF), max_size=5),
       st.sampled_from(("\n", "\r")), st.sampled_from(("dir", "symlink")))
@example("x", "\n", "dir")
def test_bug_queue_root_entry_with_a_line_break(text: str, line_break: str, kind: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        _make(os.fsencode(tmp), Entry(kind, (text + line_break).encode(), target=b"."))
        for item in discover_pending(Path(tmp)):
            assert item.error is not None
            assert_one_line(item.error, what="PendingItem.error")

