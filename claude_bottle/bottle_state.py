"""Per-launch identity and the state kept under $CLAUDE_BOTTLE_HOME.

    state/<identity>/metadata.json   what resume needs to rebuild the same bottle
    state/<identity>/Dockerfile      only after an approved capability change
    state/<identity>/transcript/     the agent's session files, snapshotted at teardown
"""

from __future__ import annotations

import json
import os
import re
import secrets
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import cast

from .errors import BottleError
from .fsutil import atomic_write_text, parse_json

BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"
IDENTITY_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}-[0-9a-z]{5}")


def bottle_home() -> Path:
    return Path(os.environ.get("CLAUDE_BOTTLE_HOME") or Path.home() / ".claude-bottle").expanduser()


def bottle_identity(agent_name: str) -> str:
    """`<agent>-<5 random base36 chars>`: two starts in one directory never collide."""
    return f"{agent_name}-{''.join(secrets.choice(BASE36) for _ in range(5))}"


def new_session_id() -> str:
    return str(uuid.uuid4())


def check_identity(identity: str) -> str:
    """Identities become paths and container names: refuse anything else."""
    if not IDENTITY_RE.fullmatch(identity):
        raise BottleError(f"{identity!r} is not a bottle identity (expected <agent>-<5 letters/digits>, see `list`)")
    return identity


def state_dir(identity: str) -> Path:
    return bottle_home() / "state" / check_identity(identity)


def metadata_path(identity: str) -> Path:
    return state_dir(identity) / "metadata.json"


def queue_dir(identity: str) -> Path:
    return bottle_home() / "queue" / check_identity(identity)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class BottleMetadata:
    identity: str
    agent_name: str
    cwd: str
    copy_cwd: bool
    started_at: str
    session_id: str
    manifest: str | None  # path of the manifest used, None for the built-in default

    @classmethod
    def from_json(cls, obj: object, *, where: str) -> BottleMetadata:
        if not isinstance(obj, dict):
            raise BottleError(f"{where}: not a metadata object")
        d: dict[str, object] = {str(k): v for k, v in cast(dict[object, object], obj).items()}
        str_keys = ("identity", "agent_name", "cwd", "started_at", "session_id")
        for key in str_keys:
            if not isinstance(d.get(key), str) or not d[key]:
                raise BottleError(f"{where}: key {key!r} is missing or not a string")
        if not isinstance(d.get("copy_cwd"), bool):
            raise BottleError(f"{where}: key 'copy_cwd' is missing or not a boolean")
        manifest = d.get("manifest")
        if manifest is not None and not isinstance(manifest, str):
            raise BottleError(f"{where}: key 'manifest' must be a string or null")
        return cls(
            identity=check_identity(str(d["identity"])), agent_name=str(d["agent_name"]),
            cwd=str(d["cwd"]), copy_cwd=bool(d["copy_cwd"]), started_at=str(d["started_at"]),
            session_id=str(d["session_id"]), manifest=manifest,
        )


def write_metadata(meta: BottleMetadata) -> Path:
    path = metadata_path(meta.identity)
    atomic_write_text(path, json.dumps(asdict(meta), indent=2) + "\n")
    return path


def read_metadata(identity: str) -> BottleMetadata:
    path = metadata_path(identity)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise BottleError(f"no bottle state for {identity!r} (looked in {path.parent}); `list` shows resumable identities") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BottleError(f"{path}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    meta = BottleMetadata.from_json(parse_json(text, source=str(path)), where=str(path))
    if meta.identity != identity:
        raise BottleError(f"{path}: records identity {meta.identity!r}, expected {identity!r}")
    return meta


def list_states() -> list[BottleMetadata]:
    """Every readable state/<identity>/metadata.json, oldest first; unreadable ones skipped."""
    root = bottle_home() / "state"
    found: list[BottleMetadata] = []
    if not root.is_dir():
        return found
    for entry in sorted(root.iterdir()):
        if IDENTITY_RE.fullmatch(entry.name) and (entry / "metadata.json").is_file():
            try:
                found.append(read_metadata(entry.name))
            except BottleError:
                continue
    return sorted(found, key=lambda m: m.started_at)
