"""Command-line entry point: an explicit registry of one module per subcommand."""

from __future__ import annotations

import argparse
import signal
import sys
import traceback
from collections.abc import Sequence
from types import FrameType
from typing import Protocol

from ..errors import BottleError
from . import cleanup, dashboard, info, resume, start
from . import list as list_cmd


class Command(Protocol):
    def add_parser(self, sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None: ...  # pyright: ignore[reportPrivateUsage]

    def run(self, args: argparse.Namespace) -> int: ...


COMMANDS: dict[str, Command] = {
    "start": start,
    "resume": resume,
    "list": list_cmd,
    "info": info,
    "cleanup": cleanup,
    "dashboard": dashboard,
}


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so every `with launch(...)` tears down."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Terminated


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="claude-bottle",
        description="Run the Claude Code agent unattended in a Docker bottle whose every way out "
        "is a sidecar you control.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for cmd in COMMANDS.values():
        cmd.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # (`list` here is the cli.list submodule, not the builtin.)
    args_in = [*(sys.argv[1:] if argv is None else argv)]
    # Everything after `--` goes to claude untouched (`start claude -y -- -p "hi"`).
    claude_args: list[str] = []
    if "--" in args_in:
        cut = args_in.index("--")
        args_in, claude_args = args_in[:cut], args_in[cut + 1:]
    parser = build_parser()
    try:
        signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:
        pass  # not the main thread (tests calling main() from a worker)
    try:
        args = parser.parse_args(args_in)
        args.claude_args = tuple(claude_args)
        return COMMANDS[args.command].run(args)
    except BottleError as e:
        print(f"claude-bottle: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("claude-bottle: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("claude-bottle: terminated", file=sys.stderr)
        return 143
    except BrokenPipeError:
        return 1
    except Exception:
        traceback.print_exc()
        print("claude-bottle: internal error (a bug): please report the traceback above", file=sys.stderr)
        return 3
