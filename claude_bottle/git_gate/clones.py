"""The gate's clones of the real remotes, and how they are kept in step with them.

Each declared remote has a bare clone `<state>/repos/<name>.git` whose pre-receive
hook (`hook.py`) checks and forwards pushes. `refresh` mirrors the real remote's
branches and tags into it (pruning what the real remote dropped) and points its HEAD
where the real remote's points, so a clone through the gate checks out the same branch.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from .remotes import GitRemote
from .upstream import GateConfig, failure_hint, upstream_env, upstream_url

_UPSTREAM_TIMEOUT = 3600.0
_MAX_ERROR_LINES = 20


class Gate:
    """The gate's clones and how they are kept in step with the real remotes."""

    def __init__(self, config: GateConfig, state_dir: Path, secrets: dict[str, str]) -> None:
        self.config = config
        self.secrets = secrets
        self.repos_dir = state_dir / "repos"
        self.known_hosts = state_dir / "known_hosts"
        self.remotes = {r.name: r for r in config.remotes}
        # Held while a clone's refs change: a refresh, or a push from hook to finish.
        self.locks = {name: threading.Lock() for name in self.remotes}
        self._head_synced: set[str] = set()

    def repo(self, remote: GitRemote) -> Path:
        return self.repos_dir / f"{remote.name}.git"

    def prepare(self, config_path: Path) -> None:
        """Create the clones (empty until the first fetch) and their pre-receive hooks."""
        self.repos_dir.mkdir(parents=True, exist_ok=True)
        if not self.known_hosts.exists():
            try:
                shutil.copyfile(self.config.known_hosts, self.known_hosts)
            except FileNotFoundError:
                self.known_hosts.touch()
        package_root = Path(__file__).resolve().parents[2]
        for remote in self.config.remotes:
            repo = self.repo(remote)
            if not (repo / "HEAD").exists():
                _git("init", "--bare", "--quiet", str(repo))
            for key, value in (
                ("http.receivepack", "true"),
                ("http.uploadpack", "true"),
                ("uploadpack.allowFilter", "true"),
                # receive-pack checks this after the hook has already pushed upstream.
                ("receive.denyDeleteCurrent", "ignore"),
                ("core.logAllRefUpdates", "false"),
            ):
                _git("-C", str(repo), "config", key, value)
            hook = repo / "hooks" / "pre-receive"
            hook.parent.mkdir(exist_ok=True)
            command = shlex.join([
                sys.executable, "-m", "claude_bottle.git_gate.hook", "--config", str(config_path),
                "--remote", remote.name, "--known-hosts", str(self.known_hosts),
            ])
            hook.write_text(f"#!/bin/sh\nPYTHONPATH={shlex.quote(str(package_root))} exec {command}\n")
            hook.chmod(0o755)

    def upstream_env(self, remote: GitRemote) -> dict[str, str]:
        return upstream_env(remote, secrets=self.secrets, known_hosts=self.known_hosts, base=os.environ)

    def refresh(self, remote: GitRemote) -> str | None:
        """Fetch the real remote's branches and tags into the clone (pruning what it
        dropped); None on success, else the text to show the agent."""
        repo, url, env = self.repo(remote), upstream_url(remote), self.upstream_env(remote)
        fetch = _run_upstream(
            ["git", "fetch", "--prune", "--quiet", "--no-write-fetch-head", url,
             "+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"],
            cwd=repo, env=env,
        )
        if fetch.returncode != 0:
            lines = [ln for ln in fetch.stderr.splitlines() if ln.strip()][:_MAX_ERROR_LINES]
            hint = failure_hint(remote, fetch.stderr)
            return "\n".join([f"git-gate: cannot fetch {remote.name} from {remote.url}:", *lines, *([hint] if hint else [])]) + "\n"
        head_ok = _git("-C", str(repo), "rev-parse", "--verify", "--quiet", "HEAD", check=False) == 0
        if remote.name not in self._head_synced or not head_ok:
            self._sync_head(remote, url, env)
        return None

    def _sync_head(self, remote: GitRemote, url: str, env: dict[str, str]) -> None:
        """Point the clone's HEAD where the real remote's does, so a clone checks out
        the same default branch."""
        ls = _run_upstream(["git", "ls-remote", "--symref", url, "HEAD"], cwd=self.repo(remote), env=env)
        for line in ls.stdout.splitlines():
            target, _, name = line.partition("\t")
            if name == "HEAD" and target.startswith("ref: refs/heads/"):
                _git("-C", str(self.repo(remote)), "symbolic-ref", "HEAD", target[len("ref: "):])
                self._head_synced.add(remote.name)
                return


def _git(*args: str, check: bool = True) -> int:
    proc = subprocess.run(["git", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.returncode


def _run_upstream(args: list[str], *, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=_UPSTREAM_TIMEOUT)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(args, -1, "", f"no answer within {_UPSTREAM_TIMEOUT:g} s")

