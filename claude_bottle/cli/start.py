"""`start <agent>`: launch a fresh bottle for an agent of the manifest."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..backend import BottleSpec
from ..manifest import load_manifest
from ._common import add_manifest_option, launch_bottle

HELP = "start an agent in a new bottle"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:  # pyright: ignore[reportPrivateUsage]
    p = sub.add_parser("start", help=HELP, description=HELP + "; arguments after `--` go to claude",
                       usage="%(prog)s AGENT [options] [-- CLAUDE_ARGS...]")
    p.add_argument("agent", help="agent name from the manifest (the built-in default has `claude`)")
    p.add_argument("--cwd", type=Path, help="working directory to give the agent (default: this one)")
    p.add_argument("--copy-cwd", action="store_true",
                   help="copy the working directory in instead of bind-mounting it")
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit; create nothing")
    p.add_argument("--format", choices=("text", "json"), default="text", help="plan format (json needs --dry-run)")
    p.add_argument("--remote-control", action="store_true", help="start claude with --remote-control")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask before starting")
    add_manifest_option(p)


def run(args: argparse.Namespace) -> int:
    return start(agent=args.agent, cwd=args.cwd, copy_cwd=args.copy_cwd, dry_run=args.dry_run,
                 fmt=args.format, remote_control=args.remote_control, yes=args.yes,
                 manifest=args.manifest, claude_args=args.claude_args)


def start(*, agent: str, cwd: Path | None, copy_cwd: bool, dry_run: bool, fmt: str,
          remote_control: bool, yes: bool, manifest: str | None, claude_args: tuple[str, ...]) -> int:
    spec = BottleSpec(
        manifest=load_manifest(manifest), agent_name=agent, cwd=(cwd or Path.cwd()).resolve(),
        copy_cwd=copy_cwd, claude_args=claude_args, remote_control=remote_control,
    )
    return launch_bottle(spec, yes=yes, dry_run=dry_run, fmt=fmt)
