"""What a bottle backend does, independent of how (Docker today).

A launch is two phases: `prepare(spec)` resolves everything into a plan and creates
nothing, so the plan can be shown (preflight, `--dry-run`) before any resource
exists; `launch(plan)` creates the bottle and tears it down on exit.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from ..errors import BottleError
from ..manifest import Manifest


@dataclass(frozen=True)
class BottleSpec:
    """The user's intent; nothing here is resolved against a backend yet."""

    manifest: Manifest
    agent_name: str
    cwd: Path
    copy_cwd: bool = False
    claude_args: tuple[str, ...] = ()
    remote_control: bool = False
    identity: str | None = None  # set by resume to pin the identity
    session_id: str | None = None  # set by resume: the conversation to continue
    dockerfile_override: Path | None = None  # state/<identity>/Dockerfile after a capability change
    transcript_dir: Path | None = None  # restored into the agent before it starts


@dataclass(frozen=True)
class ActiveBottle:
    identity: str
    agent_name: str
    status: str
    created: str


class RunningBottle(ABC):
    """A launched bottle, alive inside `launch(plan)`'s with-block."""

    identity: str

    @abstractmethod
    def attach(self) -> int:
        """Run the agent (claude) attached to this terminal; returns its exit code."""


class BottlePlan(ABC):
    identity: str
    session_id: str

    @abstractmethod
    def print(self, *, remote_control: bool) -> None:
        """The human-readable preflight: everything that will be created, never a secret."""

    @abstractmethod
    def to_dict(self) -> dict[str, object]:
        """The same as JSON-serialisable data (`start --dry-run --format=json`)."""


class BottleCleanupPlan(ABC):
    @abstractmethod
    def print(self) -> None: ...

    @property
    @abstractmethod
    def empty(self) -> bool: ...


class BottleBackend(ABC):
    @abstractmethod
    def prepare(self, spec: BottleSpec) -> BottlePlan: ...

    @abstractmethod
    def launch(self, plan: BottlePlan) -> AbstractContextManager[RunningBottle]: ...

    @abstractmethod
    def list_active(self) -> list[ActiveBottle]: ...

    @abstractmethod
    def prepare_cleanup(self) -> BottleCleanupPlan: ...

    @abstractmethod
    def cleanup(self, plan: BottleCleanupPlan) -> None: ...


def _docker_backend() -> BottleBackend:
    from .docker.backend import DockerBottleBackend

    return DockerBottleBackend()


_BACKENDS = {"docker": _docker_backend}


def get_bottle_backend(name: str | None = None) -> BottleBackend:
    chosen = name or os.environ.get("CLAUDE_BOTTLE_BACKEND") or "docker"
    try:
        factory = _BACKENDS[chosen]
    except KeyError:
        raise BottleError(
            f"CLAUDE_BOTTLE_BACKEND={chosen!r} is not a known backend (known: {', '.join(sorted(_BACKENDS))})"
        ) from None
    return factory()
