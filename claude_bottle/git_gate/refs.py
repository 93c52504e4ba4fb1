"""Push rules: which ref updates the gate forwards to the real remote.

A push pattern is a full ref name (`refs/...`) in which `*` matches one or more
characters, `/` included: `refs/heads/agent/*` allows `refs/heads/agent/x` and
`refs/heads/agent/x/y`, not `refs/heads/agent` itself nor `refs/heads/main`. A pattern
without `*` allows exactly that ref. This is how git's own refspec globs read.

Without `force: true` a remote refuses deletions and non-fast-forward updates; moving
an existing tag counts as a force-push, as it does for git itself.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

# check-ref-format's forbidden characters; `*` is handled as the glob.
_BAD_REF_CHARS = re.compile(r"[\x00-\x20\x7f~^:?\[\\]")


def push_pattern_problem(pattern: str) -> str | None:
    """Why `pattern` is not a usable push pattern, or None."""
    if not pattern.startswith("refs/") or pattern == "refs/":
        return "must be a full ref name or glob starting with refs/, e.g. \"refs/heads/agent/*\""
    if "**" in pattern:
        return "'**' is not needed: '*' already matches across '/'"
    return ref_name_problem(pattern.replace("*", "x"))


def ref_name_problem(ref: str) -> str | None:
    """git check-ref-format's rules, phrased for a person."""
    if _BAD_REF_CHARS.search(ref):
        return "contains a character git forbids in ref names (space, control, ~ ^ : ? [ \\)"
    if "//" in ref or ref.endswith("/"):
        return "has an empty path component"
    if ".." in ref or "@{" in ref or ref.endswith("."):
        return "is not a valid ref name ('..', '@{' or a trailing '.')"
    for part in ref.split("/"):
        if part.startswith(".") or part.endswith(".lock"):
            return "has a component starting with '.' or ending with '.lock'"
    return None


def pattern_matches(pattern: str, ref: str) -> bool:
    regex = ".+".join(re.escape(piece) for piece in pattern.split("*"))
    return re.fullmatch(regex, ref) is not None


def is_zero(oid: str) -> bool:
    return set(oid) == {"0"}


def refusal(
    ref: str,
    old: str,
    new: str,
    *,
    remote_name: str,
    push: Sequence[str],
    force: bool,
    is_ancestor: Callable[[str, str], bool],
) -> str | None:
    """Why the gate refuses to update `ref` from `old` to `new`, or None to allow it.

    `is_ancestor(old, new)` answers whether the update is a fast-forward; it is only
    asked when that matters.
    """
    if not push:
        return f"remote {remote_name} is read-only (no push rules)"
    if not any(pattern_matches(p, ref) for p in push):
        return f"not in push rules ({', '.join(push)})"
    if is_zero(new):
        return None if force else "deletion not allowed (force: false)"
    if is_zero(old) or force:
        return None
    if ref.startswith("refs/tags/"):
        return "moving an existing tag is a force-push, not allowed (force: false)"
    if not is_ancestor(old, new):
        return "force-push not allowed (force: false)"
    return None
