"""cred-proxy routes: which upstreams the agent may reach, and which header carries which secret.

A route maps `http://cred-proxy:PORT/<name>/...` to `<upstream>/...` with one header set
from a template such as `"Bearer ${CLAUDE_CODE_OAUTH_TOKEN}"`. Routes files and manifests
hold only `${NAME}` references; the values live in the host's environment and reach the
sidecar in a separate secrets file. The server itself is in `__main__.py`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

from ..errors import BottleError, json_type

ROLE_ANTHROPIC_BASE_URL = "anthropic-base-url"
PLACEHOLDER_TOKEN = "claude-bottle-placeholder-not-a-secret"

ROUTE_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
SECRET_REF_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
HTTP_TOKEN_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")

ROUTE_KEYS = ("name", "upstream", "header", "value", "role")
_REQUIRED_KEYS = ROUTE_KEYS[:4]
# The proxy owns framing and the connection; a route setting these would break or smuggle.
FORBIDDEN_HEADERS = frozenset({
    "host", "content-length", "transfer-encoding", "connection",
    "keep-alive", "proxy-connection", "te", "trailer", "upgrade",
})
# Which credential variable the agent's Claude Code reads, by the header it is sent in.
_PLACEHOLDER_ENV_BY_HEADER = {"authorization": "CLAUDE_CODE_OAUTH_TOKEN", "x-api-key": "ANTHROPIC_API_KEY"}


@dataclass(frozen=True)
class CredProxyRoute:
    name: str
    upstream: str
    header: str
    value: str
    role: str | None = None

    def to_json(self) -> dict[str, str]:
        obj = {"name": self.name, "upstream": self.upstream, "header": self.header, "value": self.value}
        if self.role is not None:
            obj["role"] = self.role
        return obj


class MissingSecretError(BottleError):
    """A route's template names a variable the proxy has no value for."""

    def __init__(self, name: str) -> None:
        super().__init__(f"secret ${{{name}}} is not set")
        self.name = name


def upstream_problem(upstream: str) -> str | None:
    """Why `upstream` is not a usable upstream URL, or None when it is."""
    if any(not ("\x21" <= c <= "\x7e") for c in upstream):
        return "must not contain spaces, control or non-ASCII characters"
    if not upstream.lower().startswith(("http://", "https://")):
        return "must be an absolute http:// or https:// URL"
    if "?" in upstream:
        return "must not have a query (?...)"
    if "#" in upstream:
        return "must not have a fragment (#...)"
    try:
        parts = urlsplit(upstream)
        parts.hostname  # noqa: B018 -- raises on a malformed [IPv6] literal
    except ValueError:
        return "has a malformed host"
    if "@" in parts.netloc:
        return "must not contain userinfo (user:password@); put credentials in the header value"
    if not parts.hostname:
        return "must name a host"
    try:
        parts.port
    except ValueError:
        return "has an invalid port"
    if any(seg in (".", "..") for seg in parts.path.split("/")):
        return "must not contain . or .. path segments"
    return None


def value_problem(value: str) -> str | None:
    """Why a header template is unusable, or None when it is fine."""
    if any(not ("\x20" <= c <= "\x7e" or c == "\t") for c in value):
        return "must contain only printable ASCII characters"
    for m in re.finditer(r"\$\{", value):
        if not SECRET_REF_RE.match(value, m.start()):
            return "has a malformed reference: write ${NAME} with NAME matching [A-Za-z_][A-Za-z0-9_]*"
    if not SECRET_REF_RE.search(value):
        return ("must reference a secret as ${NAME} (e.g. \"Bearer ${API_TOKEN}\"); "
                "never write a literal secret in a routes file")
    return None


def _route_from_json(obj: object, *, where: str) -> CredProxyRoute:
    if not isinstance(obj, dict):
        raise BottleError(f"{where}: must be an object, not {json_type(obj)}")
    route = cast("dict[str, object]", obj)  # JSON object keys are always strings
    unknown = sorted(set(route) - set(ROUTE_KEYS))
    if unknown:
        raise BottleError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(ROUTE_KEYS)})")
    for key in _REQUIRED_KEYS:
        if key not in route:
            raise BottleError(f"{where}: missing key {key!r}")
        if not isinstance(route[key], str):
            raise BottleError(f"{where}.{key}: must be a non-empty string, not {json_type(route[key])}")
        if not route[key]:
            raise BottleError(f"{where}.{key}: must be a non-empty string")
    name, upstream, header, value = (str(route[k]) for k in _REQUIRED_KEYS)

    if name.startswith("_"):
        raise BottleError(f"{where}.name: {name!r}: names starting with '_' are reserved for the proxy")
    if not ROUTE_NAME_RE.fullmatch(name):
        raise BottleError(
            f"{where}.name: {name!r} must match [a-z0-9][a-z0-9_-]{{0,62}} (it becomes a URL path segment)"
        )
    problem = upstream_problem(upstream)
    if problem:
        raise BottleError(f"{where}.upstream: {problem}")
    if not HTTP_TOKEN_RE.fullmatch(header):
        raise BottleError(f"{where}.header: {header!r} is not a valid HTTP header name")
    if header.lower() in FORBIDDEN_HEADERS:
        raise BottleError(f"{where}.header: {header!r} is managed by the proxy and cannot be set by a route")
    problem = value_problem(value)
    if problem:
        raise BottleError(f"{where}.value: {problem}")

    role = route.get("role")
    if role is not None and role != ROLE_ANTHROPIC_BASE_URL:
        shown = repr(role) if isinstance(role, str) else json_type(role)
        raise BottleError(f"{where}.role: {shown}: must be {ROLE_ANTHROPIC_BASE_URL!r} or absent")
    if role is not None and header.lower() not in _PLACEHOLDER_ENV_BY_HEADER:
        raise BottleError(
            f"{where}.header: a {ROLE_ANTHROPIC_BASE_URL!r} route must use header Authorization or x-api-key"
        )
    return CredProxyRoute(name=name, upstream=upstream, header=header, value=value,
                          role=ROLE_ANTHROPIC_BASE_URL if role is not None else None)


def routes_from_json(obj: object, *, where: str) -> tuple[CredProxyRoute, ...]:
    """Validate a JSON list of route objects; every fault is one BottleError line under `where`."""
    if not isinstance(obj, list):
        raise BottleError(f"{where}: must be a list of route objects, not {json_type(obj)}")
    routes: list[CredProxyRoute] = []
    first_index: dict[str, int] = {}
    role_index: int | None = None
    for i, item in enumerate(cast("list[object]", obj)):
        route = _route_from_json(item, where=f"{where}[{i}]")
        if route.name in first_index:
            raise BottleError(
                f"{where}[{i}].name: duplicate route name {route.name!r} (also {where}[{first_index[route.name]}])"
            )
        first_index[route.name] = i
        if route.role is not None:
            if role_index is not None:
                raise BottleError(
                    f"{where}[{i}].role: only one route may have role {route.role!r} "
                    f"({where}[{role_index}] already does)"
                )
            role_index = i
        routes.append(route)
    return tuple(routes)


def _reject_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    obj: dict[str, object] = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate key {key!r}")
        obj[key] = value
    return obj


def parse_routes_file(text: str, *, where: str) -> tuple[CredProxyRoute, ...]:
    """Parse a whole routes.json, `{"routes": [...]}`."""
    try:
        obj: object = json.loads(text, object_pairs_hook=_reject_duplicate_keys)
    except json.JSONDecodeError as e:
        raise BottleError(f"{where}: not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except ValueError as e:
        raise BottleError(f"{where}: {' '.join(str(e).split())}") from None
    except RecursionError:
        raise BottleError(f"{where}: nested too deeply to be a routes file") from None
    if not isinstance(obj, dict):
        raise BottleError(f"{where}: must be a JSON object with key 'routes', not {json_type(obj)}")
    top = cast("dict[str, object]", obj)
    unknown = sorted(set(top) - {"routes"})
    if unknown:
        raise BottleError(f"{where}: unknown key {unknown[0]!r} (known: routes)")
    if "routes" not in top:
        raise BottleError(f"{where}: missing key 'routes'")
    return routes_from_json(top["routes"], where=f"{where}: routes")


def render_routes_file(routes: Iterable[CredProxyRoute]) -> str:
    return json.dumps({"routes": [r.to_json() for r in routes]}, indent=2) + "\n"


def template_secret_names(value: str) -> tuple[str, ...]:
    return tuple(SECRET_REF_RE.findall(value))


def secret_names(routes: Iterable[CredProxyRoute]) -> tuple[str, ...]:
    """Every variable the routes reference, sorted and unique."""
    return tuple(sorted({name for r in routes for name in template_secret_names(r.value)}))


def secret_value_problem(value: str) -> str | None:
    """Why a secret cannot go into an HTTP header (never quoting the value)."""
    if not value:
        return "is empty"
    if any(c in value for c in "\r\n\0"):
        return "contains a line break or NUL, which would split the header"
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return "contains characters that cannot be sent in an HTTP header"
    return None


def resolve_secrets(names: Iterable[str], environ: Mapping[str, str], *, where: str) -> dict[str, str]:
    """Look up each referenced variable; the first missing or unusable one is an error naming it."""
    resolved: dict[str, str] = {}
    for name in names:
        if name not in environ:
            raise BottleError(f"{where}: environment variable {name} is not set (referenced as ${{{name}}})")
        problem = secret_value_problem(environ[name])
        if problem:
            raise BottleError(f"{where}: environment variable {name} {problem}")
        resolved[name] = environ[name]
    return resolved


def render_value(template: str, secrets: Mapping[str, str]) -> str:
    """Substitute every `${NAME}`; raises MissingSecretError naming the first unset or unusable one."""
    for name in template_secret_names(template):
        if name not in secrets or secret_value_problem(secrets[name]):
            raise MissingSecretError(name)
    return SECRET_REF_RE.sub(lambda m: secrets[m.group(1)], template)


def agent_env_for_routes(routes: Iterable[CredProxyRoute], proxy_url: str) -> dict[str, str]:
    """The agent's Anthropic settings: a base URL through the proxy and a placeholder credential."""
    for route in routes:
        if route.role == ROLE_ANTHROPIC_BASE_URL:
            env = {"ANTHROPIC_BASE_URL": f"{proxy_url.rstrip('/')}/{route.name}"}
            placeholder_var = _PLACEHOLDER_ENV_BY_HEADER.get(route.header.lower())
            if placeholder_var:
                env[placeholder_var] = PLACEHOLDER_TOKEN
            return env
    return {}
