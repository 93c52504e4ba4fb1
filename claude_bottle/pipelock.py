"""The egress sidecar: pipelock's image, command line and configuration.

pipelock (github.com/luckyPipewrench/pipelock) is the bottle's only way to the
outside. It runs in strict mode, where nothing but `api_allowlist` is reachable,
as a forward proxy: CONNECT tunnels for HTTPS and absolute-URI requests for plain
HTTP. Its config parser rejects unknown keys, so this module writes only the keys
listed in DESIGN.md ("pipelock facts"), as JSON (YAML is a superset of JSON).

Egress patterns (the bottle's `egress.allow`) are what pipelock matches against
the host of a request:
- an exact host name: labels of letters, digits and hyphens (1-63 characters, no
  leading or trailing hyphen), separated by dots; case does not matter
  (pipelock compares case-insensitively) and the config is written lowercase;
- `*.example.com`: the wildcard only as the whole first label, covering every
  subdomain and the apex itself, and at least two labels after it, so that
  `*.com` cannot open a whole top-level domain;
- an IPv4 address: pipelock compares the request's host as written, so a client
  connecting to an address literal is matched by it. IPv6 literals are refused
  (their colons read as a port); no scheme, port, path or whitespace anywhere.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from typing import cast

from .errors import BottleError

# The latest 2.x release published to GHCR (GoReleaser tags images with the
# version without its "v"). DESIGN's facts were checked against 2.x sources.
PIPELOCK_IMAGE_DEFAULT = "ghcr.io/luckypipewrench/pipelock:2.8.0"
PIPELOCK_IMAGE_ENV = "CLAUDE_BOTTLE_PIPELOCK_IMAGE"
PIPELOCK_ENTRYPOINT = "/pipelock"
PIPELOCK_PORT = 8888
PIPELOCK_CONFIG_DIR = "/config"
PIPELOCK_CONFIG_PATH = f"{PIPELOCK_CONFIG_DIR}/pipelock.yaml"

# pipelock's strict mode refuses an empty allowlist; `.invalid` never resolves.
EMPTY_ALLOWLIST_PLACEHOLDER = "none.invalid"

# Long enough that an hour-long API stream or a slow download is never cut:
# older 2.x releases bound a tunnel's whole lifetime by max_tunnel_seconds.
TUNNEL_MAX_SECONDS = 86_400
TUNNEL_IDLE_SECONDS = 3_600
REQUEST_TIMEOUT_SECONDS = 3_600
# pipelock's per-domain rate limit defaults to 60 a minute; package installs
# through the proxy make far more requests than that to one registry.
MAX_REQUESTS_PER_MINUTE = 6_000

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def pipelock_image(environ: Mapping[str, str]) -> str:
    """The pipelock image to run: $CLAUDE_BOTTLE_PIPELOCK_IMAGE, else the pinned one."""
    return environ.get(PIPELOCK_IMAGE_ENV, "").strip() or PIPELOCK_IMAGE_DEFAULT


def pipelock_command() -> tuple[str, ...]:
    """Arguments after the image's `/pipelock` entrypoint."""
    return ("run", "--config", PIPELOCK_CONFIG_PATH, "--listen", f"0.0.0.0:{PIPELOCK_PORT}")


def pipelock_health_url(host: str, port: int = PIPELOCK_PORT) -> str:
    """pipelock's `/health` on its listen port: 200 and `"status": "healthy"` when ready."""
    return f"http://{host}:{port}/health"


def pipelock_healthcheck_command() -> tuple[str, ...]:
    """For `docker exec <pipelock> ...`: exits 0 once `/health` answers 200.

    The official image is built FROM scratch (no shell, no curl); this is the
    same command its Dockerfile HEALTHCHECK runs.
    """
    return (PIPELOCK_ENTRYPOINT, "healthcheck", "--addr", f"127.0.0.1:{PIPELOCK_PORT}")


def pipelock_block_message(host: str, *, connect: bool = True) -> str:
    """The body pipelock answers with (status 403, plus a newline) for a host outside the allowlist.

    CONNECT gets `CONNECT blocked: ...`; a plain-HTTP absolute-URI request gets
    `blocked: ...`.
    """
    reason = f"domain not in allowlist: {host}"
    return f"CONNECT blocked: {reason}" if connect else f"blocked: {reason}"


def egress_pattern_problem(pattern: object) -> str | None:
    """None if `pattern` is a valid egress pattern, else a short text saying what is wrong.

    The text does not repeat the pattern; the caller names where it came from.
    """
    if not isinstance(pattern, str):
        return f"must be a string, not {type(pattern).__name__}"
    if not pattern:
        return "is empty"
    if any(ch.isspace() for ch in pattern):
        return "contains whitespace"
    if not pattern.isascii():
        return "has non-ASCII characters (write an international name in its xn-- form)"
    if "://" in pattern:
        return "has a scheme; write the host name only (example.com)"
    if "/" in pattern:
        return "has a path; write the host name only (example.com)"
    if ":" in pattern:
        if _is_ipv6(pattern.strip("[]")):
            return "is an IPv6 address; only host names and IPv4 addresses are supported"
        return "has a port; pipelock matches host names, every port is allowed"
    if len(pattern) > 253:
        return "is longer than 253 characters"
    name = pattern.lower()
    wildcard = name.startswith("*.")
    if wildcard:
        name = name[2:]
    if "*" in name:
        return "has a wildcard that is not the whole first label (write *.example.com)"
    labels = name.split(".")
    if labels[-1].isdigit():
        if wildcard or not _is_ipv4(name):
            return "is neither a host name nor an IPv4 address"
        return None
    for label in labels:
        if not label:
            return "has an empty label (a leading, trailing or doubled dot)"
        if not _LABEL.fullmatch(label):
            return (
                f"has an invalid label {label!r} (letters, digits and inner hyphens, 1-63 characters)"
            )
    if wildcard and len(labels) < 2:
        return "has a wildcard over a single label; write at least *.example.com"
    return None


def pipelock_config(allow: Iterable[str]) -> dict[str, object]:
    """pipelock's configuration for a bottle whose `egress.allow` is `allow`."""
    hosts = normalise_allowlist(allow)
    return {
        "version": 1,
        "mode": "strict",
        "api_allowlist": list(hosts) or [EMPTY_ALLOWLIST_PLACEHOLDER],
        "fetch_proxy": {
            "listen": f"0.0.0.0:{PIPELOCK_PORT}",
            "timeout_seconds": REQUEST_TIMEOUT_SECONDS,
            "monitoring": {"max_requests_per_minute": MAX_REQUESTS_PER_MINUTE},
        },
        "forward_proxy": {
            "enabled": True,
            "max_tunnel_seconds": TUNNEL_MAX_SECONDS,
            "idle_timeout_seconds": TUNNEL_IDLE_SECONDS,
            "sni_verification": True,
        },
        "logging": {
            "format": "json",
            "output": "stdout",
            "include_allowed": True,
            "include_blocked": True,
        },
        "sentry": {"enabled": False},
    }


def render_pipelock_config(allow: Iterable[str]) -> str:
    """The text of /config/pipelock.yaml: JSON, which pipelock's YAML parser reads."""
    return json.dumps(pipelock_config(allow), indent=2) + "\n"


def normalise_allowlist(allow: Iterable[str]) -> tuple[str, ...]:
    """Validated, lowercased, sorted and de-duplicated egress patterns."""
    if isinstance(allow, str):
        raise BottleError(f"egress allowlist must be a list of host names, not the string {allow!r}")
    hosts: set[str] = set()
    for pattern in allow:
        problem = egress_pattern_problem(pattern)
        if problem is not None:
            raise BottleError(f"egress pattern {pattern!r} {problem}")
        hosts.add(pattern.lower())
    return tuple(sorted(hosts))


def allowlist_from_config(text: str) -> tuple[str, ...]:
    """The egress allowlist a pipelock config (as rendered here) grants.

    The inverse of render_pipelock_config: the `none.invalid` placeholder reads
    back as an empty allowlist. Anything else that is not such a config is a
    BottleError.
    """
    try:
        data: object = json.loads(text)
    except ValueError as exc:
        raise BottleError(f"pipelock config is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BottleError("pipelock config is not a JSON object")
    config = cast("dict[str, object]", data)
    if config.get("mode") != "strict":
        raise BottleError(f"pipelock config has mode {config.get('mode')!r}, expected 'strict'")
    entries = config.get("api_allowlist")
    if not isinstance(entries, list):
        raise BottleError("pipelock config has no api_allowlist list")
    patterns: list[str] = []
    for entry in cast("list[object]", entries):
        problem = egress_pattern_problem(entry)
        if problem is not None:
            raise BottleError(f"pipelock config api_allowlist entry {entry!r} {problem}")
        host = str(entry).lower()
        if host != EMPTY_ALLOWLIST_PLACEHOLDER:
            patterns.append(host)
    return normalise_allowlist(patterns)


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def pipelock_container(identity: str) -> str:
    return f"claude-bottle-{identity}-pipelock"


def read_live_allowlist(identity: str) -> tuple[str, ...]:
    from .backend.docker.backend import container_read_file

    return allowlist_from_config(container_read_file(pipelock_container(identity), PIPELOCK_CONFIG_PATH).decode())


def render_allowlist(hosts: Iterable[str]) -> str:
    """One host a line: what the dashboard shows, diffs and lets an operator edit."""
    return "".join(f"{h}\n" for h in hosts)


def parse_allowlist(text: str) -> tuple[str, ...]:
    """The inverse of render_allowlist; blank lines and `#` comments are ignored."""
    hosts = [line.strip() for line in text.splitlines()]
    return normalise_allowlist(h for h in hosts if h and not h.startswith("#"))


def apply_allowlist_change(identity: str, new_hosts: Iterable[str]) -> tuple[str, str]:
    """Make `new_hosts` the live allowlist of bottle `identity`; returns (before, after)
    as one-host-a-line text. pipelock reloads on SIGHUP (adding hosts never counts as
    weakening); on a failed signal the old config is put back."""
    from .backend.docker.backend import container_read_file, container_running, replace_and_reload

    hosts = normalise_allowlist(new_hosts)
    container = pipelock_container(identity)
    if not container_running(container):
        raise BottleError(f"bottle {identity} has no running pipelock ({container})")
    old_config = container_read_file(container, PIPELOCK_CONFIG_PATH)
    before = allowlist_from_config(old_config.decode())
    replace_and_reload(container, {PIPELOCK_CONFIG_PATH: (render_pipelock_config(hosts).encode(), 0o644)},
                       {PIPELOCK_CONFIG_PATH: (old_config, 0o644)}, owner=(0, 0))
    return render_allowlist(before), render_allowlist(hosts)
