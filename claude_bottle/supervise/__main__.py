"""python3 -m claude_bottle.supervise --queue /queue --identity <identity> [--listen 0.0.0.0:8090]"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import cast

from ..bottle_state import check_identity
from ..errors import BottleError
from .mcp import SuperviseConfig
from .server import make_server


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python3 -m claude_bottle.supervise",
                                description="MCP server through which a bottled agent proposes more access.")
    p.add_argument("--queue", required=True, type=Path, help="this bottle's queue folder")
    p.add_argument("--identity", required=True, help="the bottle identity, <agent>-<5 chars>")
    p.add_argument("--listen", default="0.0.0.0:8090", help="HOST:PORT (default %(default)s)")
    p.add_argument("--max-wait-seconds", type=_positive, default=1800.0,
                   help="how long one tool call waits for a decision (default %(default)s)")
    p.add_argument("--keepalive-seconds", type=_positive, default=15.0,
                   help="interval of keepalive comments while waiting (default %(default)s)")
    return p


def _stop(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)  # as PID 1 in a container, SIGTERM would otherwise be ignored


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        queue_dir: Path = args.queue
        if not queue_dir.is_dir():
            raise BottleError(f"--queue {queue_dir}: not a folder")
        config = SuperviseConfig(queue_dir=queue_dir, identity=check_identity(args.identity),
                                 max_wait_seconds=args.max_wait_seconds, keepalive_seconds=args.keepalive_seconds)
        server = make_server(config, args.listen)
    except BottleError as e:
        print(f"supervise: {e}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _stop)
    host, port = cast("tuple[str, int]", server.server_address[:2])
    config.log(f"serving {config.identity} on {host}:{port} (queue {queue_dir})")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        return 130
    finally:
        server.stopping.set()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
