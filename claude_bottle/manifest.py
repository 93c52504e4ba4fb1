"""The manifest: which agents exist and which bottle (sandbox) each runs in.

Loaded from `--manifest PATH`, else `$CLAUDE_BOTTLE_MANIFEST`, else
`~/claude-bottle.json`, else the built-in default. Every fault is one BottleError
line naming the file, the entry and the key, so a user can fix it without reading
Python.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from .cred_proxy import CredProxyRoute, routes_from_json
from .cred_proxy import secret_names as route_secret_names
from .errors import BottleError, json_type
from .fsutil import parse_json
from .git_gate import GitRemote, git_remotes_from_json
from .git_gate import secret_names as remote_secret_names
from .pipelock import egress_pattern_problem

BUILTIN = "<built-in default manifest>"
NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# The launcher owns these in the agent's environment; a bottle setting them would
# silently break the egress path or the credential placeholder.
RESERVED_ENV = frozenset({
    "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "NO_PROXY", "no_proxy",
    "ANTHROPIC_BASE_URL", "CLAUDE_CODE_OAUTH_TOKEN", "ANTHROPIC_API_KEY", "HOME",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "NODE_EXTRA_CA_CERTS",
})

DEFAULT_MANIFEST: dict[str, object] = {
    "bottles": {
        "default": {
            "egress": {"allow": []},
            "cred_proxy": {"routes": [{
                "name": "anthropic", "role": "anthropic-base-url",
                "upstream": "https://api.anthropic.com",
                "header": "Authorization", "value": "Bearer ${CLAUDE_CODE_OAUTH_TOKEN}",
            }]},
        },
    },
    "agents": {"claude": {"bottle": "default"}},
}


@dataclass(frozen=True)
class BottleEgress:
    allow: tuple[str, ...] = ()


@dataclass(frozen=True)
class Bottle:
    name: str
    egress: BottleEgress = BottleEgress()
    routes: tuple[CredProxyRoute, ...] = ()
    remotes: tuple[GitRemote, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    dockerfile: Path | None = None
    ca_bundle: Path | None = None

    def secret_names(self) -> tuple[str, ...]:
        return tuple(sorted(set(route_secret_names(self.routes)) | set(remote_secret_names(self.remotes))))

    def hosts(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.egress.allow)))


@dataclass(frozen=True)
class Agent:
    name: str
    bottle: str
    prompt: Path | None = None
    skills: tuple[Path, ...] = ()
    model: str | None = None
    skip_permissions: bool = True


@dataclass(frozen=True)
class Manifest:
    source: str
    bottles: Mapping[str, Bottle] = field(default_factory=dict[str, Bottle])
    agents: Mapping[str, Agent] = field(default_factory=dict[str, Agent])

    def agent(self, name: str) -> Agent:
        try:
            return self.agents[name]
        except KeyError:
            known = ", ".join(sorted(self.agents)) or "none"
            raise BottleError(f"{self.source}: no agent named {name!r} (agents: {known})") from None

    def bottle_for(self, agent: Agent) -> Bottle:
        return self.bottles[agent.bottle]

    @classmethod
    def from_json(cls, obj: object, *, source: str, base_dir: Path) -> Manifest:
        top = _object(obj, source)
        _no_unknown(top, {"bottles", "agents"}, source)
        bottles_obj = _object(top.get("bottles", {}), f"{source}: bottles")
        agents_obj = _object(top.get("agents", {}), f"{source}: agents")
        bottles = {
            name: _bottle(name, b, source=source, base_dir=base_dir)
            for name, b in _named(bottles_obj, f"{source}: bottles")
        }
        agents = {
            name: _agent(name, a, source=source, base_dir=base_dir, bottles=bottles)
            for name, a in _named(agents_obj, f"{source}: agents")
        }
        return cls(source=source, bottles=bottles, agents=agents)


def load_manifest(path: str | None = None, *, environ: Mapping[str, str] | None = None) -> Manifest:
    """Find and load the manifest in the documented lookup order."""
    env = os.environ if environ is None else environ
    chosen = path or env.get("CLAUDE_BOTTLE_MANIFEST")
    if chosen:
        return load_manifest_file(Path(chosen).expanduser())
    home_manifest = Path(env.get("HOME", str(Path.home()))) / "claude-bottle.json"
    if home_manifest.exists():
        return load_manifest_file(home_manifest)
    return Manifest.from_json(DEFAULT_MANIFEST, source=BUILTIN, base_dir=Path.cwd())


def load_manifest_file(path: Path) -> Manifest:
    source = str(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise BottleError(f"{source}: manifest not found") from None
    except IsADirectoryError:
        raise BottleError(f"{source}: is a directory, not a manifest file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BottleError(f"{source}: cannot read manifest: {getattr(e, 'strerror', None) or e}") from None
    obj = parse_json(text, source=source)
    return Manifest.from_json(obj, source=source, base_dir=path.parent.resolve())


def resolve_secrets(bottle: Bottle, environ: Mapping[str, str], *, source: str) -> dict[str, str]:
    """Read every `${NAME}` the bottle references from the host environment."""
    missing = [n for n in bottle.secret_names() if not environ.get(n)]
    if missing:
        raise BottleError(
            f"{source}: bottles.{bottle.name} needs ${{{missing[0]}}}, which is not set in the "
            f"environment (export {missing[0]}=… and start again)"
        )
    return {n: environ[n] for n in bottle.secret_names()}


def check_files(agent: Agent, bottle: Bottle, *, source: str) -> None:
    """The files the manifest names must exist before anything is created."""
    wanted: list[tuple[str, Path | None, bool]] = [
        (f"agents.{agent.name}.prompt", agent.prompt, False),
        (f"bottles.{bottle.name}.dockerfile", bottle.dockerfile, False),
        (f"bottles.{bottle.name}.ca_bundle", bottle.ca_bundle, False),
    ]
    wanted += [(f"agents.{agent.name}.skills[{i}]", p, True) for i, p in enumerate(agent.skills)]
    for where, p, is_dir in wanted:
        if p is None:
            continue
        if is_dir and not p.is_dir():
            raise BottleError(f"{source}: {where}: {p} is not a directory")
        if not is_dir and not p.is_file():
            raise BottleError(f"{source}: {where}: {p} does not exist or is not a file")
        if not os.access(p, os.R_OK):
            raise BottleError(f"{source}: {where}: {p} is not readable")


# --- validation helpers -------------------------------------------------------


def _object(obj: object, where: str) -> dict[str, object]:
    if not isinstance(obj, dict):
        raise BottleError(f"{where}: must be a JSON object, not {json_type(obj)}")
    return {str(k): v for k, v in cast(dict[object, object], obj).items()}


def _named(obj: dict[str, object], where: str) -> list[tuple[str, object]]:
    for name in obj:
        if not NAME_RE.fullmatch(name):
            raise BottleError(
                f"{where}: {name!r} is not a valid name (lowercase letters, digits, '-' and '_', "
                "starting with a letter or digit, at most 40)"
            )
    return list(obj.items())


def _no_unknown(obj: Mapping[str, object], known: set[str], where: str) -> None:
    unknown = sorted(set(obj) - known)
    if unknown:
        raise BottleError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")




def _str(v: object, where: str) -> str:
    if not isinstance(v, str) or not v.strip():
        raise BottleError(f"{where}: must be a non-empty string, not {json_type(v) if not isinstance(v, str) else 'an empty string'}")
    return v


def _str_list(v: object, where: str) -> list[str]:
    if not isinstance(v, list):
        raise BottleError(f"{where}: must be a list of strings, not {json_type(v)}")
    return [_str(item, f"{where}[{i}]") for i, item in enumerate(v)]  # pyright: ignore[reportUnknownArgumentType, reportUnknownVariableType]


def _path(v: object, where: str, base_dir: Path) -> Path:
    try:
        return (base_dir / Path(_str(v, where)).expanduser()).resolve()
    except (RuntimeError, ValueError) as e:  # ~unknownuser, an embedded NUL, unencodable text
        raise BottleError(f"{where}: not a usable path: {' '.join(str(e).split())}") from None


def _bottle(name: str, obj: object, *, source: str, base_dir: Path) -> Bottle:
    where = f"{source}: bottles.{name}"
    b = _object(obj, where)
    if "runtime" in b:
        raise BottleError(
            f"{where}.runtime: not a manifest key any more: the runtime is auto-detected "
            "(gVisor's runsc when the daemon has it, else runc); remove the key"
        )
    _no_unknown(b, {"egress", "cred_proxy", "git", "env", "dockerfile", "ca_bundle"}, where)

    egress_obj = _object(b.get("egress", {}), f"{where}.egress")
    _no_unknown(egress_obj, {"allow"}, f"{where}.egress")
    allow = _str_list(egress_obj.get("allow", []), f"{where}.egress.allow")
    for i, host in enumerate(allow):
        problem = egress_pattern_problem(host)
        if problem:
            raise BottleError(f"{where}.egress.allow[{i}]: {host!r}: {problem}")

    cp_obj = _object(b.get("cred_proxy", {}), f"{where}.cred_proxy")
    _no_unknown(cp_obj, {"routes"}, f"{where}.cred_proxy")
    routes = routes_from_json(cp_obj.get("routes", []), where=f"{where}.cred_proxy.routes")

    git_obj = _object(b.get("git", {}), f"{where}.git")
    _no_unknown(git_obj, {"remotes"}, f"{where}.git")
    remotes = git_remotes_from_json(git_obj.get("remotes", []), where=f"{where}.git.remotes", base_dir=base_dir)

    env_obj = _object(b.get("env", {}), f"{where}.env")
    env: list[tuple[str, str]] = []
    for key, value in env_obj.items():
        if not ENV_NAME_RE.fullmatch(key):
            raise BottleError(f"{where}.env: {key!r} is not a valid environment variable name")
        if key in RESERVED_ENV:
            raise BottleError(f"{where}.env.{key}: set by claude-bottle itself and cannot be overridden")
        if not isinstance(value, str):
            raise BottleError(f"{where}.env.{key}: must be a string, not {json_type(value)}")
        if not value.isprintable():
            raise BottleError(f"{where}.env.{key}: must not contain control characters")
        if "${" in value:
            raise BottleError(
                f"{where}.env.{key}: env values reach the agent verbatim, so they cannot reference "
                "secrets; put the secret in a cred_proxy route instead"
            )
        env.append((key, value))

    dockerfile = _path(b["dockerfile"], f"{where}.dockerfile", base_dir) if "dockerfile" in b else None
    ca_bundle = _path(b["ca_bundle"], f"{where}.ca_bundle", base_dir) if "ca_bundle" in b else None
    return Bottle(
        name=name, egress=BottleEgress(tuple(allow)), routes=routes, remotes=remotes,
        env=tuple(env), dockerfile=dockerfile, ca_bundle=ca_bundle,
    )


def _agent(name: str, obj: object, *, source: str, base_dir: Path, bottles: Mapping[str, Bottle]) -> Agent:
    where = f"{source}: agents.{name}"
    a = _object(obj, where)
    _no_unknown(a, {"bottle", "prompt", "skills", "model", "skip_permissions"}, where)
    if "bottle" not in a:
        raise BottleError(f"{where}: missing key 'bottle' (the name of the bottle it runs in)")
    bottle = _str(a["bottle"], f"{where}.bottle")
    if bottle not in bottles:
        known = ", ".join(sorted(bottles)) or "none defined"
        raise BottleError(f"{where}.bottle: names bottle {bottle!r}, which is not defined (bottles: {known})")
    prompt = _path(a["prompt"], f"{where}.prompt", base_dir) if "prompt" in a else None
    skills = tuple(_path(s, f"{where}.skills[{i}]", base_dir)
                   for i, s in enumerate(_str_list(a.get("skills", []), f"{where}.skills")))
    model = _str(a["model"], f"{where}.model") if "model" in a else None
    skip = a.get("skip_permissions", True)
    if not isinstance(skip, bool):
        raise BottleError(f"{where}.skip_permissions: must be true or false, not {json_type(skip)}")
    return Agent(name=name, bottle=bottle, prompt=prompt, skills=skills, model=model, skip_permissions=skip)
