"""Declared git remotes: the manifest's `git.remotes` entries, validated.

The same validator reads the gate's own config file inside the sidecar, so the
manifest and the gate can never disagree about what a remote is.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from ..errors import BottleError, json_type
from .keys import identity_file_problem
from .refs import push_pattern_problem
from .urls import RemoteUrl, parse_remote_url, url_spellings

REMOTE_KEYS = ("name", "url", "push", "force", "identity_file", "token")
REMOTE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
SECRET_REF_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class GitRemote:
    """One real remote the gate serves as `/<name>.git`.

    `push` holds ref patterns (`*` matches one or more characters, `/` included);
    `token` is a template such as `"${GH_TOKEN}"`, never a value.
    """

    name: str
    url: str
    push: tuple[str, ...] = ()
    force: bool = False
    identity_file: Path | None = None
    token: str | None = None

    @property
    def token_name(self) -> str | None:
        if self.token is None:
            return None
        m = SECRET_REF_RE.fullmatch(self.token)
        return m.group(1) if m else None

    def parsed_url(self) -> RemoteUrl:
        parsed = parse_remote_url(self.url)
        if isinstance(parsed, str):
            raise BottleError(f"git remote {self.name}: url {self.url!r}: {parsed}")
        return parsed

def git_remotes_from_json(obj: object, *, where: str, base_dir: Path) -> tuple[GitRemote, ...]:
    """Validate a `git.remotes` list; every fault is one BottleError line `where[i].key: problem`.

    `identity_file` is resolved against `base_dir` with `~` expanded; whether it exists is
    checked at start by `check_remote_files`, not here.
    """
    if not isinstance(obj, list):
        raise BottleError(f"{where}: must be a list of remotes, not {json_type(obj)}")
    remotes: list[GitRemote] = []
    seen_names: dict[str, int] = {}
    seen_urls: dict[str, int] = {}  # every spelling of each url
    for i, entry in enumerate(cast(list[object], obj)):
        at = f"{where}[{i}]"
        remote = _remote_from_json(entry, at, base_dir)
        if remote.name in seen_names:
            raise BottleError(f"{at}.name: duplicate name {remote.name!r} (also {where}[{seen_names[remote.name]}])")
        spellings = url_spellings(remote.url)
        clash = next((seen_urls[s] for s in spellings if s in seen_urls), None)
        if clash is not None:
            raise BottleError(f"{at}.url: {remote.url!r} is the same repository as {where}[{clash}]")
        seen_names[remote.name] = i
        seen_urls.update(dict.fromkeys(spellings, i))
        remotes.append(remote)
    return tuple(remotes)


def _remote_from_json(entry: object, at: str, base_dir: Path) -> GitRemote:
    if not isinstance(entry, dict):
        raise BottleError(f"{at}: must be an object with name, url, push, …, not {json_type(entry)}")
    raw = cast(dict[object, object], entry)
    fields = {str(k): v for k, v in raw.items()}
    unknown = sorted(set(fields) - set(REMOTE_KEYS))
    if unknown:
        raise BottleError(f"{at}: unknown key {unknown[0]!r} (known: {', '.join(REMOTE_KEYS)})")
    for key in ("name", "url"):
        if key not in fields:
            raise BottleError(f"{at}.{key}: is required")

    name = _string(fields["name"], f"{at}.name")
    if not REMOTE_NAME_RE.fullmatch(name):
        raise BottleError(
            f"{at}.name: {name!r} is not a valid remote name (letters, digits, '-' and '_', "
            "starting with a letter or digit, at most 63)"
        )
    url = _string(fields["url"], f"{at}.url")
    parsed = parse_remote_url(url)
    if isinstance(parsed, str):
        raise BottleError(f"{at}.url: {url!r}: {parsed}")

    push_obj = fields.get("push", [])
    if not isinstance(push_obj, list):
        raise BottleError(f"{at}.push: must be a list of ref patterns such as \"refs/heads/agent/*\", not {json_type(push_obj)}")
    push: list[str] = []
    for j, pattern in enumerate(cast(list[object], push_obj)):
        pattern = _string(pattern, f"{at}.push[{j}]")
        problem = push_pattern_problem(pattern)
        if problem:
            raise BottleError(f"{at}.push[{j}]: {pattern!r}: {problem}")
        push.append(pattern)

    force = fields.get("force", False)
    if not isinstance(force, bool):
        raise BottleError(f"{at}.force: must be true or false, not {json_type(force)}")

    identity_file: Path | None = None
    token: str | None = None
    if "identity_file" in fields:
        raw_path = _string(fields["identity_file"], f"{at}.identity_file")
        if parsed.scheme != "ssh":
            raise BottleError(f"{at}.identity_file: only for ssh urls; an https remote takes a token (\"${{ENV_NAME}}\")")
        try:
            identity_file = (base_dir / Path(raw_path).expanduser()).resolve()
        except (RuntimeError, ValueError) as e:  # ~unknownuser, NUL, unencodable
            raise BottleError(f"{at}.identity_file: not a usable path: {' '.join(str(e).split())}") from None
    if "token" in fields:
        token = _string(fields["token"], f"{at}.token")
        if parsed.scheme != "https":
            raise BottleError(f"{at}.token: only for https urls; an ssh remote takes an identity_file")
        if not SECRET_REF_RE.fullmatch(token):
            raise BottleError(f"{at}.token: must be a reference \"${{ENV_NAME}}\" to a host environment variable, not a literal")
    if parsed.scheme == "ssh" and identity_file is None:
        raise BottleError(f"{at}.identity_file: is required for an ssh url (the private key the gate pushes and fetches with)")
    return GitRemote(name=name, url=url, push=tuple(push), force=force, identity_file=identity_file, token=token)


def secret_names(remotes: Iterable[GitRemote]) -> tuple[str, ...]:
    """The host environment variables the remotes' tokens name, first use first."""
    names: list[str] = []
    for remote in remotes:
        name = remote.token_name
        if name is not None and name not in names:
            names.append(name)
    return tuple(names)


def check_remote_files(remotes: Iterable[GitRemote]) -> None:
    """Raise BottleError naming the first identity_file that is missing or unusable."""
    for remote in remotes:
        if remote.identity_file is not None:
            problem = identity_file_problem(remote.identity_file)
            if problem:
                raise BottleError(f"git remote {remote.name}: identity_file {remote.identity_file}: {problem}")

def _string(v: object, where: str) -> str:
    if not isinstance(v, str):
        raise BottleError(f"{where}: must be a string, not {json_type(v)}")
    if not v.strip():
        raise BottleError(f"{where}: must not be empty")
    return v


