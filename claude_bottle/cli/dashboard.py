"""`dashboard`: approve, modify or reject what agents propose."""

from __future__ import annotations

import argparse

from ..errors import BottleError

HELP = "approve / modify / reject what agents propose"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:  # pyright: ignore[reportPrivateUsage]
    p = sub.add_parser("dashboard", help=HELP, description=HELP)
    p.add_argument("--once", action="store_true", help="print pending proposals and exit")
    p.add_argument("--format", choices=("text", "json"), default="text")


def run(args: argparse.Namespace) -> int:
    raise BottleError("the dashboard is not built yet")
