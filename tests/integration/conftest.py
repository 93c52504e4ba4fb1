"""Fixtures for tests against the real Docker daemon.

Every bottle a test starts runs in a private $CLAUDE_BOTTLE_HOME, with pipelock's
image replaced by the test double (no registry here) and the host's CA bundle for
builds behind the TLS-intercepting proxy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.doubles.images import ensure_fake_anthropic_image, ensure_pipelock_double_image

ROOT = Path(__file__).resolve().parents[2]
CLI = ROOT / "cli.py"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
AGENT_UID = 1000


def docker(*args: str, check: bool = True, input: bytes | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(("docker", *args), capture_output=True, input=input.decode() if input else None, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed: {proc.stderr}")
    return proc


def labelled(identity: str) -> tuple[list[str], list[str]]:
    """Names of containers (any state) and networks that carry this bottle's identity label."""
    label = f"label=claude-bottle.identity={identity}"
    containers = docker("ps", "-a", "--filter", label, "--format", "{{.Names}}").stdout.split()
    networks = docker("network", "ls", "--filter", label, "--format", "{{.Name}}").stdout.split()
    return containers, networks


@dataclass
class Env:
    home: Path
    workdir: Path
    manifest: Path
    vars: dict[str, str]

    def write_manifest(self, obj: dict[str, object]) -> Path:
        self.manifest.write_text(json.dumps(obj, indent=2))
        return self.manifest

    def cli(self, *args: str, timeout: float = 600, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(CLI), *args], capture_output=True, text=True,
                              env=self.vars, cwd=cwd or self.workdir, timeout=timeout, stdin=subprocess.DEVNULL)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, str(CLI), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=self.vars, cwd=self.workdir, stdin=subprocess.DEVNULL)


def basic_manifest(*, allow: list[str] | None = None, routes: list[dict[str, object]] | None = None,
                   agent: dict[str, object] | None = None, bottle: dict[str, object] | None = None) -> dict[str, object]:
    b: dict[str, object] = {"egress": {"allow": allow or []}, "ca_bundle": str(HOST_CA)}
    if routes:
        b["cred_proxy"] = {"routes": routes}
    b.update(bottle or {})
    return {"bottles": {"dev": b}, "agents": {"claude": {"bottle": "dev", **(agent or {})}}}


@pytest.fixture(scope="session")
def pipelock_image() -> str:
    return ensure_pipelock_double_image()


@pytest.fixture(scope="session")
def fake_anthropic_image() -> str:
    return ensure_fake_anthropic_image()


@pytest.fixture
def env(tmp_path: Path, pipelock_image: str) -> Iterator[Env]:
    home = tmp_path / "bottle-home"
    workdir = tmp_path / "work"
    workdir.mkdir()
    os.chown(workdir, AGENT_UID, AGENT_UID)
    vars = {k: v for k, v in os.environ.items() if not k.startswith("CLAUDE_BOTTLE")}
    vars.update({
        "CLAUDE_BOTTLE_HOME": str(home),
        "CLAUDE_BOTTLE_PIPELOCK_IMAGE": pipelock_image,
        "CLAUDE_BOTTLE_CA_BUNDLE": str(HOST_CA),
        "HOME": str(tmp_path / "user-home"),
        "PYTHONPATH": str(ROOT),
    })
    e = Env(home=home, workdir=workdir, manifest=tmp_path / "manifest.json", vars=vars)
    e.write_manifest(basic_manifest())
    e.vars["CLAUDE_BOTTLE_MANIFEST"] = str(e.manifest)
    yield e
    # A test that failed half-way must not leave its bottles behind for the next one.
    state = home / "state"
    for ident_dir in sorted(state.iterdir()) if state.is_dir() else []:
        containers, networks = labelled(ident_dir.name)
        if containers:
            docker("rm", "-f", *containers, check=False)
        if networks:
            docker("network", "rm", *networks, check=False)


def wait_for(predicate: Callable[[], bool], timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
