"""`cleanup`: remove every leftover claude-bottle container and network."""

from __future__ import annotations

import argparse

from ..backend import get_bottle_backend
from ._common import confirm

HELP = "remove every claude-bottle container and network (running bottles too)"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:  # pyright: ignore[reportPrivateUsage]
    p = sub.add_parser("cleanup", help=HELP, description=HELP + "; state under $CLAUDE_BOTTLE_HOME is kept")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask")


def run(args: argparse.Namespace) -> int:
    return cleanup(yes=args.yes)


def cleanup(*, yes: bool) -> int:
    backend = get_bottle_backend()
    plan = backend.prepare_cleanup()
    plan.print()
    if plan.empty:
        return 0
    if not confirm("remove these?", yes=yes):
        print("nothing removed")
        return 1
    backend.cleanup(plan)
    print("removed")
    return 0
