"""Pure functions that build `docker` argument lists (unit-tested as tuples)."""

from __future__ import annotations

from pathlib import Path

from .plan import LABEL_IDENTITY, LABEL_ROLE, DockerBottlePlan, ImageBuild, SidecarPlan


def labels(identity: str, role: str) -> tuple[str, ...]:
    return ("--label", f"{LABEL_IDENTITY}={identity}", "--label", f"{LABEL_ROLE}={role}")


def build_args(image: ImageBuild, context: Path) -> tuple[str, ...]:
    dockerfile = image.dockerfile if image.context is not None else context / "Dockerfile"
    return ("build", "-q", "-t", image.tag, "-f", str(dockerfile), str(context))


def network_create_args(plan: DockerBottlePlan, role: str) -> tuple[str, ...]:
    if role == "internal":
        # inhibit_ipv4 keeps the bridge from holding a host address: without it the
        # agent could reach host services listening on 0.0.0.0 through the gateway.
        return ("network", "create", "--internal", "-o", "com.docker.network.bridge.inhibit_ipv4=true",
                *labels(plan.identity, "network-internal"), plan.internal_network)
    return ("network", "create", *labels(plan.identity, "network-egress"), plan.egress_network)


def sidecar_create_args(plan: DockerBottlePlan, sc: SidecarPlan) -> tuple[str, ...]:
    args: list[str] = ["create", "--name", sc.container, *labels(plan.identity, sc.role),
                       "--network", plan.egress_network if sc.egress else plan.internal_network,
                       "--security-opt", "no-new-privileges", "--restart", "no",
                       "--init"]  # reaps the children git and ssh leave behind
    if not sc.egress:
        args += ["--network-alias", sc.alias]
    if sc.user:
        args += ["--user", sc.user]
    if sc.entrypoint:
        args += ["--entrypoint", sc.entrypoint]
    for name, value in sc.env:
        args += ["-e", f"{name}={value}"]
    for host, path in sc.mounts:
        args += ["-v", f"{host}:{path}"]
    return (*args, sc.image, *sc.command)


def network_connect_args(plan: DockerBottlePlan, sc: SidecarPlan) -> tuple[str, ...]:
    """Sidecars with egress are created on the egress network, then joined to the internal one."""
    return ("network", "connect", "--alias", sc.alias, plan.internal_network, sc.container)


def agent_run_args(plan: DockerBottlePlan) -> tuple[str, ...]:
    args: list[str] = ["run", "-d", "--name", plan.agent_container, *labels(plan.identity, "agent"),
                       "--network", plan.internal_network, "--runtime", plan.runtime,
                       "--hostname", plan.identity, "--init",
                       "--security-opt", "no-new-privileges", "--workdir", plan.cwd]
    if not plan.spec.copy_cwd:
        args += ["-v", f"{plan.cwd}:{plan.cwd}"]
    for name, value in plan.agent_env:
        args += ["-e", f"{name}={value}"]
    # The container idles; claude runs through `docker exec` so that provisioning
    # can happen first and the same container could host a resumed session.
    return (*args, plan.agent_image.tag, "sleep", "infinity")


def agent_exec_args(plan: DockerBottlePlan, *, tty: bool) -> tuple[str, ...]:
    uid, gid = plan.user
    flags = ["-it"] if tty else ["-i"]
    return ("exec", *flags, "-u", f"{uid}:{gid}", "-w", plan.cwd, "-e", "HOME=/home/claude",
            plan.agent_container, *plan.claude_argv)


def provision_args(plan: DockerBottlePlan) -> tuple[str, ...]:
    """Adds the agent's user to passwd/group, then unpacks the files tar from stdin."""
    uid, gid = plan.user
    script = (
        "set -e; "
        f"grep -q '^[^:]*:[^:]*:{uid}:' /etc/passwd || "
        f"echo 'claude:x:{uid}:{gid}:claude:/home/claude:/bin/sh' >> /etc/passwd; "
        f"grep -q '^[^:]*:[^:]*:{gid}:' /etc/group || echo 'claude:x:{gid}:' >> /etc/group; "
        "tar -x -p -f - -C /"
    )
    return ("exec", "-i", "-u", "0", plan.agent_container, "sh", "-c", script)


def copy_in_args(container: str) -> tuple[str, ...]:
    """`docker cp` of a tar stream on stdin: ownership and modes come from the tar headers.

    Not `-a`: with it Docker 20.10 resolves the container's `--user` through getent,
    which fails for a numeric uid that has no passwd entry."""
    return ("cp", "-", f"{container}:/")


def remove_containers_args(names: tuple[str, ...]) -> tuple[str, ...]:
    return ("rm", "-f", "-v", *names)


def remove_networks_args(names: tuple[str, ...]) -> tuple[str, ...]:
    return ("network", "rm", *names)
