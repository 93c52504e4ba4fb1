"""Push rules: which updates the gate forwards, and how it repeats them upstream."""

from __future__ import annotations

import pytest

from claude_bottle.git_gate import GitRemote, pattern_matches
from claude_bottle.git_gate.hook import parse_updates, refusals, upstream_push_args
from claude_bottle.git_gate.refs import refusal

Z = "0" * 40
A = "a" * 40
B = "b" * 40


@pytest.mark.parametrize(
    ("pattern", "ref", "matches"),
    [
        ("refs/heads/agent/*", "refs/heads/agent/x", True),
        ("refs/heads/agent/*", "refs/heads/agent/x/y", True),
        ("refs/heads/agent/*", "refs/heads/agent", False),
        ("refs/heads/agent/*", "refs/heads/agent/", False),
        ("refs/heads/agent/*", "refs/heads/agents/x", False),
        ("refs/heads/agent/*", "refs/heads/main", False),
        ("refs/heads/main", "refs/heads/main", True),
        ("refs/heads/main", "refs/heads/main2", False),
        ("refs/tags/v*", "refs/tags/v1.2", True),
        ("refs/heads/*/wip", "refs/heads/me/wip", True),
        ("refs/heads/a.b", "refs/heads/aXb", False),
    ],
)
def test_pattern_matching(pattern: str, ref: str, matches: bool) -> None:
    assert pattern_matches(pattern, ref) is matches


RULES = ("refs/heads/agent/*", "refs/tags/*")


@pytest.mark.parametrize(
    ("ref", "old", "new", "push", "force", "ff", "reason"),
    [
        ("refs/heads/agent/x", Z, A, RULES, False, True, None),
        ("refs/heads/agent/x", A, B, RULES, False, True, None),
        ("refs/heads/agent/x", A, B, RULES, False, False, "force-push not allowed (force: false)"),
        ("refs/heads/agent/x", A, B, RULES, True, False, None),
        ("refs/heads/agent/x", A, Z, RULES, False, True, "deletion not allowed (force: false)"),
        ("refs/heads/agent/x", A, Z, RULES, True, True, None),
        ("refs/heads/main", A, B, RULES, False, True, "not in push rules (refs/heads/agent/*, refs/tags/*)"),
        ("refs/heads/main", A, Z, RULES, True, True, "not in push rules (refs/heads/agent/*, refs/tags/*)"),
        ("refs/tags/v1", Z, A, RULES, False, True, None),
        ("refs/tags/v1", A, B, RULES, False, True, "moving an existing tag is a force-push, not allowed (force: false)"),
        ("refs/heads/agent/x", Z, A, (), False, True, "remote origin is read-only (no push rules)"),
    ],
)
def test_refusal(ref: str, old: str, new: str, push: tuple[str, ...], force: bool, ff: bool, reason: str | None) -> None:
    got = refusal(ref, old, new, remote_name="origin", push=push, force=force, is_ancestor=lambda o, n: ff)
    assert got == reason


def test_hook_lines_and_upstream_push() -> None:
    updates = parse_updates(f"{Z} {A} refs/heads/agent/new\n{A} {B} refs/heads/main\n\n")
    assert updates == [(Z, A, "refs/heads/agent/new"), (A, B, "refs/heads/main")]
    origin = GitRemote("origin", "git@h:/r.git", ("refs/heads/agent/*",))
    assert refusals(origin, updates) == {
        "refs/heads/main": "git-gate: refused refs/heads/main: not in push rules (refs/heads/agent/*)",
    }
    assert upstream_push_args(origin, [(Z, A, "refs/heads/agent/new"), (A, B, "refs/heads/agent/old")]) == [
        "git", "push", "git@h:/r.git", f"{A}:refs/heads/agent/new", f"{B}:refs/heads/agent/old",
    ]


def test_force_remote_pushes_with_a_lease_on_what_the_agent_saw() -> None:
    free = GitRemote("free", "https://u@h/r.git", ("refs/heads/*",), force=True)
    assert upstream_push_args(free, [(Z, A, "refs/heads/new"), (A, B, "refs/heads/moved"), (B, Z, "refs/heads/gone")]) == [
        "git", "push", "https://h/r.git",
        f"--force-with-lease=refs/heads/moved:{A}", f"--force-with-lease=refs/heads/gone:{B}",
        f"{A}:refs/heads/new", f"+{B}:refs/heads/moved", "+:refs/heads/gone",
    ]
