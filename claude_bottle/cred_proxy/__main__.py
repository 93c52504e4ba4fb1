"""The cred-proxy sidecar: `python3 -m claude_bottle.cred_proxy --routes FILE [--secrets FILE] --listen H:P`."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import cast

from ..errors import BottleError
from ._log import flush_log, log
from .config import ProxyConfig, load_config
from .server import CredProxyServer, warn_missing_secrets


def _parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise BottleError(f"--listen {listen!r}: expected HOST:PORT, e.g. 0.0.0.0:8080")
    return host, int(port)


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m claude_bottle.cred_proxy",
                                     description="Inject credentials into requests to declared upstreams.")
    parser.add_argument("--routes", required=True, type=Path, help='routes.json: {"routes": [...]}')
    parser.add_argument("--secrets", type=Path, help='JSON {"NAME": "value"}; overrides the environment')
    parser.add_argument("--listen", default="0.0.0.0:8080", help="HOST:PORT (default 0.0.0.0:8080)")
    args = parser.parse_args(argv)
    routes_path = cast(Path, args.routes)
    secrets_path = cast("Path | None", args.secrets)
    listen = cast(str, args.listen)

    def load() -> ProxyConfig:
        return load_config(routes_path, secrets_path, os.environ)

    try:
        config = load()
        server = CredProxyServer(_parse_listen(listen), config, reload_config=load)
    except BottleError as e:
        log(str(e))
        return 1
    except OSError as e:
        log(f"cannot listen on {listen}: {e.strerror or e}")
        return 1
    signal.signal(signal.SIGHUP, lambda signum, frame: server.reload())
    # As PID 1 in a container, a signal without a handler is ignored: `docker stop` would hang.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    host, port = server.server_address[:2]
    log(f"listening on {host!s}:{port} with {len(config.routes)} routes ({', '.join(config.routes) or 'none'})")
    warn_missing_secrets(config)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        flush_log()
    return 0


if __name__ == "__main__":
    sys.exit(main())
