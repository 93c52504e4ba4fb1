"""The resolved Docker plan: every name, image, mount and env var of one launch.

A plan is pure data. It may hold secret values (in sidecar files, `repr=False`),
but `print` and `to_dict` never show them: only names.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ...manifest import Agent, Bottle
from .. import BottlePlan, BottleSpec

LABEL_IDENTITY = "claude-bottle.identity"
LABEL_ROLE = "claude-bottle.role"
NAME_PREFIX = "claude-bottle-"


@dataclass(frozen=True)
class ImageBuild:
    """One `docker build`: a staged context we write, or the user's own Dockerfile."""

    tag: str
    dockerfile: Path  # for a staged build, the template copied into the context
    context: Path | None = None  # None: stage a context (Dockerfile + ca-bundle.crt [+ package])
    ca_bundle: Path | None = None
    include_package: bool = False


@dataclass(frozen=True)
class SidecarPlan:
    role: str  # pipelock | cred-proxy | git-gate | supervise
    container: str
    image: str
    command: tuple[str, ...]
    port: int
    egress: bool  # also on the egress network (it talks to the outside)
    health_path: str | None = None  # polled over the egress network from the host
    ready_log: str | None = None  # else: a line it prints once listening
    entrypoint: str | None = None
    user: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    mounts: tuple[tuple[str, str], ...] = ()  # (host path, container path)
    files: Mapping[str, tuple[bytes, int]] = field(default_factory=dict[str, tuple[bytes, int]], repr=False)
    file_owner: tuple[int, int] = (0, 0)

    @property
    def alias(self) -> str:
        return self.role

    @property
    def address(self) -> str:
        return f"{self.role}:{self.port}"


@dataclass(frozen=True)
class DockerBottlePlan(BottlePlan):
    spec: BottleSpec
    identity: str
    session_id: str
    agent: Agent
    bottle: Bottle
    runtime: str
    agent_image: ImageBuild
    sidecar_image: ImageBuild
    internal_network: str
    egress_network: str
    agent_container: str
    sidecars: tuple[SidecarPlan, ...]
    agent_env: tuple[tuple[str, str], ...]
    user: tuple[int, int]
    agent_files: Mapping[str, tuple[bytes, int]] = field(default_factory=dict[str, tuple[bytes, int]], repr=False)
    claude_argv: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def cwd(self) -> str:
        return str(self.spec.cwd)

    @property
    def resuming(self) -> bool:
        return self.spec.identity is not None

    def sidecar(self, role: str) -> SidecarPlan | None:
        return next((s for s in self.sidecars if s.role == role), None)

    @property
    def containers(self) -> tuple[str, ...]:
        return (self.agent_container, *(s.container for s in self.sidecars))

    @property
    def networks(self) -> tuple[str, str]:
        return (self.internal_network, self.egress_network)

    def mounts(self) -> list[str]:
        shown = [f"{self.cwd} -> {self.cwd} ({'copied in' if self.spec.copy_cwd else 'bind mount'})"]
        if self.agent.prompt:
            shown.append(f"{self.agent.prompt} -> prompt (--append-system-prompt-file)")
        shown += [f"{s} -> ~/.claude/skills/{s.name}" for s in self.agent.skills]
        for sc in self.sidecars:
            shown += [f"{host} -> {sc.role}:{path}" for host, path in sc.mounts]
        return shown

    def to_dict(self) -> dict[str, object]:
        gate = self.sidecar("git-gate")
        return {
            "identity": self.identity,
            "session_id": self.session_id,
            "resume": self.resuming,
            "agent": self.agent.name,
            "bottle": self.bottle.name,
            "manifest": self.spec.manifest.source,
            "image": self.agent_image.tag,
            "sidecar_image": self.sidecar_image.tag,
            "runtime": self.runtime,
            "cwd": self.cwd,
            "copy_cwd": self.spec.copy_cwd,
            "user": {"uid": self.user[0], "gid": self.user[1]},
            "hosts": list(self.bottle.hosts()),
            "routes": [
                {"name": r.name, "upstream": r.upstream, "header": r.header, "role": r.role}
                for r in self.bottle.routes
            ],
            "env_names": sorted(name for name, _ in self.agent_env),
            "secret_names": list(self.bottle.secret_names()),
            "git_remotes": [
                {"name": g.name, "url": g.url, "push": list(g.push), "force": g.force}
                for g in self.bottle.remotes
            ],
            "git_gate": {"container": gate.container, "address": gate.address} if gate else None,
            "networks": {"internal": self.internal_network, "egress": self.egress_network},
            "containers": {"agent": self.agent_container, **{s.role: s.container for s in self.sidecars}},
            "mounts": self.mounts(),
            "claude_args": list(self.claude_argv),
        }

    def print(self, *, remote_control: bool) -> None:
        out = sys.stdout
        rows: list[tuple[str, str]] = [
            ("agent", f"{self.agent.name} (bottle {self.bottle.name}, manifest {self.spec.manifest.source})"),
            ("identity", f"{self.identity}{'  (resuming)' if self.resuming else ''}"),
            ("session", self.session_id),
            ("image", f"{self.agent_image.tag}  (from {self.agent_image.dockerfile})"),
            ("runtime", self.runtime + ("  (gVisor)" if self.runtime == "runsc" else "  (runsc not registered with the daemon)")),
            ("user", f"uid {self.user[0]} gid {self.user[1]}"),
            ("cwd", f"{self.cwd}  ({'copied in' if self.spec.copy_cwd else 'bind mount, same path'})"),
            ("allowed hosts", ", ".join(self.bottle.hosts()) or "none (only the sidecars are reachable)"),
            ("routes", ", ".join(f"{r.name} -> {r.upstream} [{r.header}]" for r in self.bottle.routes) or "none"),
            ("secrets", ", ".join(f"${{{n}}}" for n in self.bottle.secret_names()) or "none"),
            ("git remotes", ", ".join(f"{g.name} ({g.url}; push {' '.join(g.push) or 'nothing'})" for g in self.bottle.remotes) or "none"),
            ("env names", ", ".join(sorted(n for n, _ in self.agent_env)) or "none"),
            ("sidecars", ", ".join(s.container for s in self.sidecars)),
            ("networks", f"{self.internal_network} (internal), {self.egress_network} (egress)"),
            ("remote control", "on" if remote_control else "off"),
        ]
        width = max(len(k) for k, _ in rows)
        print("claude-bottle preflight", file=out)
        for k, v in rows:
            print(f"  {k:<{width}}  {v}", file=out)
        for m in self.mounts():
            print(f"  {'mount':<{width}}  {m}", file=out)
        for note in self.notes:
            print(f"  note: {note}", file=out)
