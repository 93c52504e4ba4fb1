"""The gate's server and pre-receive hook end to end, without docker.

The gate runs as a subprocess on 127.0.0.1 and the "real remotes" are bare
repositories in a temp dir, reached through a stand-in `ssh` on the gate's PATH that
runs the remote command locally (as git's own test suite does). The agent side is a
plain git client configured by `agent_git_config`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from claude_bottle.git_gate import GitRemote, agent_git_config

REPO_ROOT = Path(__file__).resolve().parents[2]

FAKE_SSH = """#!/bin/sh
# Stand-in for ssh: log the arguments, run the remote command here with a clean git env.
printf '%s\\n' "$*" >> "$FAKE_SSH_LOG"
for a; do last=$a; done
for v in $(env | sed -n 's/^\\(GIT_[A-Za-z0-9_]*\\)=.*/\\1/p'); do unset "$v"; done
exec sh -c "$last"
"""

REJECTING_HOOK = """#!/bin/sh
while read old new ref; do
  case "$ref" in *reject-me*) echo "upstream policy: $ref is not welcome"; exit 1;; esac
done
"""


# Tests' own git runs (seeding and inspecting the "real remotes") see no user config.
GIT_ENV = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")} | {
    "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
}


def git(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["git", *args], cwd=cwd, env=env or GIT_ENV, capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@dataclass
class Setup:
    tmp: Path
    gate_url: str
    upstream: dict[str, Path]
    agent_env: dict[str, str]
    ssh_log: Path
    gate_log: Path

    def clone(self, remote: str, dest: str) -> Path:
        path = self.tmp / "agent" / dest
        git("clone", "--quiet", self.remote_url(remote), str(path), env=self.agent_env)
        return path

    def remote_url(self, remote: str) -> str:
        return f"git@localhost:{self.upstream[remote]}"

    def agent_git(self, repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return git(*args, cwd=repo, env=self.agent_env, check=check)

    def upstream_rev(self, remote: str, ref: str) -> str | None:
        proc = git("rev-parse", "--verify", "--quiet", ref, cwd=self.upstream[remote], check=False)
        return proc.stdout.strip() or None


def _commit(repo: Path, name: str, env: dict[str, str] | None = None, content: bytes | None = None) -> str:
    (repo / name).write_bytes(content if content is not None else f"{name}\n".encode())
    git("add", name, cwd=repo, env=env)
    git("commit", "--quiet", "-m", f"add {name}", cwd=repo, env=env)
    return git("rev-parse", "HEAD", cwd=repo, env=env).stdout.strip()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("gitgate")
    base_env = dict(GIT_ENV, HOME=str(tmp))

    upstream: dict[str, Path] = {}
    for name in ("origin", "free"):
        bare = tmp / "upstream" / f"{name}.git"
        git("init", "--quiet", "--bare", "--initial-branch=main", str(bare))
        (bare / "hooks" / "pre-receive").write_text(REJECTING_HOOK)
        (bare / "hooks" / "pre-receive").chmod(0o755)
        seed = tmp / "seed" / name
        git("clone", "--quiet", str(bare), str(seed))
        git("checkout", "--quiet", "-b", "main", cwd=seed)
        _commit(seed, "README")
        git("push", "--quiet", "origin", "main", cwd=seed)
        upstream[name] = bare
    upstream["broken"] = tmp / "upstream" / "missing.git"

    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text(FAKE_SSH)
    (bin_dir / "ssh").chmod(0o755)
    key = tmp / "keys" / "id"
    key.parent.mkdir()
    key.write_text("not used by the stand-in ssh\n")
    (tmp / "secrets.json").write_text("{}")
    remotes = [
        GitRemote("origin", f"git@localhost:{upstream['origin']}", ("refs/heads/agent/*",), identity_file=key),
        GitRemote("free", f"git@localhost:{upstream['free']}", ("refs/heads/*",), force=True, identity_file=key),
        GitRemote("broken", f"git@localhost:{upstream['broken']}", (), identity_file=key),
    ]
    config = {
        "version": 1, "secrets_file": str(tmp / "secrets.json"), "known_hosts": str(tmp / "kh"),
        "remotes": [
            {"name": r.name, "url": r.url, "push": list(r.push), "force": r.force, "identity_file": str(key)}
            for r in remotes
        ],
    }
    (tmp / "config.json").write_text(json.dumps(config))

    port = _free_port()
    gate_env = dict(base_env, PATH=f"{bin_dir}:{os.environ['PATH']}", PYTHONPATH=str(REPO_ROOT), FAKE_SSH_LOG=str(tmp / "ssh.log"))
    gate_log = tmp / "gate.log"
    with open(gate_log, "wb") as log:
        gate = subprocess.Popen(
            [sys.executable, "-m", "claude_bottle.git_gate", "--config", str(tmp / "config.json"),
             "--listen", f"127.0.0.1:{port}", "--state", str(tmp / "state")],
            env=gate_env, stdout=log, stderr=subprocess.STDOUT,
        )
    gate_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                urllib.request.urlopen(f"{gate_url}/healthz", timeout=1).read()
                break
            except OSError:
                if gate.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"gate did not start:\n{gate_log.read_text()}") from None
                time.sleep(0.1)

        (tmp / "agent.gitconfig").write_text(agent_git_config(remotes, gate_url))
        agent_env = dict(base_env, GIT_CONFIG_GLOBAL=str(tmp / "agent.gitconfig"), HTTP_PROXY="http://127.0.0.1:9", http_proxy="http://127.0.0.1:9")
        yield Setup(tmp, gate_url, upstream, agent_env, tmp / "ssh.log", gate_log)
    finally:
        gate.terminate()
        gate.wait(timeout=10)


def test_clone_through_gate_checks_out_upstream_default_branch(setup: Setup) -> None:
    work = setup.clone("origin", "clone1")
    assert (work / "README").read_text() == "README\n"
    assert setup.agent_git(work, "rev-parse", "--abbrev-ref", "HEAD").stdout.strip() == "main"
    # The repository's own config still names the real remote; only the agent's global config rewrites it.
    assert setup.agent_git(work, "config", "remote.origin.url").stdout.strip() == setup.remote_url("origin")
    assert "StrictHostKeyChecking=accept-new" in setup.ssh_log.read_text()


def test_fetch_refreshes_from_the_real_remote(setup: Setup) -> None:
    work = setup.clone("origin", "fetcher")
    direct = setup.tmp / "direct"
    git("clone", "--quiet", str(setup.upstream["origin"]), str(direct))
    new = _commit(direct, "upstream-change")
    git("push", "--quiet", "origin", "main", cwd=direct)
    setup.agent_git(work, "fetch", "--quiet")
    assert setup.agent_git(work, "rev-parse", "origin/main").stdout.strip() == new


def test_push_to_allowed_ref_lands_upstream(setup: Setup) -> None:
    work = setup.clone("origin", "pusher")
    sha = _commit(work, "agent-work", env=setup.agent_env)
    proc = setup.agent_git(work, "push", "origin", "HEAD:refs/heads/agent/one")
    assert "git-gate: pushing refs/heads/agent/one" in proc.stderr
    assert setup.upstream_rev("origin", "refs/heads/agent/one") == sha


def test_large_push_is_streamed(setup: Setup) -> None:
    work = setup.clone("origin", "large")
    sha = _commit(work, "blob.bin", env=setup.agent_env, content=os.urandom(3 * 1024 * 1024))
    setup.agent_git(work, "push", "origin", "HEAD:refs/heads/agent/large")
    assert setup.upstream_rev("origin", "refs/heads/agent/large") == sha


@pytest.mark.parametrize(
    ("prepare", "refspec", "message"),
    [
        (None, "HEAD:refs/heads/main", "git-gate: refused refs/heads/main: not in push rules (refs/heads/agent/*)"),
        ("rewrite", "+HEAD:refs/heads/agent/forced", "git-gate: refused refs/heads/agent/forced: force-push not allowed (force: false)"),
        (None, ":refs/heads/agent/forced", "git-gate: refused refs/heads/agent/forced: deletion not allowed (force: false)"),
    ],
    ids=["other-ref", "force-push", "deletion"],
)
def test_refused_pushes_name_the_rule_and_leave_upstream_alone(setup: Setup, prepare: str | None, refspec: str, message: str) -> None:
    work = setup.clone("origin", f"refused-{refspec.replace('/', '_').replace(':', '_')}")
    if setup.upstream_rev("origin", "refs/heads/agent/forced") is None:
        _commit(work, "to-be-forced", env=setup.agent_env)
        setup.agent_git(work, "push", "origin", "HEAD:refs/heads/agent/forced")
        setup.agent_git(work, "fetch", "--quiet")
    before = git("for-each-ref", cwd=setup.upstream["origin"]).stdout
    if prepare == "rewrite":
        setup.agent_git(work, "reset", "--quiet", "--hard", "origin/agent/forced")
        setup.agent_git(work, "commit", "--quiet", "--amend", "-m", "rewritten")
    else:
        _commit(work, "refused-change", env=setup.agent_env)
    proc = setup.agent_git(work, "push", "origin", refspec, check=False)
    assert proc.returncode != 0
    assert f"remote: {message}" in proc.stderr
    assert "pre-receive hook declined" in proc.stderr
    assert git("for-each-ref", cwd=setup.upstream["origin"]).stdout == before


def test_one_refused_ref_stops_the_whole_push(setup: Setup) -> None:
    work = setup.clone("origin", "mixed")
    _commit(work, "mixed", env=setup.agent_env)
    proc = setup.agent_git(work, "push", "origin", "HEAD:refs/heads/agent/mixed", "HEAD:refs/heads/other", check=False)
    assert proc.returncode != 0
    assert "git-gate: not pushing refs/heads/agent/mixed either" in proc.stderr
    assert setup.upstream_rev("origin", "refs/heads/agent/mixed") is None


def test_force_remote_allows_force_push_and_deletion(setup: Setup) -> None:
    work = setup.clone("free", "free")
    _commit(work, "first", env=setup.agent_env)
    setup.agent_git(work, "push", "origin", "HEAD:refs/heads/topic")
    setup.agent_git(work, "commit", "--quiet", "--amend", "-m", "rewritten")
    rewritten = setup.agent_git(work, "rev-parse", "HEAD").stdout.strip()
    setup.agent_git(work, "push", "--force", "origin", "HEAD:refs/heads/topic")
    assert setup.upstream_rev("free", "refs/heads/topic") == rewritten
    setup.agent_git(work, "push", "origin", ":refs/heads/topic")
    assert setup.upstream_rev("free", "refs/heads/topic") is None


def test_force_with_lease_protects_commits_the_agent_never_saw(setup: Setup) -> None:
    work = setup.clone("free", "lease")
    _commit(work, "lease-base", env=setup.agent_env)
    setup.agent_git(work, "push", "origin", "HEAD:refs/heads/leased")
    # Someone else moves the branch on the real remote; the gate has not refreshed since.
    direct = setup.tmp / "lease-direct"
    git("clone", "--quiet", "--branch", "leased", str(setup.upstream["free"]), str(direct))
    theirs = _commit(direct, "their-work")
    git("push", "--quiet", "origin", "leased", cwd=direct)
    # The agent's push advertisement refreshes the gate, so a plain push learns of it...
    setup.agent_git(work, "commit", "--quiet", "--amend", "-m", "agent rewrite")
    proc = setup.agent_git(work, "push", "origin", "HEAD:refs/heads/leased", check=False)
    assert proc.returncode != 0 and "rejected" in proc.stderr
    assert setup.upstream_rev("free", "refs/heads/leased") == theirs


def test_real_remote_rejection_reaches_the_agent(setup: Setup) -> None:
    work = setup.clone("origin", "rejected")
    _commit(work, "reject", env=setup.agent_env)
    proc = setup.agent_git(work, "push", "origin", "HEAD:refs/heads/agent/reject-me", check=False)
    assert proc.returncode != 0
    assert "upstream policy: refs/heads/agent/reject-me is not welcome" in proc.stderr
    assert "did not accept the push" in proc.stderr
    assert setup.upstream_rev("origin", "refs/heads/agent/reject-me") is None
    # The gate's clone did not take the update either.
    ls = setup.agent_git(work, "ls-remote", "origin", "refs/heads/agent/reject-me").stdout
    assert ls == ""


def test_failed_refresh_is_shown_to_the_agent(setup: Setup) -> None:
    proc = git("clone", setup.remote_url("broken"), str(setup.tmp / "agent" / "broken"), env=setup.agent_env, check=False)
    assert proc.returncode != 0
    assert "git-gate: cannot fetch broken from" in proc.stderr


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/healthz", 200),
        ("GET", "/nope.git/info/refs?service=git-upload-pack", 404),
        ("GET", "/origin.git/HEAD", 404),
        ("GET", "/origin.git/objects/info/packs", 404),
        ("GET", "/origin.git/info/refs", 403),
        ("GET", "/origin.git/info/refs?service=git-upload-archive", 403),
        ("GET", "/origin.git/git-upload-pack", 405),
        ("GET", "http://example.com/", 404),
        ("GET", "/../../etc/passwd", 404),
        ("DELETE", "/origin.git/info/refs", 501),
    ],
)
def test_only_smart_http_of_declared_remotes_is_served(setup: Setup, method: str, path: str, status: int) -> None:
    with socket.create_connection(("127.0.0.1", int(setup.gate_url.rsplit(":", 1)[1])), timeout=10) as s:
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: gate\r\nConnection: close\r\n\r\n".encode())
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    assert reply.split(b"\r\n", 1)[0].split()[1] == str(status).encode()


def test_gate_log_names_requests_but_no_secret(setup: Setup) -> None:
    text = setup.gate_log.read_text()
    assert "git-gate: serving origin" in text
    assert "Authorization" not in text

