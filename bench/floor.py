"""The floor for a bottle launch: the same networks and containers as
`start claude -y -- --version`, made with plain docker commands, sidecars in parallel,
the agent run, everything torn down — and nothing else (no state, no provisioning,
no checks). `bench/start_vs_floor.py` times it side by side with the real launcher.

Usage: python3 bench/floor.py PLAN.json   (PLAN from `start --dry-run --format=json`)
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any


def docker(*args: str, input: bytes | None = None) -> str:
    return subprocess.run(("docker", *args), input=input, capture_output=True, check=True).stdout.decode()


def tar_one(path: str, data: bytes, mode: int = 0o644, owner: int = 0) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(path.lstrip("/"))
        info.size, info.mode, info.uid, info.gid = len(data), mode, owner, owner
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def main(plan: dict[str, Any], pipelock_image: str, queue: str) -> None:
    ident = plan["identity"] + "-floor"
    internal, egress = f"floor-{ident}-internal", f"floor-{ident}-egress"
    names = {role: f"floor-{ident}-{role}" for role in plan["containers"]}
    side, agent = plan["sidecar_image"], plan["image"]
    with ThreadPoolExecutor(6) as pool:
        nets = [pool.submit(docker, "network", "create", "--internal", "-o",
                            "com.docker.network.bridge.inhibit_ipv4=true", internal),
                pool.submit(docker, "network", "create", egress)]
        for n in nets:
            n.result()

        def egress_sidecar(role: str, image: str, cmd: list[str], files: bytes) -> None:
            docker("create", "--name", names[role], "--network", egress, "--init", image, *cmd)
            docker("cp", "-", f"{names[role]}:/", input=files)
            docker("network", "connect", "--alias", role, internal, names[role])
            docker("start", names[role])

        config = json.dumps({"version": 1, "mode": "strict", "api_allowlist": ["none.invalid"],
                             "forward_proxy": {"enabled": True, "max_tunnel_seconds": 86400, "idle_timeout_seconds": 3600},
                             "sentry": {"enabled": False}}).encode()
        routes = json.dumps({"routes": []}).encode()
        jobs = [
            pool.submit(egress_sidecar, "pipelock", pipelock_image,
                        ["run", "--config", "/config/pipelock.yaml", "--listen", "0.0.0.0:8888"],
                        tar_one("/config/pipelock.yaml", config)),
            pool.submit(egress_sidecar, "cred-proxy", side,
                        ["python3", "-m", "claude_bottle.cred_proxy", "--routes", "/etc/cred-proxy/routes.json",
                         "--listen", "0.0.0.0:8080"], tar_one("/etc/cred-proxy/routes.json", routes)),
            pool.submit(docker, "run", "-d", "--name", names["supervise"], "--network", internal, "--network-alias",
                        "supervise", "--init", "-v", f"{queue}:/queue", side, "python3", "-m", "claude_bottle.supervise",
                        "--queue", "/queue", "--identity", plan["identity"], "--listen", "0.0.0.0:8090"),
            pool.submit(docker, "run", "-d", "--name", names["agent"], "--network", internal, "--init",
                        "--runtime", plan["runtime"], agent, "sleep", "infinity"),
        ]
        for j in jobs:
            j.result()
    ip = docker("inspect", "--format", "{{(index .NetworkSettings.Networks \"" + egress + "\").IPAddress}}",
                names["pipelock"]).strip()
    while True:  # pipelock's health, as the launcher waits for it
        try:
            urllib.request.build_opener(urllib.request.ProxyHandler({})).open(f"http://{ip}:8888/health", timeout=1)
            break
        except OSError:
            time.sleep(0.02)
    subprocess.run(["docker", "exec", "-u", "1000:1000", names["agent"], "claude", "--version"], check=True,
                   capture_output=True)
    docker("rm", "-f", *names.values())
    docker("network", "rm", internal, egress)


if __name__ == "__main__":
    main(json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3])
