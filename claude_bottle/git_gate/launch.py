"""What the launcher needs to start a git gate and point the agent at it.

Host side only: builds the files copied into the gate container before it starts,
its command, and the agent's `~/.gitconfig`. Nothing here runs docker.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from ..errors import BottleError
from .known_hosts import default_known_hosts_files, matching_known_hosts
from .keys import identity_file_problem
from .remotes import GitRemote
from .urls import url_spellings

GATE_PORT = 9418
GATE_USER = "65534:65534"  # nobody:nogroup, present in every Debian image
GATE_HEALTH_PATH = "/healthz"

CONFIG_DIR = "/etc/git-gate"
CONFIG_PATH = f"{CONFIG_DIR}/config.json"
SECRETS_PATH = f"{CONFIG_DIR}/secrets.json"
KNOWN_HOSTS_PATH = f"{CONFIG_DIR}/known_hosts"
KEYS_DIR = f"{CONFIG_DIR}/keys"
STATE_DIR = "/tmp/git-gate"  # the gate's clones; /tmp is writable by any user

DEFAULT_AGENT_NAME = "claude-bottle agent"
DEFAULT_AGENT_EMAIL = "agent@claude-bottle.invalid"


def gate_command(*, listen: str = f"0.0.0.0:{GATE_PORT}") -> tuple[str, ...]:
    return (
        "python3", "-m", "claude_bottle.git_gate",
        "--config", CONFIG_PATH, "--listen", listen, "--state", STATE_DIR,
    )


def key_path(remote: GitRemote) -> str:
    """Where a remote's private key lives inside the gate container."""
    return f"{KEYS_DIR}/{remote.name}"


def gate_config_json(remotes: Iterable[GitRemote]) -> str:
    """The gate's config: the remotes as the manifest declared them, with container
    paths for keys and `${NAME}` references for tokens. No secret value, no host path."""
    entries: list[dict[str, object]] = []
    for r in remotes:
        entry: dict[str, object] = {"name": r.name, "url": r.url, "push": list(r.push), "force": r.force}
        if r.identity_file is not None:
            entry["identity_file"] = key_path(r)
        if r.token is not None:
            entry["token"] = r.token
        entries.append(entry)
    config = {"version": 1, "secrets_file": SECRETS_PATH, "known_hosts": KNOWN_HOSTS_PATH, "remotes": entries}
    return json.dumps(config, indent=2) + "\n"


def gate_files(
    remotes: Sequence[GitRemote],
    secrets: Mapping[str, str],
    *,
    known_hosts_files: Sequence[Path] | None = None,
) -> dict[str, tuple[bytes, int]]:
    """Container path -> (content, mode) of every file to copy into the gate before it starts.

    Private keys and the secrets file are 0600 and must be owned by GATE_USER. The
    known_hosts file holds the host user's lines for the declared ssh hosts (see
    `known_hosts_files`, default `~/.ssh/known_hosts` and `/etc/ssh/ssh_known_hosts`).
    """
    files: dict[str, tuple[bytes, int]] = {CONFIG_PATH: (gate_config_json(remotes).encode(), 0o644)}
    needed: dict[str, str] = {}
    ssh_names: list[str] = []
    for r in remotes:
        if r.identity_file is not None:
            problem = identity_file_problem(r.identity_file)
            if problem:
                raise BottleError(f"git remote {r.name}: identity_file {r.identity_file}: {problem}")
            files[key_path(r)] = (r.identity_file.read_bytes(), 0o600)
            ssh_names.extend(r.parsed_url().host_key_names())
        name = r.token_name
        if name is not None:
            if name not in secrets:
                raise BottleError(f"git remote {r.name}: secret ${{{name}}} is not set in the environment")
            needed[name] = secrets[name]
    files[SECRETS_PATH] = (json.dumps(needed).encode(), 0o600)
    sources = default_known_hosts_files() if known_hosts_files is None else known_hosts_files
    files[KNOWN_HOSTS_PATH] = (matching_known_hosts(sources, ssh_names).encode(), 0o644)
    return files


def agent_git_config(
    remotes: Iterable[GitRemote],
    gate_base_url: str,
    *,
    user_name: str = DEFAULT_AGENT_NAME,
    user_email: str = DEFAULT_AGENT_EMAIL,
) -> str:
    """The agent's `~/.gitconfig`: each declared url (in each spelling git treats the
    same) is rewritten to `<gate>/<name>.git`, the gate is reached without the egress
    proxy, and commits get a default identity (a repository's own config still wins)."""
    base = gate_base_url.rstrip("/")
    lines = [
        "# Written by claude-bottle: the declared remotes are served by the git gate.",
        "[user]",
        f"\tname = {_quote(user_name)}",
        f"\temail = {_quote(user_email)}",
        f"[http {_quote(base + '/')}]",
        '\tproxy = ""',
    ]
    for r in remotes:
        lines.append(f"[url {_quote(f'{base}/{r.name}.git')}]")
        lines.extend(f"\tinsteadOf = {_quote(s)}" for s in url_spellings(r.url))
    return "\n".join(lines) + "\n"


def _quote(value: str) -> str:
    if any(c in value for c in "\n\r\0"):
        raise BottleError(f"git config value {value!r} must be a single line")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
