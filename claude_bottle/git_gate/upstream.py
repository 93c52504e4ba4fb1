"""Inside the gate: its config, and how git talks to the real remotes.

Credentials reach git only through the environment of the git processes the gate
starts (GIT_SSH_COMMAND naming the key file, GIT_CONFIG_* carrying the auth header),
never through a command line, which any process could read in /proc.
"""

from __future__ import annotations

import base64
import json
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from ..errors import BottleError
from .remotes import GitRemote, git_remotes_from_json

DEFAULT_TOKEN_USER = "x-access-token"  # GitHub's; GitLab and Gitea accept any user with a token

# Ambient settings that could redirect or prompt; the gate sets its own.
_DROPPED_ENV = (
    "GIT_ASKPASS", "SSH_ASKPASS", "GIT_SSH", "GIT_SSH_COMMAND", "GIT_SSH_VARIANT",
    "GIT_PROXY_COMMAND", "GIT_CONFIG_PARAMETERS", "GIT_CONFIG_COUNT", "SSH_AUTH_SOCK",
)


@dataclass(frozen=True)
class GateConfig:
    remotes: tuple[GitRemote, ...]
    secrets_file: Path
    known_hosts: Path  # the seed the launcher copied in; the gate works on a copy

    def remote(self, name: str) -> GitRemote:
        for r in self.remotes:
            if r.name == name:
                return r
        raise BottleError(f"no remote named {name!r} in the gate's config")


def load_gate_config(path: Path) -> GateConfig:
    try:
        obj: object = json.loads(path.read_text())
    except OSError as e:
        raise BottleError(f"{path}: cannot read the gate's config ({e.strerror or e})") from None
    except ValueError as e:
        raise BottleError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise BottleError(f"{path}: must be a JSON object")
    config = cast(dict[str, object], obj)
    if config.get("version") != 1:
        raise BottleError(f"{path}.version: must be 1")
    paths: dict[str, Path] = {}
    for key in ("secrets_file", "known_hosts"):
        value = config.get(key)
        if not isinstance(value, str) or not value.startswith("/"):
            raise BottleError(f"{path}.{key}: must be an absolute path")
        paths[key] = Path(value)
    remotes = git_remotes_from_json(config.get("remotes"), where=f"{path}: remotes", base_dir=path.parent)
    return GateConfig(remotes, paths["secrets_file"], paths["known_hosts"])


def load_secrets(config: GateConfig) -> dict[str, str]:
    """The token values by name; every token a remote names must be there."""
    try:
        obj: object = json.loads(config.secrets_file.read_text())
    except OSError as e:
        raise BottleError(f"{config.secrets_file}: cannot read the secrets file ({e.strerror or e})") from None
    except ValueError:
        raise BottleError(f"{config.secrets_file}: not valid JSON") from None
    if not isinstance(obj, dict) or not all(
        isinstance(v, str) for v in cast(dict[str, object], obj).values()
    ):
        raise BottleError(f"{config.secrets_file}: must map names to strings")
    secrets = cast(dict[str, str], obj)
    for r in config.remotes:
        name = r.token_name
        if name is not None and name not in secrets:
            raise BottleError(f"remote {r.name}: secret ${{{name}}} is missing from {config.secrets_file}")
    return secrets


def upstream_url(remote: GitRemote) -> str:
    """The url git contacts: the declared one, minus any https user (it goes in the header)."""
    parsed = remote.parsed_url()
    return parsed.without_user() if parsed.scheme == "https" else remote.url


def upstream_env(
    remote: GitRemote,
    *,
    secrets: Mapping[str, str],
    known_hosts: Path,
    base: Mapping[str, str],
) -> dict[str, str]:
    """The environment for a git process that fetches from or pushes to `remote`.

    `base` is kept (a pre-receive hook's quarantine variables must reach `git push`),
    minus anything that could prompt or pick another key.
    """
    env = {k: v for k, v in base.items() if k not in _DROPPED_ENV and not k.startswith("GIT_CONFIG_KEY_")}
    env.update({
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_ALLOW_PROTOCOL": "ssh:https",
    })
    config: list[tuple[str, str]] = [
        ("credential.helper", ""),
        ("http.lowSpeedLimit", "1000"),
        ("http.lowSpeedTime", "60"),
    ]
    parsed = remote.parsed_url()
    if parsed.scheme == "ssh":
        if remote.identity_file is None:
            raise BottleError(f"remote {remote.name}: an ssh remote needs an identity_file")
        env["GIT_SSH_COMMAND"] = ssh_command(remote.identity_file, known_hosts)
        env["GIT_SSH_VARIANT"] = "ssh"
    name = remote.token_name
    if name is not None:
        user = parsed.user or DEFAULT_TOKEN_USER
        basic = base64.b64encode(f"{user}:{secrets[name]}".encode()).decode()
        # Scoped to the remote's url so a redirect elsewhere never carries it.
        config.append((f"http.{upstream_url(remote)}.extraHeader", f"Authorization: Basic {basic}"))
    env["GIT_CONFIG_COUNT"] = str(len(config))
    for i, (key, value) in enumerate(config):
        env[f"GIT_CONFIG_KEY_{i}"] = key
        env[f"GIT_CONFIG_VALUE_{i}"] = value
    return env


def ssh_command(identity_file: Path, known_hosts: Path) -> str:
    """One key, no agent, no prompts, no user ssh config; unknown hosts are learnt once
    (accept-new), a known host whose key changed is refused."""
    options = (
        "IdentitiesOnly=yes", "IdentityAgent=none", "BatchMode=yes",
        "StrictHostKeyChecking=accept-new", f"UserKnownHostsFile={known_hosts}",
        "GlobalKnownHostsFile=/dev/null", "UpdateHostKeys=no",
        "ConnectTimeout=30", "ServerAliveInterval=15", "ServerAliveCountMax=4",
    )
    words = ["ssh", "-F", "/dev/null", "-i", str(identity_file)]
    for option in options:
        words += ["-o", option]
    return shlex.join(words)


def failure_hint(remote: GitRemote, output: str) -> str | None:
    """One line telling the person what to fix, for the failures git words obscurely."""
    parsed = remote.parsed_url()
    name = remote.token_name
    if "terminal prompts disabled" in output or "Authentication failed" in output:
        if name is not None:
            return f"git-gate: {parsed.host} did not accept the token ${{{name}}}: check its value and scopes on the host"
        return f"git-gate: {parsed.host} asks for credentials: give remote {remote.name} a token (\"${{ENV_NAME}}\")"
    if "Permission denied (publickey" in output:
        return f"git-gate: {parsed.host} did not accept remote {remote.name}'s identity_file"
    if "Host key verification failed" in output:
        return (
            f"git-gate: {parsed.host} did not show the host key your known_hosts holds for it (copied into the gate "
            "at start); if the change is expected, update ~/.ssh/known_hosts on the host"
        )
    if "Could not resolve host" in output:
        return f"git-gate: the gate cannot resolve {parsed.host}"
    return None
