"""Helpers shared by the subcommands: the manifest option, y/N, and the launch core."""

from __future__ import annotations

import argparse
import json
import sys

from ..backend import BottleSpec, get_bottle_backend
from ..errors import BottleError


def add_manifest_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", metavar="PATH",
                   help="manifest file (default: $CLAUDE_BOTTLE_MANIFEST, ~/claude-bottle.json, built-in)")


def interactive() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def confirm(question: str, *, yes: bool) -> bool:
    """y/N on a terminal; `-y` or no terminal at all means yes (scripts and CI)."""
    if yes or not interactive():
        return True
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def launch_bottle(spec: BottleSpec, *, yes: bool, dry_run: bool = False, fmt: str = "text") -> int:
    """The launch core shared by `start` and `resume`: plan, show, confirm, run, tear down."""
    if fmt == "json" and not dry_run:
        raise BottleError("--format=json only goes with --dry-run (a real launch prints a preflight and asks y/N)")
    backend = get_bottle_backend()
    plan = backend.prepare(spec)
    if dry_run:
        if fmt == "json":
            print(json.dumps(plan.to_dict(), indent=2))
        else:
            plan.print(remote_control=spec.remote_control)
        return 0
    plan.print(remote_control=spec.remote_control)
    if not confirm("start this bottle?", yes=yes):
        print("not started")
        return 1
    with backend.launch(plan) as bottle:
        code = bottle.attach()
    print(f"claude-bottle: session ended (exit {code}); to continue it: ./cli.py resume {plan.identity}")
    return code
