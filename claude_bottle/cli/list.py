"""`list`: running bottles and resumable (stopped) identities."""

from __future__ import annotations

import argparse

from ..backend import get_bottle_backend
from ..bottle_state import list_states, state_dir

HELP = "list running bottles and resumable identities"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:  # pyright: ignore[reportPrivateUsage]
    sub.add_parser("list", help=HELP, description=HELP)


def run(args: argparse.Namespace) -> int:
    return list_bottles()


def list_bottles() -> int:
    active = get_bottle_backend().list_active()
    running = {a.identity for a in active}
    print("running:" if active else "running: none")
    for a in active:
        print(f"  {a.identity:<24} {a.agent_name:<16} {a.status}  (since {a.created})")
    stopped = [m for m in list_states() if m.identity not in running]
    print("resumable:" if stopped else "resumable: none")
    for m in stopped:
        pending = "  Dockerfile change pending" if (state_dir(m.identity) / "Dockerfile").is_file() else ""
        print(f"  {m.identity:<24} {m.agent_name:<16} {m.cwd}  started {m.started_at}{pending}")
    return 0
