"""Run the git gate: `python3 -m claude_bottle.git_gate --config C --listen HOST:PORT --state DIR`."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from ..errors import BottleError
from .launch import CONFIG_PATH, GATE_PORT, STATE_DIR
from .clones import Gate
from .server import GateServer
from .upstream import load_gate_config, load_secrets


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="git-gate", description="serve declared git remotes over smart HTTP")
    parser.add_argument("--config", type=Path, default=Path(CONFIG_PATH))
    parser.add_argument("--listen", default=f"0.0.0.0:{GATE_PORT}", help="HOST:PORT")
    parser.add_argument("--state", type=Path, default=Path(STATE_DIR), help="where the gate keeps its clones")
    args = parser.parse_args(argv)
    host, _, port = str(args.listen).rpartition(":")
    try:
        config = load_gate_config(args.config)
        gate = Gate(config, args.state, load_secrets(config))
        # ssh and git want a writable home; the gate's user may have none.
        os.environ["HOME"] = str(args.state)
        args.state.mkdir(parents=True, exist_ok=True)
        gate.prepare(args.config.resolve())
        server = GateServer((host or "0.0.0.0", int(port)), gate)
    except (BottleError, OSError, ValueError, RuntimeError) as e:
        print(f"git-gate: {e}", file=sys.stderr)
        return 1

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    names = ", ".join(f"{r.name} ({r.url})" for r in config.remotes) or "no remotes"
    print(f"git-gate: serving {names} on {args.listen}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
