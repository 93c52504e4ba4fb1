"""The pre-receive hook of the gate's clone: check the agent's push, then make it for real.

git receive-pack runs this with the pushed objects still in quarantine and one
`<old> <new> <ref>` line per ref on stdin. If every update obeys the push rules, the
hook pushes the same updates to the real remote with the gate's credentials; its
output reaches the agent as `remote:` lines, and its exit status decides whether the
gate's clone takes the update. Either way the agent sees the real remote's answer.

Run as `python3 -m claude_bottle.git_gate.hook --config C --remote NAME --known-hosts K`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from ..errors import BottleError
from .refs import is_zero, refusal
from .remotes import GitRemote
from .upstream import failure_hint, load_gate_config, load_secrets, upstream_env, upstream_url


def parse_updates(text: str) -> list[tuple[str, str, str]]:
    updates: list[tuple[str, str, str]] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3:
            updates.append((parts[0], parts[1], parts[2]))
    return updates


def refusals(remote: GitRemote, updates: Sequence[tuple[str, str, str]]) -> dict[str, str]:
    """`git-gate: refused …` lines, by ref, for the updates that break a rule."""
    lines: dict[str, str] = {}
    for old, new, ref in updates:
        reason = refusal(
            ref, old, new, remote_name=remote.name, push=remote.push, force=remote.force,
            is_ancestor=_is_ancestor,
        )
        if reason:
            lines[ref] = f"git-gate: refused {ref}: {reason}"
    return lines


def upstream_push_args(remote: GitRemote, updates: Sequence[tuple[str, str, str]]) -> list[str]:
    """`git push` arguments that repeat the agent's updates on the real remote.

    Without `force` the real remote applies its own fast-forward rule. With it, each
    overwrite or deletion carries a lease on the value the agent saw, so commits that
    reached the real remote since are never clobbered.
    """
    args = ["git", "push", upstream_url(remote)]
    refspecs: list[str] = []
    for old, new, ref in updates:
        src = "" if is_zero(new) else new
        if remote.force and not is_zero(old):
            args.append(f"--force-with-lease={ref}:{old}")
            refspecs.append(f"+{src}:{ref}")
        else:
            refspecs.append(f"{src}:{ref}")
    return args + refspecs


def _is_ancestor(old: str, new: str) -> bool:
    proc = subprocess.run(["git", "merge-base", "--is-ancestor", old, new], capture_output=True)
    return proc.returncode == 0


def run_hook(remote: GitRemote, updates: Sequence[tuple[str, str, str]], env: dict[str, str]) -> int:
    refused = refusals(remote, updates)
    if refused:
        for line in refused.values():
            print(line, file=sys.stderr)
        for _, _, ref in updates:
            if ref not in refused:
                print(f"git-gate: not pushing {ref} either: a push through the gate is all or nothing", file=sys.stderr)
        return 1
    if not updates:
        return 0
    refs = " ".join(ref for _, _, ref in updates)
    print(f"git-gate: pushing {refs} to {remote.name} ({remote.url})", file=sys.stderr, flush=True)
    # Whatever the hook prints, receive-pack relays to the agent as `remote:` lines.
    proc = subprocess.run(upstream_push_args(remote, updates), env=env, capture_output=True, text=True)
    sys.stderr.write(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        hint = failure_hint(remote, proc.stderr)
        if hint:
            print(hint, file=sys.stderr)
        print(f"git-gate: {remote.url} did not accept the push (its answer is above)", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="git-gate pre-receive")
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--remote", required=True)
    parser.add_argument("--known-hosts", required=True, type=Path)
    args = parser.parse_args(argv)
    try:
        config = load_gate_config(args.config)
        remote = config.remote(args.remote)
        env = upstream_env(remote, secrets=load_secrets(config), known_hosts=args.known_hosts, base=os.environ)
    except BottleError as e:
        print(f"git-gate: {e}", file=sys.stderr)
        return 1
    return run_hook(remote, parse_updates(sys.stdin.read()), env)


if __name__ == "__main__":
    sys.exit(main())
