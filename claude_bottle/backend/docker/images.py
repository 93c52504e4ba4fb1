"""Image build inputs: content-addressed tags and staged build contexts.

Staged builds (the default agent image, the sidecar image) are tagged with a hash of
everything that goes into their context, so an existing tag *is* a full layer-cache
hit and the launcher can skip `docker build` for it. A bottle's own Dockerfile reads
files from its folder that we do not hash, so it is always built.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path

from .plan import ImageBuild

IMAGES_DIR = Path(__file__).resolve().parent.parent.parent / "images"
PACKAGE_DIR = IMAGES_DIR.parent
AGENT_DOCKERFILE = IMAGES_DIR / "agent.Dockerfile"
SIDECAR_DOCKERFILE = IMAGES_DIR / "sidecar.Dockerfile"


def _package_files() -> Iterator[Path]:
    for p in sorted(PACKAGE_DIR.rglob("*.py")):
        if "__pycache__" not in p.parts:
            yield p


def _digest(parts: Iterator[bytes]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()[:12]


def _ca_bytes(ca_bundle: Path | None) -> bytes:
    return ca_bundle.read_bytes() if ca_bundle else b""


def default_agent_image(ca_bundle: Path | None) -> ImageBuild:
    tag = "claude-bottle-agent:" + _digest(iter([AGENT_DOCKERFILE.read_bytes(), _ca_bytes(ca_bundle)]))
    return ImageBuild(tag=tag, dockerfile=AGENT_DOCKERFILE, ca_bundle=ca_bundle)


def sidecar_image(ca_bundle: Path | None) -> ImageBuild:
    def parts() -> Iterator[bytes]:
        yield SIDECAR_DOCKERFILE.read_bytes()
        yield _ca_bytes(ca_bundle)
        for p in _package_files():
            yield str(p.relative_to(PACKAGE_DIR)).encode()
            yield p.read_bytes()

    return ImageBuild(tag="claude-bottle-sidecar:" + _digest(parts()), dockerfile=SIDECAR_DOCKERFILE,
                      ca_bundle=ca_bundle, include_package=True)


def user_image(dockerfile: Path, *, name: str) -> ImageBuild:
    """A bottle's own Dockerfile (or a per-identity one after a capability change)."""
    tag = f"claude-bottle-agent:{name}-" + _digest(iter([str(dockerfile).encode(), dockerfile.read_bytes()]))
    return ImageBuild(tag=tag, dockerfile=dockerfile, context=dockerfile.parent)


def stage_context(image: ImageBuild, dest: Path) -> Path:
    """Write a staged build's context into `dest`; returns the context folder."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(image.dockerfile, dest / "Dockerfile")
    (dest / "ca-bundle.crt").write_bytes(_ca_bytes(image.ca_bundle))
    if image.include_package:
        shutil.copytree(PACKAGE_DIR, dest / "claude_bottle",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "images"))
    return dest
