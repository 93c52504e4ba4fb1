"""The git gate in real containers, against a real ssh + smart-HTTP upstream.

Topology (all created here, named cbtest-gitgate-<run>-…):
  upstream  on the egress network only: sshd (git-shell) and lighttpd + git http-backend
            over TLS with basic auth (tests/doubles/git_upstream), aliases upstream,
            upstream-pinned, upstream-wrongkey;
  gate      the sidecar image running `gate_command()` as GATE_USER, on both networks,
            its files copied in from `gate_files()` before it starts, as the launcher does;
  agent     the sidecar image (it has git) on the internal network alone, with the
            `agent_git_config()` gitconfig and a bogus egress proxy in its environment.
"""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from claude_bottle.git_gate import (
    GATE_HEALTH_PATH,
    GATE_PORT,
    GATE_USER,
    GitRemote,
    agent_git_config,
    check_remote_files,
    gate_command,
    gate_files,
    git_remotes_from_json,
    secret_names,
)

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
UPSTREAM_DIR = REPO_ROOT / "tests" / "doubles" / "git_upstream"
SIDECAR_IMAGE = "claude-bottle-test/sidecar-gitgate:latest"
UPSTREAM_IMAGE = "claude-bottle-test/git-upstream:latest"
HASH_LABEL = "cbtest.content-hash"
AGENT_HOME = "/tmp/agent"
TOKEN_ENV = "CBTEST_GITGATE_TOKEN"
BAD_TOKEN_ENV = "CBTEST_GITGATE_BAD_TOKEN"


def docker(*args: str, input: bytes | None = None, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["docker", *args], input=input, capture_output=True, timeout=timeout)
    out = subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace"))
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:4])} … failed ({proc.returncode}):\n{out.stdout}\n{out.stderr}")
    return out


def _content_hash(root: Path, paths: list[Path]) -> str:
    h = hashlib.sha256()
    for path in sorted(paths):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:20]


def _ensure_image(tag: str, content_hash: str, build: list[str]) -> None:
    """Build unless the tag already carries this content hash."""
    have = docker("image", "inspect", "--format", f'{{{{.Id}}}} {{{{ index .Config.Labels "{HASH_LABEL}" }}}}', tag, check=False)
    old_id, _, old_hash = have.stdout.strip().partition(" ")
    if have.returncode == 0 and old_hash == content_hash:
        return
    docker("build", "-q", "--label", f"{HASH_LABEL}={content_hash}", "-t", tag, *build, timeout=1200)
    if have.returncode == 0 and old_hash:
        # The build that tag pointed at was ours and is now untagged: drop it (fails harmlessly if in use).
        docker("image", "rm", old_id, check=False)


def build_images() -> None:
    package = REPO_ROOT / "claude_bottle"
    files = [p for p in package.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    with tempfile.TemporaryDirectory(prefix="cbtest-gitgate-ctx-") as ctx:
        shutil.copytree(package, Path(ctx) / "claude_bottle", ignore=shutil.ignore_patterns("__pycache__"))
        (Path(ctx) / "ca-bundle.crt").write_bytes(b"")
        _ensure_image(SIDECAR_IMAGE, _content_hash(REPO_ROOT, files),
                      ["-f", str(Path(ctx) / "claude_bottle" / "images" / "sidecar.Dockerfile"), ctx])
    upstream_files = [p for p in UPSTREAM_DIR.iterdir() if p.is_file()]
    _ensure_image(UPSTREAM_IMAGE, _content_hash(UPSTREAM_DIR, upstream_files), [str(UPSTREAM_DIR)])


def tar_stream(files: Mapping[str, tuple[bytes, int]], *, uid: int, gid: int, dirs: Mapping[str, int]) -> bytes:
    """A tar for `docker cp - CONTAINER:/` (what the launcher does with gate_files)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path, mode in dirs.items():
            info = tarfile.TarInfo(path.lstrip("/"))
            info.type, info.mode, info.uid, info.gid, info.mtime = tarfile.DIRTYPE, mode, uid, gid, int(time.time())
            tar.addfile(info)
        for path, (content, mode) in files.items():
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode, info.uid, info.gid, info.mtime = len(content), mode, uid, gid, int(time.time())
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


@dataclass
class Bottle:
    prefix: str
    tmp: Path
    token: str
    private_key: str
    remotes: tuple[GitRemote, ...]
    upstream_ips: list[str]

    @property
    def agent(self) -> str:
        return f"{self.prefix}-agent"

    @property
    def gate(self) -> str:
        return f"{self.prefix}-gate"

    @property
    def upstream(self) -> str:
        return f"{self.prefix}-upstream"

    def in_agent(self, *cmd: str, check: bool = True, workdir: str = AGENT_HOME) -> subprocess.CompletedProcess[str]:
        return docker("exec", "-w", workdir, self.agent, *cmd, check=check, timeout=120)

    def agent_git(self, repo: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.in_agent("git", *args, check=check, workdir=f"{AGENT_HOME}/{repo}")

    def clone(self, url: str, dest: str) -> None:
        self.in_agent("git", "clone", "--quiet", url, dest)

    def commit(self, repo: str, name: str) -> str:
        self.in_agent("sh", "-c", f"echo {name} > {name} && git add {name} && git commit --quiet -m {name}", workdir=f"{AGENT_HOME}/{repo}")
        return self.agent_git(repo, "rev-parse", "HEAD").stdout.strip()

    def upstream_refs(self, repo: str) -> str:
        return docker("exec", "-u", "git", self.upstream, "git", "-C", f"/srv/git/{repo}.git", "for-each-ref").stdout

    def upstream_rev(self, repo: str, ref: str) -> str | None:
        proc = docker("exec", "-u", "git", self.upstream, "git", "-C", f"/srv/git/{repo}.git",
                      "rev-parse", "--verify", "--quiet", ref, check=False)
        return proc.stdout.strip() or None


def _docker_usable() -> str | None:
    if shutil.which("docker") is None:
        return "docker is not installed"
    if docker("info", check=False, timeout=30).returncode != 0:
        return "no Docker daemon answers"
    if docker("image", "inspect", "debian:bookworm-slim", check=False).returncode != 0:
        return "the base image debian:bookworm-slim is not present"
    return None


@pytest.fixture(scope="module")
def bottle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bottle]:
    reason = _docker_usable()
    if reason:
        pytest.skip(reason)
    build_images()
    tmp = tmp_path_factory.mktemp("gitgate-it")
    prefix = f"cbtest-gitgate-{secrets.token_hex(3)}"
    internal, egress = f"{prefix}-internal", f"{prefix}-egress"
    b_upstream, b_gate, b_agent = f"{prefix}-upstream", f"{prefix}-gate", f"{prefix}-agent"
    created_containers: list[str] = []
    created_networks: list[str] = []
    try:
        docker("network", "create", "--internal", "-o", "com.docker.network.bridge.inhibit_ipv4=true", internal)
        created_networks.append(internal)
        docker("network", "create", egress)
        created_networks.append(egress)

        # The user's key for the real remote, and the manifest as the user writes it.
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "cbtest", "-f", str(tmp / "id_gate")], check=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "other", "-f", str(tmp / "id_other")], check=True)
        token = secrets.token_hex(16)

        created_containers.append(b_upstream)
        docker(
            "run", "-d", "--name", b_upstream, "--network", egress,
            "--network-alias", "upstream", "--network-alias", "upstream-pinned", "--network-alias", "upstream-wrongkey",
            "-e", f"AUTHORIZED_KEY={(tmp / 'id_gate.pub').read_text().strip()}", "-e", f"TOKEN={token}",
            "-e", "TLS_NAMES=upstream", "-e", "REPOS=ssh-repo http-repo", UPSTREAM_IMAGE,
        )
        deadline = time.monotonic() + 60
        while docker("exec", b_upstream, "test", "-f", "/run/git-upstream.ready", check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise AssertionError(docker("logs", b_upstream, check=False).stderr)
            time.sleep(0.3)
        host_key = docker("exec", b_upstream, "cat", "/etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[:2]
        other_key = (tmp / "id_other.pub").read_text().split()[:2]
        # The host user's known_hosts: one alias pinned to the real key, one to a wrong key,
        # and `upstream` itself never contacted (learnt by the gate on first use).
        known_hosts = tmp / "known_hosts"
        known_hosts.write_text(f"upstream-pinned {' '.join(host_key)}\nupstream-wrongkey {' '.join(other_key)}\n")
        ca_pem = docker("exec", b_upstream, "cat", "/etc/lighttpd/tls/ca.pem").stdout.encode()

        remotes = git_remotes_from_json(
            [
                {"name": "origin", "url": "git@upstream:/srv/git/ssh-repo.git", "push": ["refs/heads/agent/*"], "identity_file": "id_gate"},
                {"name": "pinned", "url": "ssh://git@upstream-pinned/srv/git/ssh-repo.git", "identity_file": "id_gate"},
                {"name": "wrongkey", "url": "git@upstream-wrongkey:/srv/git/ssh-repo.git", "identity_file": "id_gate"},
                {"name": "web", "url": "https://upstream/git/http-repo.git", "push": ["refs/heads/agent/*"], "force": True, "token": f"${{{TOKEN_ENV}}}"},
                {"name": "badtoken", "url": "https://oauth2@upstream/git/http-repo.git", "token": f"${{{BAD_TOKEN_ENV}}}"},
            ],
            where=f"{tmp}/claude-bottle.json: bottles.it.git.remotes", base_dir=tmp,
        )
        check_remote_files(remotes)
        host_env = {TOKEN_ENV: token, BAD_TOKEN_ENV: "not-the-token"}
        files = gate_files(remotes, {n: host_env[n] for n in secret_names(remotes)}, known_hosts_files=[known_hosts])

        # The gate, started the way the launcher must start it.
        uid, gid = (int(x) for x in GATE_USER.split(":"))
        created_containers.append(b_gate)
        docker("create", "--name", b_gate, "--network", egress, "--user", GATE_USER, "--init", SIDECAR_IMAGE, *gate_command())
        docker("network", "connect", internal, b_gate)
        docker("cp", "-", f"{b_gate}:/", input=tar_stream(files, uid=uid, gid=gid, dirs={"/etc/git-gate": 0o755, "/etc/git-gate/keys": 0o700}))
        # The test CA stands in for the bottle's ca_bundle, which production bakes into the image.
        docker("cp", "-", f"{b_gate}:/", input=tar_stream({"/etc/ssl/certs/ca-certificates.crt": (ca_pem, 0o644)}, uid=0, gid=0, dirs={}))
        docker("start", b_gate)

        created_containers.append(b_agent)
        docker(
            "run", "-d", "--name", b_agent, "--network", internal, "--user", "1000:1000",
            "-e", f"HOME={AGENT_HOME}", "-e", "HTTP_PROXY=http://cbtest-no-proxy.invalid:3128",
            "-e", "HTTPS_PROXY=http://cbtest-no-proxy.invalid:3128", "-e", "http_proxy=http://cbtest-no-proxy.invalid:3128",
            "--entrypoint", "sleep", SIDECAR_IMAGE, "infinity",
        )
        docker("exec", b_agent, "mkdir", "-p", AGENT_HOME)
        gitconfig = agent_git_config(remotes, f"http://{b_gate}:{GATE_PORT}")
        docker("exec", "-i", b_agent, "sh", "-c", f"cat > {AGENT_HOME}/.gitconfig", input=gitconfig.encode())

        health = (
            "import urllib.request as u; u.build_opener(u.ProxyHandler({}))"
            f".open('http://{b_gate}:{GATE_PORT}{GATE_HEALTH_PATH}', timeout=2)"
        )
        deadline = time.monotonic() + 30
        while docker("exec", b_agent, "python3", "-c", health, check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise AssertionError(f"gate not healthy:\n{docker('logs', b_gate, check=False).stderr}")
            time.sleep(0.3)

        ips = docker("inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", b_upstream).stdout.split()
        yield Bottle(prefix, tmp, token, (tmp / "id_gate").read_text(), remotes, ips)
    finally:
        if os.environ.get("CBTEST_KEEP"):
            print(f"kept {created_containers} {created_networks}")
        else:
            for name in reversed(created_containers):
                docker("rm", "-f", name, check=False)
            for name in reversed(created_networks):
                docker("network", "rm", name, check=False)


def test_clone_and_fetch_over_ssh_through_the_gate(bottle: Bottle) -> None:
    bottle.clone("git@upstream:/srv/git/ssh-repo.git", "ssh1")
    assert bottle.in_agent("cat", "ssh1/README").stdout == "ssh-repo\n"
    assert bottle.agent_git("ssh1", "config", "remote.origin.url").stdout.strip() == "git@upstream:/srv/git/ssh-repo.git"
    # A commit lands on the real remote behind the agent's back; a fetch through the gate sees it.
    new = docker("exec", "-u", "git", bottle.upstream, "sh", "-c", (
        "set -e; d=$(mktemp -d); git clone -q /srv/git/ssh-repo.git $d; cd $d; echo up > up;"
        " git add up; git -c user.name=u -c user.email=u@u commit -qm up; git push -q origin main; git rev-parse HEAD"
    )).stdout.strip()
    bottle.agent_git("ssh1", "fetch", "--quiet")
    assert bottle.agent_git("ssh1", "rev-parse", "origin/main").stdout.strip() == new


def test_push_rules_over_ssh(bottle: Bottle) -> None:
    bottle.clone("git@upstream:/srv/git/ssh-repo.git", "ssh2")
    sha = bottle.commit("ssh2", "agent-work")
    pushed = bottle.agent_git("ssh2", "push", "origin", "HEAD:refs/heads/agent/it")
    assert "git-gate: pushing refs/heads/agent/it" in pushed.stderr
    assert bottle.upstream_rev("ssh-repo", "refs/heads/agent/it") == sha

    before = bottle.upstream_refs("ssh-repo")
    refused = bottle.agent_git("ssh2", "push", "origin", "HEAD:refs/heads/main", check=False)
    assert refused.returncode != 0
    assert "remote: git-gate: refused refs/heads/main: not in push rules (refs/heads/agent/*)" in refused.stderr

    bottle.agent_git("ssh2", "commit", "--quiet", "--amend", "-m", "rewritten")
    forced = bottle.agent_git("ssh2", "push", "--force", "origin", "HEAD:refs/heads/agent/it", check=False)
    assert forced.returncode != 0
    assert "remote: git-gate: refused refs/heads/agent/it: force-push not allowed (force: false)" in forced.stderr

    deleted = bottle.agent_git("ssh2", "push", "origin", ":refs/heads/agent/it", check=False)
    assert deleted.returncode != 0
    assert "remote: git-gate: refused refs/heads/agent/it: deletion not allowed (force: false)" in deleted.stderr
    assert bottle.upstream_refs("ssh-repo") == before


def test_the_real_remotes_refusal_reaches_the_agent(bottle: Bottle) -> None:
    bottle.clone("git@upstream:/srv/git/ssh-repo.git", "ssh3")
    bottle.commit("ssh3", "rejected")
    proc = bottle.agent_git("ssh3", "push", "origin", "HEAD:refs/heads/agent/reject-me", check=False)
    assert proc.returncode != 0
    assert "upstream policy: refs/heads/agent/reject-me is not welcome here" in proc.stderr
    assert bottle.upstream_rev("ssh-repo", "refs/heads/agent/reject-me") is None


def test_https_with_token(bottle: Bottle) -> None:
    bottle.clone("https://upstream/git/http-repo.git", "web")
    assert bottle.in_agent("cat", "web/README").stdout == "http-repo\n"
    bottle.commit("web", "web-work")
    bottle.agent_git("web", "push", "origin", "HEAD:refs/heads/agent/web")
    bottle.agent_git("web", "commit", "--quiet", "--amend", "-m", "rewritten")
    rewritten = bottle.agent_git("web", "rev-parse", "HEAD").stdout.strip()
    bottle.agent_git("web", "push", "--force", "origin", "HEAD:refs/heads/agent/web")  # force: true on this remote
    assert bottle.upstream_rev("http-repo", "refs/heads/agent/web") == rewritten
    before = bottle.upstream_refs("http-repo")
    refused = bottle.agent_git("web", "push", "origin", "HEAD:refs/heads/main", check=False)
    assert "remote: git-gate: refused refs/heads/main: not in push rules (refs/heads/agent/*)" in refused.stderr
    assert bottle.upstream_refs("http-repo") == before


def test_a_wrong_token_is_reported_to_the_agent(bottle: Bottle) -> None:
    proc = bottle.in_agent("git", "clone", "https://oauth2@upstream/git/http-repo.git", "bad", check=False)
    assert proc.returncode != 0
    assert "git-gate: cannot fetch badtoken from https://oauth2@upstream/git/http-repo.git" in proc.stderr
    assert f"git-gate: upstream did not accept the token ${{{BAD_TOKEN_ENV}}}: check its value and scopes on the host" in proc.stderr


def test_host_key_policy(bottle: Bottle) -> None:
    bottle.clone("ssh://git@upstream-pinned/srv/git/ssh-repo.git", "pinned")  # known on the host: checked
    proc = bottle.in_agent("git", "clone", "git@upstream-wrongkey:/srv/git/ssh-repo.git", "wrong", check=False)
    assert proc.returncode != 0
    assert "git-gate: cannot fetch wrongkey" in proc.stderr
    assert "Host key verification failed" in proc.stderr
    assert "git-gate: upstream-wrongkey did not show the host key your known_hosts holds for it" in proc.stderr
    # `upstream` was learnt on first contact and is pinned in the gate's own known_hosts.
    learnt = docker("exec", bottle.gate, "cat", "/tmp/git-gate/known_hosts").stdout
    assert any(line.startswith("upstream ") for line in learnt.splitlines())


def test_agent_cannot_reach_the_upstream_directly(bottle: Bottle) -> None:
    probe = (
        "import socket, sys, concurrent.futures as cf\n"
        "def reach(target):\n"
        "    try:\n"
        "        socket.create_connection(target, timeout=3).close(); return f'{target[0]}:{target[1]}'\n"
        "    except OSError:\n"
        "        return ''\n"
        "targets = [(h, p) for h in sys.argv[1:] for p in (22, 443)]\n"
        "print(' '.join(cf.ThreadPoolExecutor(len(targets)).map(reach, targets)).strip())\n"
    )
    reached = bottle.in_agent("python3", "-c", probe, "upstream", *bottle.upstream_ips).stdout.strip()
    assert reached == ""
    # git itself, told to skip both the gate rewrite and any proxy, gets nowhere either.
    direct = bottle.in_agent(
        "git", "-c", "http.proxy=", "ls-remote", f"https://{bottle.upstream_ips[0]}/git/http-repo.git", check=False,
    )
    assert direct.returncode != 0 and "Failed to connect" in direct.stderr


def test_no_key_or_token_on_the_agent_side(bottle: Bottle) -> None:
    key_line = bottle.private_key.splitlines()[1]
    env = bottle.in_agent("env").stdout
    assert bottle.token not in env
    inspect = docker("inspect", bottle.agent).stdout
    assert bottle.token not in inspect and key_line not in inspect
    found = bottle.in_agent(
        "sh", "-c", f"grep -rlI -e '{bottle.token}' -e '{key_line}' / --exclude-dir=proc --exclude-dir=sys 2>/dev/null; true",
    ).stdout
    assert found == ""
    assert bottle.in_agent("test", "-e", "/etc/git-gate", check=False).returncode != 0
    assert bottle.in_agent("test", "-e", f"{AGENT_HOME}/.ssh", check=False).returncode != 0
    # The gate's own container: the token is in no command line or environment docker shows.
    gate_inspect = docker("inspect", bottle.gate).stdout
    assert bottle.token not in gate_inspect and key_line not in gate_inspect
