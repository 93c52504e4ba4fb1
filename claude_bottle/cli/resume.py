"""`resume <identity>`: rebuild a stopped bottle and continue its conversation."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..backend import BottleSpec, get_bottle_backend
from ..backend.docker.transcript import transcript_dir
from ..bottle_state import check_identity, read_metadata, state_dir
from ..errors import BottleError
from ..manifest import load_manifest
from ._common import launch_bottle

HELP = "resume a stopped bottle by identity, continuing its session"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:  # pyright: ignore[reportPrivateUsage]
    p = sub.add_parser("resume", help=HELP, description=HELP)
    p.add_argument("identity", help="as shown by `list`")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask before starting")


def run(args: argparse.Namespace) -> int:
    return resume(identity=args.identity, yes=args.yes, claude_args=args.claude_args)


def resume(*, identity: str, yes: bool, claude_args: tuple[str, ...]) -> int:
    meta = read_metadata(check_identity(identity))
    if any(a.identity == identity for a in get_bottle_backend().list_active()):
        raise BottleError(f"bottle {identity} is still running; stop its session first (or `cleanup`)")
    cwd = Path(meta.cwd)
    if not cwd.is_dir():
        raise BottleError(f"{identity}: its working directory {cwd} no longer exists")
    dockerfile = state_dir(identity) / "Dockerfile"
    transcript = transcript_dir(identity)
    spec = BottleSpec(
        manifest=load_manifest(meta.manifest), agent_name=meta.agent_name, cwd=cwd,
        copy_cwd=meta.copy_cwd, claude_args=claude_args, identity=identity, session_id=meta.session_id,
        dockerfile_override=dockerfile if dockerfile.is_file() else None,
        transcript_dir=transcript if transcript.is_dir() else None,
    )
    return launch_bottle(spec, yes=yes)
