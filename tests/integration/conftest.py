"""Fixtures for tests against the real Docker daemon.

Every bottle a test starts runs in a private $CLAUDE_BOTTLE_HOME, with pipelock's
image replaced by the test double (no registry here) and the host's CA bundle for
builds behind the TLS-intercepting proxy.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.doubles.images import ensure_fake_anthropic_image, ensure_pipelock_double_image

ROOT = Path(__file__).resolve().parents[2]
CLI = ROOT / "cli.py"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
AGENT_UID = 1000
TOKEN = "sk-ant-oat-real-secret-4d7f0c"
FAKE = "fake-anthropic.test"
ALLOWED = "allowed.test"
DENIED = "denied.test"
ROUTES: list[dict[str, object]] = [{"name": "anthropic", "role": "anthropic-base-url", "upstream": f"http://{FAKE}:8000",
           "header": "Authorization", "value": "Bearer ${CB_TEST_TOKEN}"}]



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


@pytest.fixture(scope="session", autouse=True)
def bottle_images(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Build the agent and sidecar images once, before any test: on a fresh machine the
    first tests would otherwise race eight cold builds against their own timeouts."""
    from claude_bottle.backend import BottleSpec
    from claude_bottle.backend.docker.backend import DockerBottleBackend
    from claude_bottle.manifest import Manifest

    work = tmp_path_factory.mktemp("images")
    manifest = Manifest.from_json(basic_manifest(), source="images", base_dir=work)
    backend = DockerBottleBackend()
    backend.ensure_images(backend.prepare(BottleSpec(manifest=manifest, agent_name="claude", cwd=work)))


@pytest.fixture(scope="session")
def fake_anthropic_image() -> str:
    return ensure_fake_anthropic_image()


@pytest.fixture
def env(tmp_path: Path, pipelock_image: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
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
    monkeypatch.setenv("CLAUDE_BOTTLE_HOME", str(home))  # for in-process calls (apply_*, dashboard)
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


def identities(env: Env) -> list[str]:
    state = env.home / "state"
    return sorted(p.name for p in state.iterdir()) if state.is_dir() else []


def agent_ready(identity: str) -> bool:
    """claude runs inside the agent container."""
    ps = docker("exec", f"claude-bottle-{identity}", "sh", "-c",
                "cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '", check=False)
    return "claude" in ps.stdout and ("--session-id" in ps.stdout or "--resume" in ps.stdout)


def start_waiting(env: Env, *extra: str, before_ready: Callable[[str], None] | None = None) -> tuple[subprocess.Popen[str], str]:
    """A bottle whose `claude -p` holds on: it got a line on stdin (claude gives up on an
    empty stdin after 3 s) and waits for the end of it, which never comes; finish() ends
    the launcher with SIGTERM, which must tear everything down."""
    proc = subprocess.Popen([sys.executable, str(CLI), "start", "claude", "-y", *extra, "--", "-p"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env.vars, cwd=env.workdir)
    assert proc.stdin is not None
    proc.stdin.write("hold on\n")
    proc.stdin.flush()
    wait_for(lambda: proc.poll() is not None or len(identities(env)) == 1, what="metadata")
    assert proc.poll() is None, proc.communicate()[1]
    identity = identities(env)[0]
    if before_ready:
        before_ready(identity)
    wait_for(lambda: proc.poll() is not None or agent_ready(identity), timeout=300, what="agent running")
    assert proc.poll() is None, proc.communicate()[1]
    return proc, identity


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


class Upstreams:
    """Test containers that join a bottle's egress network once it exists (the fake
    Anthropic API, an allowlisted host, a host nobody allowed)."""

    def __init__(self, image: str, aliases: list[str]) -> None:
        self.suffix = os.urandom(3).hex()
        self.network = f"cbtest-up-{self.suffix}"
        docker("network", "create", self.network)
        self.names: dict[str, str] = {}
        for alias in aliases:
            name = f"cbtest-{alias.split('.')[0]}-{self.suffix}"
            docker("run", "-d", "--name", name, "--network", self.network, image)
            self.names[alias] = name

    def join(self, identity: str) -> None:
        net = f"claude-bottle-{identity}-egress"
        wait_for(lambda: docker("network", "inspect", net, check=False).returncode == 0, what="egress network")
        for alias, name in self.names.items():
            docker("network", "connect", "--alias", alias, net, name)

    def ip(self, alias: str, network: str) -> str:
        fmt = "{{(index .NetworkSettings.Networks \"" + network + "\").IPAddress}}"
        return docker("inspect", "--format", fmt, self.names[alias]).stdout.strip()

    def _url(self, alias: str, path: str) -> str:
        # The host reaches the test's own bridge network directly.
        return f"http://{self.ip(alias, self.network)}:8000{path}"

    def requests(self, alias: str) -> list[dict[str, Any]]:
        with urllib.request.urlopen(self._url(alias, "/_requests"), timeout=10) as resp:
            return json.loads(resp.read())

    def script(self, alias: str, rules: list[dict[str, object]]) -> None:
        req = urllib.request.Request(self._url(alias, "/_script"), data=json.dumps(rules).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=10).close()

    def wait_healthy(self) -> None:
        for alias in self.names:
            wait_for(lambda: _ok(self._url(alias, "/_health")), what=f"{alias} health")

    def close(self) -> None:
        docker("rm", "-f", *self.names.values(), check=False)
        docker("network", "rm", self.network, check=False)


def _ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


@pytest.fixture
def upstreams(fake_anthropic_image: str) -> Iterator[Upstreams]:
    u = Upstreams(fake_anthropic_image, [FAKE, ALLOWED, DENIED])
    u.wait_healthy()
    yield u
    u.close()


@pytest.fixture
def bottle(env: Env, upstreams: Upstreams) -> Iterator[tuple[Env, str]]:
    env.vars["CB_TEST_TOKEN"] = TOKEN
    env.write_manifest(basic_manifest(allow=[ALLOWED], routes=ROUTES))
    proc, identity = start_waiting(env, before_ready=upstreams.join)
    try:
        yield env, identity
    finally:
        finish(proc)
    assert labelled(identity) == ([], [])
