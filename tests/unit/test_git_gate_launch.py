"""What the launcher copies into the gate, runs, and writes for the agent."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from claude_bottle.errors import BottleError
from claude_bottle.git_gate import (
    GATE_PORT,
    GitRemote,
    agent_git_config,
    gate_command,
    gate_config_json,
    gate_files,
    git_remotes_from_json,
)
from claude_bottle.git_gate.known_hosts import matching_known_hosts
from claude_bottle.git_gate.upstream import GateConfig, failure_hint, load_gate_config, load_secrets, upstream_env

KEY = b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ==\n-----END OPENSSH PRIVATE KEY-----\n"
HOST_KEY = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


def remotes(tmp_path: Path) -> tuple[GitRemote, ...]:
    (tmp_path / "id_deploy").write_bytes(KEY)
    declared: list[dict[str, object]] = [
        {"name": "origin", "url": "git@github.com:me/repo.git", "push": ["refs/heads/agent/*"], "identity_file": "id_deploy"},
        {"name": "lab", "url": "https://oauth2@gitlab.example/g/r.git", "push": [], "token": "${LAB_TOKEN}", "force": True},
        {"name": "pub", "url": "https://example.org/pub.git"},
    ]
    return git_remotes_from_json(declared, where="m.json: remotes", base_dir=tmp_path)


def test_gate_command_and_port() -> None:
    assert gate_command() == (
        "python3", "-m", "claude_bottle.git_gate", "--config", "/etc/git-gate/config.json",
        "--listen", f"0.0.0.0:{GATE_PORT}", "--state", "/tmp/git-gate",
    )


def test_config_holds_no_secret_and_no_host_path(tmp_path: Path) -> None:
    text = gate_config_json(remotes(tmp_path))
    assert str(tmp_path) not in text and "s3cr3t" not in text
    config = json.loads(text)
    assert config["remotes"][0] == {
        "name": "origin", "url": "git@github.com:me/repo.git", "push": ["refs/heads/agent/*"],
        "force": False, "identity_file": "/etc/git-gate/keys/origin",
    }
    assert config["remotes"][1]["token"] == "${LAB_TOKEN}"


def test_gate_files(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(f"github.com ssh-ed25519 {HOST_KEY}\nother.example ssh-ed25519 {HOST_KEY}\n")
    files = gate_files(remotes(tmp_path), {"LAB_TOKEN": "s3cr3t", "UNRELATED": "x"}, known_hosts_files=[known])
    assert files["/etc/git-gate/keys/origin"] == (KEY, 0o600)
    assert files["/etc/git-gate/secrets.json"] == (b'{"LAB_TOKEN": "s3cr3t"}', 0o600)
    assert files["/etc/git-gate/known_hosts"] == (f"github.com ssh-ed25519 {HOST_KEY}\n".encode(), 0o644)
    assert files["/etc/git-gate/config.json"][1] == 0o644
    assert set(files) == {"/etc/git-gate/config.json", "/etc/git-gate/keys/origin", "/etc/git-gate/secrets.json", "/etc/git-gate/known_hosts"}


def test_gate_files_needs_every_token(tmp_path: Path) -> None:
    with pytest.raises(BottleError, match=r"^git remote lab: secret \$\{LAB_TOKEN\} is not set in the environment$"):
        gate_files(remotes(tmp_path), {}, known_hosts_files=[])


def test_gate_files_names_a_missing_key(tmp_path: Path) -> None:
    rs = remotes(tmp_path)
    (tmp_path / "id_deploy").unlink()
    with pytest.raises(BottleError, match=r"^git remote origin: identity_file .*/id_deploy: no such file$"):
        gate_files(rs, {"LAB_TOKEN": "x"}, known_hosts_files=[])


def test_the_gate_reads_back_what_the_launcher_writes(tmp_path: Path) -> None:
    files = gate_files(remotes(tmp_path), {"LAB_TOKEN": "s3cr3t"}, known_hosts_files=[])
    root = tmp_path / "container"
    for path, (content, mode) in files.items():
        dest = root / path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(content)
        dest.chmod(mode)
    config = load_gate_config(root / "etc/git-gate/config.json")
    assert [r.name for r in config.remotes] == ["origin", "lab", "pub"]
    assert config.remotes[0].identity_file == Path("/etc/git-gate/keys/origin")
    config = GateConfig(config.remotes, root / "etc/git-gate/secrets.json", config.known_hosts)
    assert load_secrets(config) == {"LAB_TOKEN": "s3cr3t"}


def test_known_hosts_lines_are_picked_by_host(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    lines = [
        f"github.com,140.82.121.4 ssh-ed25519 {HOST_KEY}",
        f"[git.example]:2222 ssh-ed25519 {HOST_KEY}",
        f"git.example ssh-rsa {HOST_KEY}",
        f"*.corp.example,!evil.corp.example ssh-ed25519 {HOST_KEY}",
        f"@cert-authority *.ca.example ssh-ed25519 {HOST_KEY}",
        "# a comment mentioning github.com",
        "garbage",
    ]
    known.write_text("\n".join(lines) + "\n")

    def pick(*names: str) -> str:
        return matching_known_hosts([known, tmp_path / "absent"], names)

    assert pick("github.com") == lines[0] + "\n"
    assert pick("[git.example]:2222") == lines[1] + "\n"
    assert pick("git.example") == lines[2] + "\n"
    assert pick("src.corp.example") == lines[3] + "\n"
    assert pick("evil.corp.example") == ""
    assert pick("h.ca.example") == lines[4] + "\n"
    assert pick("elsewhere") == ""


def test_hashed_known_hosts_lines_match(tmp_path: Path) -> None:
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen is not installed")
    known = tmp_path / "known_hosts"
    known.write_text(f"github.com ssh-ed25519 {HOST_KEY}\ngitlab.com ssh-ed25519 {HOST_KEY}\n")
    subprocess.run(["ssh-keygen", "-H", "-f", str(known)], check=True, capture_output=True)
    hashed = known.read_text().splitlines()
    assert all(line.startswith("|1|") for line in hashed)
    assert matching_known_hosts([known], ["gitlab.com"]) == hashed[1] + "\n"


def test_agent_git_config_rewrites_every_spelling_to_the_gate(tmp_path: Path) -> None:
    config = tmp_path / "gitconfig"
    rs = remotes(tmp_path) + git_remotes_from_json(
        [{"name": "abs", "url": "git@upstream:/srv/git/r.git", "identity_file": "id_deploy"}],
        where="x", base_dir=tmp_path,
    )
    config.write_text(agent_git_config(rs, "http://cb-gate:9418/"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")} | {
        "GIT_CONFIG_GLOBAL": str(config), "GIT_CONFIG_NOSYSTEM": "1",
    }

    def resolved(url: str) -> str:
        proc = subprocess.run(["git", "ls-remote", "--get-url", url], env=env, capture_output=True, text=True, check=True)
        return proc.stdout.strip()

    assert resolved("git@github.com:me/repo.git") == "http://cb-gate:9418/origin.git"
    assert resolved("git@github.com:me/repo") == "http://cb-gate:9418/origin.git"
    assert resolved("https://oauth2@gitlab.example/g/r.git") == "http://cb-gate:9418/lab.git"
    assert resolved("ssh://git@upstream/srv/git/r") == "http://cb-gate:9418/abs.git"
    assert resolved("git@github.com:me/other.git") == "git@github.com:me/other.git"

    def get(key: str) -> str:
        return subprocess.run(["git", "config", "--get", key], env=env, capture_output=True, text=True).stdout

    assert get("http.http://cb-gate:9418/.proxy") == "\n"
    assert get("user.email") == "agent@claude-bottle.invalid\n"


def test_upstream_env_for_ssh(tmp_path: Path) -> None:
    origin = remotes(tmp_path)[0]
    env = upstream_env(origin, secrets={}, known_hosts=Path("/tmp/git-gate/known_hosts"), base={"PATH": "/bin", "SSH_AUTH_SOCK": "/x", "GIT_ASKPASS": "y"})
    assert env["GIT_SSH_COMMAND"] == (
        f"ssh -F /dev/null -i {tmp_path}/id_deploy -o IdentitiesOnly=yes -o IdentityAgent=none -o BatchMode=yes "
        "-o StrictHostKeyChecking=accept-new -o UserKnownHostsFile=/tmp/git-gate/known_hosts "
        "-o GlobalKnownHostsFile=/dev/null -o UpdateHostKeys=no -o ConnectTimeout=30 "
        "-o ServerAliveInterval=15 -o ServerAliveCountMax=4"
    )
    assert "SSH_AUTH_SOCK" not in env and "GIT_ASKPASS" not in env
    assert env["GIT_TERMINAL_PROMPT"] == "0" and env["PATH"] == "/bin"


def test_upstream_env_for_a_token_sends_basic_auth_scoped_to_the_remote(tmp_path: Path) -> None:
    lab = remotes(tmp_path)[1]
    env = upstream_env(lab, secrets={"LAB_TOKEN": "s3cr3t"}, known_hosts=Path("/k"), base={})
    pairs = {env[f"GIT_CONFIG_KEY_{i}"]: env[f"GIT_CONFIG_VALUE_{i}"] for i in range(int(env["GIT_CONFIG_COUNT"]))}
    header = pairs["http.https://gitlab.example/g/r.git.extraHeader"]
    assert header == "Authorization: Basic " + base64.b64encode(b"oauth2:s3cr3t").decode()
    assert pairs["credential.helper"] == ""
    assert "GIT_SSH_COMMAND" not in env
    pub = remotes(tmp_path)[2]
    env = upstream_env(pub, secrets={}, known_hosts=Path("/k"), base={})
    assert not any("Authorization" in v for v in env.values())


def test_default_token_user(tmp_path: Path) -> None:
    (gh,) = git_remotes_from_json([{"name": "gh", "url": "https://github.com/me/r.git", "token": "${T}"}], where="x", base_dir=tmp_path)
    env = upstream_env(gh, secrets={"T": "tok"}, known_hosts=Path("/k"), base={})
    assert base64.b64encode(b"x-access-token:tok").decode() in env["GIT_CONFIG_VALUE_3"]


@pytest.mark.parametrize(
    ("index", "output", "hint"),
    [
        (1, "fatal: could not read Username for 'https://gitlab.example': terminal prompts disabled",
         "git-gate: gitlab.example did not accept the token ${LAB_TOKEN}: check its value and scopes on the host"),
        (2, "fatal: Authentication failed for 'https://example.org/pub.git/'",
         "git-gate: example.org asks for credentials: give remote pub a token (\"${ENV_NAME}\")"),
        (0, "git@github.com: Permission denied (publickey).", "git-gate: github.com did not accept remote origin's identity_file"),
        (0, "Host key verification failed.", "git-gate: github.com did not show the host key your known_hosts holds for it "
         "(copied into the gate at start); if the change is expected, update ~/.ssh/known_hosts on the host"),
        (0, "ssh: Could not resolve hostname github.com: Name or service not known", "git-gate: the gate cannot resolve github.com"),
        (0, "fatal: the remote end hung up unexpectedly", None),
    ],
)
def test_failure_hints(tmp_path: Path, index: int, output: str, hint: str | None) -> None:
    assert failure_hint(remotes(tmp_path)[index], output) == hint
