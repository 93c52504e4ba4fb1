"""The proxy's live configuration: routes with their upstreams and rendered credentials."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

from ..errors import BottleError
from . import CredProxyRoute, MissingSecretError, parse_routes_file, render_value
from ._http import REQUEST_DROP, field_lines


@dataclass(frozen=True)
class Upstream:
    scheme: str
    host: str
    port: int
    host_header: bytes
    path_prefix: bytes  # without a trailing slash
    pool_key: str  # scheme://host:port, which connections can be shared by

    @staticmethod
    def from_url(url: str) -> Upstream:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
        return Upstream(
            scheme=parts.scheme, host=host, port=port, host_header=parts.netloc.encode("ascii"),
            path_prefix=parts.path.rstrip("/").encode("ascii"), pool_key=f"{parts.scheme}://{host}:{port}",
        )


@dataclass(frozen=True)
class LiveRoute:
    route: CredProxyRoute
    upstream: Upstream
    drop_fields: re.Pattern[bytes]  # what the client sent that is not forwarded
    credential_line: bytes | None  # "Header: value\r\n", rendered once per (re)load
    missing_secret: str | None


@dataclass(frozen=True)
class ProxyConfig:
    routes: Mapping[str, LiveRoute]

    @staticmethod
    def build(routes: Sequence[CredProxyRoute], secrets: Mapping[str, str]) -> ProxyConfig:
        live: dict[str, LiveRoute] = {}
        for r in routes:
            try:
                line, missing = f"{r.header}: {render_value(r.value, secrets)}\r\n".encode("latin-1"), None
            except MissingSecretError as e:
                line, missing = None, e.name
            drop = field_lines(REQUEST_DROP | {r.header.lower().encode("ascii")})
            live[r.name] = LiveRoute(r, Upstream.from_url(r.upstream), drop, line, missing)
        return ProxyConfig(live)

    def missing_secrets(self) -> list[str]:
        return sorted({lr.missing_secret for lr in self.routes.values() if lr.missing_secret})


def read_secrets_file(path: Path) -> dict[str, str]:
    """`{"NAME": "value"}`; errors name the file and key, never a value."""
    try:
        obj: object = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise BottleError(f"{path}: cannot read: {e.strerror or e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BottleError(f"{path}: not valid JSON (expected {{\"NAME\": \"value\", ...}})") from None
    if not isinstance(obj, dict):
        raise BottleError(f"{path}: must be a JSON object of NAME: value")
    secrets: dict[str, str] = {}
    for key, value in cast("dict[str, object]", obj).items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise BottleError(f"{path}: {key!r} is not a valid variable name")
        if not isinstance(value, str):
            raise BottleError(f"{path}: {key}: must be a string")
        secrets[key] = value
    return secrets


def load_config(routes_path: Path, secrets_path: Path | None, environ: Mapping[str, str]) -> ProxyConfig:
    """Routes from `routes_path`; secret values from `environ`, overridden by `secrets_path`."""
    try:
        text = routes_path.read_text(encoding="utf-8")
    except OSError as e:
        raise BottleError(f"{routes_path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise BottleError(f"{routes_path}: not UTF-8 text") from None
    routes = parse_routes_file(text, where=str(routes_path))
    secrets = dict(environ)
    if secrets_path is not None:
        secrets.update(read_secrets_file(secrets_path))
    return ProxyConfig.build(routes, secrets)
