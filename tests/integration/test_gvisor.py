"""gVisor: when runsc is registered with the daemon the agent runs under it and the
sidecars do not; the preflight and the dry-run say which. The dockerd that
`./scripts/test` starts has runsc, so in CI the whole integration suite — end to end and
escape tests included — runs its agents under gVisor; on a daemon without runsc the same
test asserts runc (and the detect_runtime unit tests cover both)."""

from __future__ import annotations

import json
import os

import pytest

from .conftest import Env, docker, finish, start_waiting

pytestmark = pytest.mark.integration


def registered() -> bool:
    return "runsc" in json.loads(docker("info", "--format", "{{json .Runtimes}}").stdout)


def test_the_rig_registered_runsc_when_asked() -> None:
    if os.environ.get("CLAUDE_BOTTLE_TEST_RUNSC", "1") == "1" and os.environ.get("CI"):
        assert registered(), "scripts/test should have registered runsc with the daemon"


def test_agent_runtime_follows_the_daemon(env: Env) -> None:
    expected = "runsc" if registered() else "runc"
    plan = json.loads(env.cli("start", "claude", "--dry-run", "--format=json").stdout)
    assert plan["runtime"] == expected
    preflight = env.cli("start", "claude", "--dry-run").stdout
    assert f"runtime         {expected}" in preflight
    proc, identity = start_waiting(env)
    try:
        agent = f"claude-bottle-{identity}"
        assert docker("inspect", "--format", "{{.HostConfig.Runtime}}", agent).stdout.strip() == expected
        for role in ("pipelock", "cred-proxy", "supervise"):
            name = f"{agent}-{role}"
            if docker("inspect", name, check=False).returncode == 0:
                assert docker("inspect", "--format", "{{.HostConfig.Runtime}}", name).stdout.strip() == "runc"
        kernel = docker("exec", agent, "dmesg", check=False).stdout
        if expected == "runsc":
            assert "gVisor" in kernel
        else:
            assert "gVisor" not in kernel
    finally:
        finish(proc)
