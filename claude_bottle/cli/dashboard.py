"""`dashboard`: approve / modify / reject what agents propose."""

from __future__ import annotations

import argparse
import json

from ..errors import BottleError
from ._common import interactive

HELP = "approve / modify / reject what agents propose"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:  # pyright: ignore[reportPrivateUsage]
    p = sub.add_parser("dashboard", help=HELP, description=HELP)
    p.add_argument("--once", action="store_true", help="print pending proposals and exit (for scripts)")
    p.add_argument("--format", choices=("text", "json"), default="text", help="with --once")


def run(args: argparse.Namespace) -> int:
    return dashboard(once=args.once, fmt=args.format)


def dashboard(*, once: bool, fmt: str) -> int:
    if fmt == "json" and not once:
        raise BottleError("--format=json only goes with --once")
    if once:
        return print_pending(fmt)
    if not interactive():
        raise BottleError("the dashboard needs a terminal; use --once for scripts")
    from ..dashboard.screen import run_dashboard  # curses and the apply paths: only when asked for

    return run_dashboard()


def print_pending(fmt: str) -> int:
    from ..dashboard import decisions
    from ..dashboard.screen import item_line

    items = decisions.pending()
    if fmt == "json":
        rows: list[dict[str, object]] = []
        for item in items:
            if item.proposal is None:
                rows.append({"valid": False, "path": str(item.path), "error": item.error})
            else:
                rows.append({"valid": True, **item.proposal.to_json()})
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{len(items)} pending" if items else "no pending proposals")
    for item in items:
        print(f"  {item_line(item)}")
    return 0
