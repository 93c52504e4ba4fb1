"""Resolve a BottleSpec into a DockerBottlePlan: every name, image, env var, file and
argument of one launch. Pure apart from reading the manifest's files; runs no docker."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from ... import cred_proxy, git_gate
from ...bottle_state import bottle_identity, new_session_id, queue_dir
from ...errors import BottleError
from ...manifest import check_files, resolve_secrets
from .. import BottleSpec
from . import images, provision, sidecars
from .plan import DockerBottlePlan, SidecarPlan

SUPERVISE_TOOLS = ("cred-proxy-block", "pipelock-block", "capability-block", "proposal-status")


def build_plan(spec: BottleSpec, *, runtime: str, environ: Mapping[str, str]) -> DockerBottlePlan:
    manifest = spec.manifest
    agent = manifest.agent(spec.agent_name)
    bottle = manifest.bottle_for(agent)
    check_files(agent, bottle, source=manifest.source)
    secrets = resolve_secrets(bottle, environ, source=manifest.source)
    git_gate.check_remote_files(bottle.remotes)
    if not spec.cwd.is_dir():
        raise BottleError(f"working directory {spec.cwd} does not exist or is not a directory")

    identity = spec.identity or bottle_identity(agent.name)
    session_id = spec.session_id or new_session_id()
    user = provision.cwd_owner(spec.cwd)
    # A bottle without its own ca_bundle may take the host-wide one (corporate proxies).
    ca_env = environ.get("CLAUDE_BOTTLE_CA_BUNDLE")
    ca_bundle = bottle.ca_bundle or (Path(ca_env).expanduser() if ca_env else None)
    if ca_bundle is not None and not ca_bundle.is_file():
        raise BottleError(f"CLAUDE_BOTTLE_CA_BUNDLE={ca_env}: no such file")
    if spec.dockerfile_override is not None:
        agent_image = images.user_image(spec.dockerfile_override, name=identity)
    elif bottle.dockerfile is not None:
        agent_image = images.user_image(bottle.dockerfile, name=bottle.name)
    else:
        agent_image = images.default_agent_image(ca_bundle)
    sidecar_image = images.sidecar_image(ca_bundle)

    side: list[SidecarPlan] = [sidecars.pipelock_sidecar(identity, bottle, environ)]
    if bottle.routes:
        side.append(sidecars.cred_proxy_sidecar(identity, bottle, sidecar_image.tag, secrets))
    if bottle.remotes:
        side.append(sidecars.git_gate_sidecar(identity, bottle, sidecar_image.tag, secrets))
    supervise = sidecars.supervise_sidecar(identity, sidecar_image.tag, queue_dir(identity))
    side.append(supervise)

    pipelock_url = f"http://pipelock:{side[0].port}"
    env: dict[str, str] = {
        "HTTP_PROXY": pipelock_url, "HTTPS_PROXY": pipelock_url,
        "http_proxy": pipelock_url, "https_proxy": pipelock_url,
        "NO_PROXY": ",".join(["localhost", "127.0.0.1", *(s.alias for s in side[1:])]),
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }
    env["no_proxy"] = env["NO_PROXY"]
    env.update(cred_proxy.agent_env_for_routes(bottle.routes, f"http://cred-proxy:{sidecars.CRED_PROXY_PORT}"))
    env.update(dict(bottle.env))

    gitconfig = None
    if bottle.remotes:
        gitconfig = git_gate.agent_git_config(bottle.remotes, f"http://git-gate:{git_gate.GATE_PORT}")
    agent_files = provision.agent_home_files(
        mcp_url=f"http://supervise:{supervise.port}/mcp", gitconfig=gitconfig)

    argv: list[str] = ["claude"]
    if agent.skip_permissions:
        argv.append("--dangerously-skip-permissions")
    else:
        argv += ["--allowedTools", ",".join(f"mcp__supervise__{t}" for t in SUPERVISE_TOOLS)]
    argv += ["--resume", session_id] if spec.session_id else ["--session-id", session_id]
    argv += ["--mcp-config", str(provision.MCP_CONFIG_PATH)]
    if agent.prompt is not None:
        argv += ["--append-system-prompt-file", str(provision.PROMPT_PATH)]
    if agent.model:
        argv += ["--model", agent.model]
    if spec.remote_control:
        argv.append("--remote-control")
    argv += spec.claude_args

    notes: list[str] = []
    if os.stat(spec.cwd).st_uid == 0:
        notes.append(f"{spec.cwd} is owned by root; the agent runs as uid 1000 (Claude Code refuses "
                     "to skip permissions as root) and may not be able to write there")
    return DockerBottlePlan(
        spec=spec, identity=identity, session_id=session_id, agent=agent, bottle=bottle,
        runtime=runtime, agent_image=agent_image, sidecar_image=sidecar_image,
        internal_network=sidecars.container_name(identity, "internal"),
        egress_network=sidecars.container_name(identity, "egress"),
        agent_container=sidecars.container_name(identity), sidecars=tuple(side),
        agent_env=tuple(sorted(env.items())), user=user, agent_files=agent_files,
        claude_argv=tuple(argv), notes=tuple(notes),
    )
