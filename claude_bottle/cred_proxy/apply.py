"""Change a running bottle's routes live: validate, copy in, SIGHUP (host side)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from ..errors import BottleError
from . import parse_routes_file, render_routes_file, secret_names

ROUTES_PATH = "/etc/cred-proxy/routes.json"
SECRETS_PATH = "/run/cred-proxy/secrets.json"
OWNER = (65534, 65534)


def cred_proxy_container(identity: str) -> str:
    return f"claude-bottle-{identity}-cred-proxy"


def read_live_routes(identity: str) -> str:
    from ..backend.docker.backend import container_read_file

    return container_read_file(cred_proxy_container(identity), ROUTES_PATH).decode()


def apply_routes_change(identity: str, new_text: str, *, environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """Make `new_text` the live routes of bottle `identity`; returns (before, after).

    Secrets the new routes reference come from this process's environment, else from
    the values the sidecar already holds. Nothing changes unless the file is valid,
    every secret is found, and the sidecar is running; if the reload signal fails,
    the old files are put back.
    """
    from ..backend.docker.backend import container_read_file, container_running, replace_and_reload

    env = os.environ if environ is None else environ
    container = cred_proxy_container(identity)
    routes = parse_routes_file(new_text, where="proposed routes")
    if not container_running(container):
        raise BottleError(f"bottle {identity} has no running cred-proxy ({container})")
    before = container_read_file(container, ROUTES_PATH).decode()
    old_secrets_raw = container_read_file(container, SECRETS_PATH)
    try:
        old_secrets: dict[str, str] = json.loads(old_secrets_raw)
    except json.JSONDecodeError:
        old_secrets = {}
    secrets: dict[str, str] = {}
    for name in secret_names(routes):
        value = env.get(name) or old_secrets.get(name)
        if not value:
            raise BottleError(f"the new routes need ${{{name}}}: set it in the dashboard's environment and retry")
        secrets[name] = value
    after = render_routes_file(routes)
    replace_and_reload(container,
                       {ROUTES_PATH: (after.encode(), 0o644), SECRETS_PATH: (json.dumps(secrets).encode(), 0o400)},
                       {ROUTES_PATH: (before.encode(), 0o644), SECRETS_PATH: (old_secrets_raw, 0o400)}, owner=OWNER)
    return before, after
