"""The git gate inside a real bottle started by the launcher: the agent clones, fetches and
pushes through the gate; refused pushes name the rule; the upstream stays out of reach."""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import AGENT_UID, Env, basic_manifest, docker, finish, start_waiting
from .probe import unreachable
from .test_git_gate import UPSTREAM_IMAGE, build_images

pytestmark = pytest.mark.integration

REPO = "git@upstream:/srv/git/ssh-repo.git"


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    build_images()
    key = tmp_path / "id_gate"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    name = f"cbtest-upstream-{secrets.token_hex(3)}"
    net = f"{name}-net"
    docker("network", "create", net)
    docker("run", "-d", "--name", name, "--network", net, "-e", f"AUTHORIZED_KEY={(tmp_path / 'id_gate.pub').read_text().strip()}",
           "-e", "TOKEN=unused", "-e", "TLS_NAMES=upstream", "-e", "REPOS=ssh-repo http-repo", UPSTREAM_IMAGE)
    deadline = time.monotonic() + 60
    while docker("exec", name, "test", "-f", "/run/git-upstream.ready", check=False).returncode != 0:
        assert time.monotonic() < deadline, docker("logs", name, check=False).stderr
        time.sleep(0.3)
    yield name, key
    docker("rm", "-f", name, check=False)
    docker("network", "rm", net, check=False)


def test_agent_pushes_only_where_declared(env: Env, upstream: tuple[str, Path]) -> None:
    name, key = upstream
    env.write_manifest(basic_manifest(bottle={"git": {"remotes": [
        {"name": "origin", "url": REPO, "push": ["refs/heads/agent/*"], "identity_file": str(key)}]}}))

    def join(identity: str) -> None:
        net = f"claude-bottle-{identity}-egress"
        deadline = time.monotonic() + 120
        while docker("network", "inspect", net, check=False).returncode != 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        docker("network", "connect", "--alias", "upstream", net, name)

    proc, identity = start_waiting(env, before_ready=join)
    agent = f"claude-bottle-{identity}"

    def git(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return docker("exec", "-u", f"{AGENT_UID}:{AGENT_UID}", "-e", "HOME=/home/claude", "-w", str(env.workdir),
                      agent, "git", *args, check=check)

    try:
        git("clone", REPO, "repo")
        git("-C", "repo", "fetch", "origin")
        git("-C", "repo", "checkout", "-b", "agent/work")
        git("-C", "repo", "commit", "--allow-empty", "-m", "from the agent")
        git("-C", "repo", "push", "origin", "agent/work")
        landed = docker("exec", name, "git", "--git-dir=/srv/git/ssh-repo.git", "rev-parse", "refs/heads/agent/work")
        assert landed.stdout.strip() == git("-C", "repo", "rev-parse", "HEAD").stdout.strip()

        before = docker("exec", name, "git", "--git-dir=/srv/git/ssh-repo.git", "for-each-ref").stdout
        refused = git("-C", "repo", "push", "origin", "HEAD:refs/heads/main", check=False)
        assert refused.returncode != 0 and "not in push rules (refs/heads/agent/*)" in refused.stderr
        git("-C", "repo", "commit", "--amend", "--allow-empty", "-m", "rewritten")
        forced = git("-C", "repo", "push", "--force", "origin", "agent/work", check=False)
        assert forced.returncode != 0 and "force-push not allowed" in forced.stderr
        deleted = git("-C", "repo", "push", "origin", ":agent/work", check=False)
        assert deleted.returncode != 0 and "deletion not allowed" in deleted.stderr
        assert docker("exec", name, "git", "--git-dir=/srv/git/ssh-repo.git", "for-each-ref").stdout == before

        # the agent holds no key and cannot reach the upstream itself
        assert unreachable(agent, "upstream", 22)
        private = key.read_text().strip().splitlines()[1]
        found = docker("exec", "-i", agent, "sh", "-c",
                       'read -r K; grep -rlsF -e "$K" --exclude-dir=proc --exclude-dir=sys /; echo searched',
                       input=(private + "\n").encode())
        assert found.stdout.strip() == "searched"
        assert not docker("exec", agent, "sh", "-c", "ls /home/claude/.ssh 2>/dev/null", check=False).stdout
    finally:
        finish(proc)
