"""Declared git remotes: the manifest's `git.remotes` entries, validated.

The same validator reads the gate's own config file inside the sidecar, so the
manifest and the gate can never disagree about what a remote is.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast
from urllib.parse import urlsplit

from ..errors import BottleError
from .refs import push_pattern_problem

REMOTE_KEYS = ("name", "url", "push", "force", "identity_file", "token")
REMOTE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
SECRET_REF_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

_USER_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
_HOST_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]")
# Conservative on purpose: these strings reach ssh and curl, and the agent's config.
_PATH_RE = re.compile(r"[A-Za-z0-9._~/@+%=-]+")
_SCP_RE = re.compile(r"(?P<user>[^@/:]+)@(?P<host>\[[^\]/]+\]|[^/:\[\]]+):(?P<path>.+)")


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


@dataclass(frozen=True)
class RemoteUrl:
    scheme: Literal["ssh", "https"]
    scp_like: bool  # `user@host:path` rather than `ssh://user@host/path`
    user: str | None
    host: str
    port: int | None
    path: str  # as git sends it: scp-like paths may be relative to the remote home

    def without_user(self) -> str:
        """The URL git contacts for https (the user goes into the auth header instead)."""
        port = f":{self.port}" if self.port is not None else ""
        return f"https://{self.host}{port}{self.path}"

    def host_key_names(self) -> tuple[str, ...]:
        """How this host is written in known_hosts: `host`, or `[host]:port` off port 22."""
        host = self.host.strip("[]")
        if self.port is None or self.port == 22:
            return (host,)
        return (f"[{host}]:{self.port}",)


def parse_remote_url(url: str) -> RemoteUrl | str:
    """The parsed URL, or a one-phrase problem."""
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        return "must not contain spaces or control characters"
    if "://" not in url:
        m = _SCP_RE.fullmatch(url)
        if m is None:
            if re.fullmatch(r"[^@/:]+:.+", url):
                return "an ssh url needs a user, e.g. git@host:path"
            return "must be an ssh url (git@host:path, ssh://git@host/path) or an https url"
        user, host, path = m.group("user"), m.group("host"), m.group("path")
        problem = _user_host_path_problem(user, host, path)
        return problem or RemoteUrl("ssh", True, user, host, None, path)
    scheme = url.split("://", 1)[0].lower()
    if scheme not in ("ssh", "https"):
        return f"scheme {scheme}:// is not supported: use ssh (git@host:path, ssh://…) or https"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        return f"not a valid url ({e})"
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        return "must not have a query or fragment"
    if parts.password is not None:
        return "must not contain a password: give the token as `token` (\"${ENV_NAME}\")"
    host = parts.netloc.rsplit("@", 1)[-1]
    if port is not None:
        host = host[: -len(f":{port}")] if host.endswith(f":{port}") else host
        if port == 0:
            return "port must be 1-65535"
    user = parts.username
    if scheme == "ssh" and user is None:
        return "an ssh url needs a user, e.g. ssh://git@host/path"
    if not parts.path or parts.path == "/":
        return "must name a repository path"
    problem = _user_host_path_problem(user, host, parts.path)
    if problem:
        return problem
    return RemoteUrl("ssh" if scheme == "ssh" else "https", False, user, host, port, parts.path)


def url_spellings(url: str) -> tuple[str, ...]:
    """The ways a repository's remote may spell this url that git resolves identically.

    The url itself, the same with or without a `.git` suffix, and for an absolute path
    on the default ssh port both `user@host:/path` and `ssh://user@host/path`. Relative
    scp-like paths (`git@host:me/repo`) have no ssh:// twin: they are relative to the
    remote home, `ssh://host/me/repo` is not.
    """
    parsed = parse_remote_url(url)
    bases = [url]
    if not isinstance(parsed, str) and parsed.scheme == "ssh" and parsed.path.startswith("/"):
        if parsed.scp_like:
            bases.append(f"ssh://{parsed.user}@{parsed.host}{parsed.path}")
        elif parsed.port in (None, 22):
            bases.append(f"{parsed.user}@{parsed.host}:{parsed.path}")
    out: list[str] = []
    for base in bases:
        twin = base[: -len(".git")] if base.endswith(".git") else f"{base}.git"
        out.append(base)
        if not base.endswith("/") and not twin.endswith((":", "/")):
            out.append(twin)
    return tuple(dict.fromkeys(out))


def _user_host_path_problem(user: str | None, host: str, path: str) -> str | None:
    if user is not None and not _USER_RE.fullmatch(user):
        return f"user {user!r} is not valid (letters, digits, '.', '_', '-')"
    if not _HOST_RE.fullmatch(host):
        return f"host {host!r} is not a valid host name"
    if path.startswith("-") or not _PATH_RE.fullmatch(path):
        return f"path {path!r} may hold only letters, digits and . _ ~ / @ + % = -"
    return None


def git_remotes_from_json(obj: object, *, where: str, base_dir: Path) -> tuple[GitRemote, ...]:
    """Validate a `git.remotes` list; every fault is one BottleError line `where[i].key: problem`.

    `identity_file` is resolved against `base_dir` with `~` expanded; whether it exists is
    checked at start by `check_remote_files`, not here.
    """
    if not isinstance(obj, list):
        raise BottleError(f"{where}: must be a list of remotes, not {_json_type(obj)}")
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
        raise BottleError(f"{at}: must be an object with name, url, push, …, not {_json_type(entry)}")
    raw = cast(dict[object, object], entry)
    fields = {str(k): v for k, v in raw.items()}
    unknown = sorted(set(fields) - set(REMOTE_KEYS))
    if unknown:
        raise BottleError(f"{at}.{unknown[0]}: unknown key (known: {', '.join(REMOTE_KEYS)})")
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
        raise BottleError(f"{at}.push: must be a list of ref patterns such as \"refs/heads/agent/*\", not {_json_type(push_obj)}")
    push: list[str] = []
    for j, pattern in enumerate(cast(list[object], push_obj)):
        pattern = _string(pattern, f"{at}.push[{j}]")
        problem = push_pattern_problem(pattern)
        if problem:
            raise BottleError(f"{at}.push[{j}]: {pattern!r}: {problem}")
        push.append(pattern)

    force = fields.get("force", False)
    if not isinstance(force, bool):
        raise BottleError(f"{at}.force: must be true or false, not {_json_type(force)}")

    identity_file: Path | None = None
    token: str | None = None
    if "identity_file" in fields:
        raw_path = _string(fields["identity_file"], f"{at}.identity_file")
        if parsed.scheme != "ssh":
            raise BottleError(f"{at}.identity_file: only for ssh urls; an https remote takes a token (\"${{ENV_NAME}}\")")
        identity_file = (base_dir / Path(raw_path).expanduser()).resolve()
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


def identity_file_problem(path: Path) -> str | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return "no such file"
    except IsADirectoryError:
        return "is a directory, not a private key"
    except PermissionError:
        return "not readable (permission denied)"
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    return private_key_problem(data)


def private_key_problem(data: bytes) -> str | None:
    """Why the gate could not use this key in batch mode, or None."""
    text = data.decode("ascii", errors="replace").strip()
    if text.startswith(("ssh-", "ecdsa-", "sk-")):
        return "is a public key; give the private key (the file without .pub)"
    if not text.startswith("-----BEGIN ") or "PRIVATE KEY-----" not in text.splitlines()[0]:
        return "is not a private key in OpenSSH or PEM format"
    if "ENCRYPTED" in text:
        return "is protected by a passphrase; the gate runs unattended and needs a key without one"
    if text.startswith("-----BEGIN OPENSSH PRIVATE KEY-----"):
        body = "".join(line for line in text.splitlines()[1:] if not line.startswith("-----"))
        try:
            blob = base64.b64decode(body, validate=False)
        except (binascii.Error, ValueError):
            return "is not a valid OpenSSH private key"
        magic = b"openssh-key-v1\0"
        if not blob.startswith(magic) or len(blob) < len(magic) + 4:
            return "is not a valid OpenSSH private key"
        size = int.from_bytes(blob[len(magic):len(magic) + 4], "big")
        cipher = blob[len(magic) + 4:len(magic) + 4 + size]
        if cipher != b"none":
            return "is protected by a passphrase; the gate runs unattended and needs a key without one"
    return None


def _string(v: object, where: str) -> str:
    if not isinstance(v, str):
        raise BottleError(f"{where}: must be a string, not {_json_type(v)}")
    if not v.strip():
        raise BottleError(f"{where}: must not be empty")
    return v


def _json_type(v: object) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "a list"
    return "an object" if isinstance(v, dict) else type(v).__name__
