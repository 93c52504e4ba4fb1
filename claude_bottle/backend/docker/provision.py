"""The files a bottle's containers get, packed as tar streams for `docker cp` / `tar -x`.

Files travel as tar on stdin, never as bind mounts of secrets or as command-line
arguments, so no value shows in `docker inspect` or `ps`.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from ...manifest import Agent

AGENT_HOME = PurePosixPath("/home/claude")
BOTTLE_DIR = AGENT_HOME / ".claude-bottle"
PROMPT_PATH = BOTTLE_DIR / "prompt.md"
MCP_CONFIG_PATH = BOTTLE_DIR / "mcp.json"
SKILLS_DIR = AGENT_HOME / ".claude" / "skills"
# Claude Code keeps each session as ~/.claude/projects/<mangled cwd>/<session-id>.jsonl.
PROJECTS_DIR = AGENT_HOME / ".claude" / "projects"


def tar_files(files: Mapping[str, tuple[bytes, int]], *, owner: tuple[int, int]) -> bytes:
    """A tar of absolute container paths -> (content, mode), parents included, owned by `owner`."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        add_files(tar, files, owner)
    return buf.getvalue()


def add_files(tar: tarfile.TarFile, files: Mapping[str, tuple[bytes, int]], owner: tuple[int, int]) -> None:
    uid, gid = owner
    dirs: set[PurePosixPath] = set()
    for path in sorted(files):
        for parent in reversed(PurePosixPath(path).parents):
            if str(parent) != "/" and parent not in dirs:
                dirs.add(parent)
                info = tarfile.TarInfo(str(parent).lstrip("/"))
                # Top-level folders (/etc, /home, /run) stay root's: docker cp applies
                # the header's owner to folders that already exist.
                top = len(parent.parts) == 2
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                info.uid, info.gid = (0, 0) if top else (uid, gid)
                tar.addfile(info)
        content, mode = files[path]
        info = tarfile.TarInfo(path.lstrip("/"))
        info.size, info.mode, info.uid, info.gid = len(content), mode, uid, gid
        tar.addfile(info, io.BytesIO(content))


def add_tree(tar: tarfile.TarFile, src: Path, dest: PurePosixPath, owner: tuple[int, int]) -> None:
    """Add a host folder as `dest`, owned by `owner`; symlinks are kept as links, never followed."""
    uid, gid = owner

    def retag(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        if not (info.isfile() or info.isdir() or info.issym()):
            return None  # devices, fifos and sockets have no business in a bottle
        info.uid, info.gid, info.uname, info.gname = uid, gid, "", ""
        return info

    tar.add(str(src), arcname=str(dest).lstrip("/"), recursive=True, filter=retag)


def agent_tar(
    *,
    agent: Agent,
    owner: tuple[int, int],
    files: Mapping[str, tuple[bytes, int]],
    copy_cwd: Path | None,
    transcript: Path | None,
) -> bytes:
    """Everything the agent's home needs, plus the copied working tree and a restored transcript."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        if agent.prompt is not None:
            files = {**files, str(PROMPT_PATH): (agent.prompt.read_bytes(), 0o644)}
        add_files(tar, files, owner)
        for skill in agent.skills:
            add_tree(tar, skill, SKILLS_DIR / skill.name, owner)
        if transcript is not None and transcript.is_dir():
            add_tree(tar, transcript, PROJECTS_DIR, owner)
        if copy_cwd is not None:
            add_tree(tar, copy_cwd, PurePosixPath(str(copy_cwd)), owner)
    return buf.getvalue()


def agent_home_files(*, mcp_url: str | None, gitconfig: str | None) -> dict[str, tuple[bytes, int]]:
    files: dict[str, tuple[bytes, int]] = {
        # Without this, interactive Claude Code opens its first-run wizard.
        str(AGENT_HOME / ".claude.json"): (json.dumps({"hasCompletedOnboarding": True}).encode(), 0o600),
    }
    if mcp_url:
        mcp = {"mcpServers": {"supervise": {"type": "http", "url": mcp_url}}}
        files[str(MCP_CONFIG_PATH)] = (json.dumps(mcp, indent=2).encode(), 0o644)
    if gitconfig:
        files[str(AGENT_HOME / ".gitconfig")] = (gitconfig.encode(), 0o644)
    return files


def cwd_owner(cwd: Path) -> tuple[int, int]:
    """The agent runs as the working directory's owner; root is mapped to 1000
    because Claude Code refuses --dangerously-skip-permissions as root."""
    st = os.stat(cwd)
    if st.st_uid == 0:
        return (1000, 1000)
    return (st.st_uid, st.st_gid)
