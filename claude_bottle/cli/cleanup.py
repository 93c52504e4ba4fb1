"""`cleanup`: remove every leftover claude-bottle container and network; `--state` also
forgets stopped bottles' state (metadata, transcript, pending Dockerfile, queue)."""

from __future__ import annotations

import argparse
import shutil

from ..backend import get_bottle_backend
from ..bottle_state import list_states, queue_dir, state_dir
from ._common import confirm

HELP = "remove every claude-bottle container and network (running bottles too)"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:  # pyright: ignore[reportPrivateUsage]
    p = sub.add_parser("cleanup", help=HELP,
                       description=HELP + "; state under $CLAUDE_BOTTLE_HOME is kept unless --state")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask")
    p.add_argument("--state", action="store_true",
                   help="also delete the state of stopped bottles (they can no longer be resumed); asks separately")


def run(args: argparse.Namespace) -> int:
    return cleanup(yes=args.yes, state=args.state)


def cleanup(*, yes: bool, state: bool) -> int:
    backend = get_bottle_backend()
    plan = backend.prepare_cleanup()
    plan.print()
    if not plan.empty:
        if not confirm("remove these?", yes=yes):
            print("nothing removed")
            return 1
        backend.cleanup(plan)
        print("removed")
    if state:
        return forget_state(yes=yes)
    return 0


def forget_state(*, yes: bool) -> int:
    running = {a.identity for a in get_bottle_backend().list_active()}
    stopped = [m.identity for m in list_states() if m.identity not in running]
    if not stopped:
        print("no stopped bottle has state to delete")
        return 0
    for identity in stopped:
        print(f"  state      {state_dir(identity)}")
    if not confirm(f"delete the state of {len(stopped)} stopped bottle(s)? they cannot be resumed afterwards", yes=yes):
        print("state kept")
        return 1
    for identity in stopped:
        shutil.rmtree(state_dir(identity), ignore_errors=True)
        shutil.rmtree(queue_dir(identity), ignore_errors=True)
    print(f"deleted the state of {len(stopped)} bottle(s)")
    return 0
