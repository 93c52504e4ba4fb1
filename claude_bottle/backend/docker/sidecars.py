"""Which sidecars a bottle gets, and what each is handed (image, command, files)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from ... import cred_proxy, git_gate, pipelock
from ...manifest import Bottle
from .plan import NAME_PREFIX, SidecarPlan

CRED_PROXY_PORT = 8080
SUPERVISE_PORT = 8090
NOBODY = (65534, 65534)
CRED_PROXY_ROUTES = "/etc/cred-proxy/routes.json"
CRED_PROXY_SECRETS = "/run/cred-proxy/secrets.json"


def container_name(identity: str, role: str | None = None) -> str:
    return f"{NAME_PREFIX}{identity}" + (f"-{role}" if role else "")


def pipelock_sidecar(identity: str, bottle: Bottle, environ: Mapping[str, str]) -> SidecarPlan:
    return SidecarPlan(
        role="pipelock", container=container_name(identity, "pipelock"),
        image=pipelock.pipelock_image(environ), entrypoint=None,
        command=pipelock.pipelock_command(), port=pipelock.PIPELOCK_PORT, egress=True,
        health_path="/health",  # pipelock answers 200 there once listening
        files={pipelock.PIPELOCK_CONFIG_PATH: (pipelock.render_pipelock_config(bottle.hosts()).encode(), 0o644)},
    )


def cred_proxy_sidecar(identity: str, bottle: Bottle, image: str, secrets: Mapping[str, str]) -> SidecarPlan:
    import json

    names = cred_proxy.secret_names(bottle.routes)
    secret_values = {n: secrets[n] for n in names}
    return SidecarPlan(
        role="cred-proxy", container=container_name(identity, "cred-proxy"), image=image,
        command=("python3", "-m", "claude_bottle.cred_proxy", "--routes", CRED_PROXY_ROUTES,
                 "--secrets", CRED_PROXY_SECRETS, "--listen", f"0.0.0.0:{CRED_PROXY_PORT}"),
        port=CRED_PROXY_PORT, egress=True, health_path="/_health",
        user=f"{NOBODY[0]}:{NOBODY[1]}", file_owner=NOBODY,
        files={
            CRED_PROXY_ROUTES: (cred_proxy.render_routes_file(bottle.routes).encode(), 0o644),
            CRED_PROXY_SECRETS: (json.dumps(secret_values).encode(), 0o400),
        },
    )


def git_gate_sidecar(identity: str, bottle: Bottle, image: str, secrets: Mapping[str, str]) -> SidecarPlan:
    return SidecarPlan(
        role="git-gate", container=container_name(identity, "git-gate"), image=image,
        command=git_gate.gate_command(), port=git_gate.GATE_PORT, egress=True,
        health_path=git_gate.GATE_HEALTH_PATH, user=git_gate.GATE_USER,
        file_owner=NOBODY, files=git_gate.gate_files(bottle.remotes, secrets),
    )


def supervise_sidecar(identity: str, image: str, queue: Path) -> SidecarPlan:
    # Runs as the host user so that the proposals it writes into the bind-mounted
    # queue belong to the person running the dashboard.
    return SidecarPlan(
        role="supervise", container=container_name(identity, "supervise"), image=image,
        command=("python3", "-m", "claude_bottle.supervise", "--queue", "/queue",
                 "--identity", identity, "--listen", f"0.0.0.0:{SUPERVISE_PORT}"),
        port=SUPERVISE_PORT, egress=False, ready_log="supervise: serving",
        user=f"{os.getuid()}:{os.getgid()}", mounts=((str(queue), "/queue"),),
    )
