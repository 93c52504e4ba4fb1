"""The Docker backend: the only place that runs `docker`."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass

from ...errors import BottleError


@dataclass(frozen=True)
class DockerResult:
    returncode: int
    stdout: str
    stderr: str


def docker(
    *args: str,
    input: bytes | None = None,
    check: bool = True,
    timeout: float | None = None,
) -> DockerResult:
    """Run `docker ARGS...` and capture its output.

    With check (the default) a non-zero exit raises BottleError naming the command
    and showing stderr; a missing binary or an unreachable daemon is one line.
    """
    cmd = ("docker", *args)
    try:
        proc = subprocess.run(cmd, input=input, capture_output=True, timeout=timeout)
    except FileNotFoundError:
        raise BottleError("docker is not installed: no `docker` command on PATH") from None
    except subprocess.TimeoutExpired:
        raise BottleError(f"`docker {' '.join(args[:2])}` did not finish within {timeout:g} s") from None
    stdout = proc.stdout.decode(errors="replace")
    stderr = proc.stderr.decode(errors="replace")
    if check and proc.returncode != 0:
        raise BottleError(_failure_message(args, proc.returncode, stderr))
    return DockerResult(proc.returncode, stdout, stderr)


def _failure_message(args: tuple[str, ...], code: int, stderr: str) -> str:
    detail = " ".join(stderr.split()) or "(no output)"
    if "Cannot connect to the Docker daemon" in stderr or "Is the docker daemon running" in stderr:
        return "the Docker daemon is not reachable: start dockerd (or check DOCKER_HOST) and try again"
    shown = " ".join(args[:3]) + (" …" if len(args) > 3 else "")
    return f"`docker {shown}` failed (exit {code}): {detail}"


def docker_json_lines(*args: str) -> list[dict[str, object]]:
    """Run a `docker ... --format '{{json .}}'` listing and parse one object a line."""
    out = docker(*args, "--format", "{{json .}}").stdout
    rows: list[dict[str, object]] = []
    for line in out.splitlines():
        if line.strip():
            rows.append(json.loads(line))
    return rows
