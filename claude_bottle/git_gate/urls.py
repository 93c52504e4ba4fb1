"""Remote urls: the ssh and https spellings the gate accepts, and their equivalents."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

_USER_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
_HOST_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]")
# Conservative on purpose: these strings reach ssh and curl, and the agent's config.
_PATH_RE = re.compile(r"[A-Za-z0-9._~/@+%=-]+")
_SCP_RE = re.compile(r"(?P<user>[^@/:]+)@(?P<host>\[[^\]/]+\]|[^/:\[\]]+):(?P<path>.+)")


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
