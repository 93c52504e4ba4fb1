"""Images of the test doubles, built with the docker CLI when missing or out of date.

Each image carries a label with a hash of its build folder; a run whose sources
match the label reuses the image, so repeated test runs cost one `docker image
inspect`. Use the returned tag, e.g. as $CLAUDE_BOTTLE_PIPELOCK_IMAGE.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

DOUBLES_DIR = Path(__file__).resolve().parent
PIPELOCK_DOUBLE_IMAGE = "claude-bottle-test/pipelock-double:latest"
FAKE_ANTHROPIC_IMAGE = "claude-bottle-test/fake-anthropic:latest"
SOURCE_HASH_LABEL = "cbtest.source-hash"
BUILD_TIMEOUT_SECONDS = 900


def ensure_pipelock_double_image() -> str:
    """The pipelock TEST DOUBLE's image tag, built from tests/doubles/pipelock if needed."""
    return ensure_image(PIPELOCK_DOUBLE_IMAGE, DOUBLES_DIR / "pipelock")


def ensure_fake_anthropic_image() -> str:
    """The fake Anthropic API's image tag, built from tests/doubles/anthropic if needed."""
    return ensure_image(FAKE_ANTHROPIC_IMAGE, DOUBLES_DIR / "anthropic")


def ensure_image(tag: str, folder: Path) -> str:
    want = source_hash(folder)
    inspect = subprocess.run(
        ("docker", "image", "inspect", "--format", f'{{{{ index .Config.Labels "{SOURCE_HASH_LABEL}" }}}}', tag),
        capture_output=True,
        text=True,
    )
    if inspect.returncode == 0 and inspect.stdout.strip() == want:
        return tag
    build = subprocess.run(
        ("docker", "build", "--label", f"{SOURCE_HASH_LABEL}={want}", "--tag", tag, str(folder)),
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_SECONDS,
    )
    if build.returncode != 0:
        tail = "\n".join((build.stdout + build.stderr).strip().splitlines()[-20:])
        raise RuntimeError(f"docker build of {tag} from {folder} failed (exit {build.returncode}):\n{tail}")
    return tag


def source_hash(folder: Path) -> str:
    """A hash of every file's relative path and content under `folder` (caches excluded)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()
