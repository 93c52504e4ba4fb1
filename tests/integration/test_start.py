"""The foundation against a real daemon: start, provisioning, labels, list, cleanup."""

from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .conftest import AGENT_UID, Env, basic_manifest, docker, finish, identities, labelled, start_waiting, wait_for

pytestmark = pytest.mark.integration


def test_dry_run_json_shows_the_plan_and_creates_nothing(env: Env) -> None:
    env.write_manifest(basic_manifest(allow=["b.example.com", "a.example.com", "b.example.com"]))
    out = env.cli("start", "claude", "--dry-run", "--format=json")
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    for key in ("identity", "agent", "bottle", "image", "runtime", "cwd", "copy_cwd", "hosts", "env_names",
                "git_remotes", "git_gate", "networks", "containers"):
        assert key in plan
    assert plan["hosts"] == ["a.example.com", "b.example.com"]
    assert plan["cwd"] == str(env.workdir)
    assert plan["runtime"] in ("runc", "runsc")
    assert labelled(plan["identity"]) == ([], [])
    refused = env.cli("start", "claude", "--format=json")
    assert refused.returncode == 1 and "only goes with --dry-run" in refused.stderr


def test_headless_version_in_a_real_bottle_leaves_nothing(env: Env) -> None:
    out = env.cli("start", "claude", "-y", "--", "--version")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Claude Code" in out.stdout
    [identity] = identities(env)
    assert f"./cli.py resume {identity}" in out.stdout
    assert labelled(identity) == ([], [])
    meta = json.loads((env.home / "state" / identity / "metadata.json").read_text())
    assert meta["agent_name"] == "claude" and meta["cwd"] == str(env.workdir) and meta["session_id"]


def test_running_bottle_is_provisioned_labelled_and_listed(env: Env, tmp_path: Path) -> None:
    prompt = tmp_path / "prompt.md"
    prompt.write_text("You are a careful implementer.")
    skill = tmp_path / "skills" / "tdd"
    skill.mkdir(parents=True)
    (skill / "SKILL.md").write_text("---\nname: tdd\n---\nWrite the test first.")
    env.write_manifest(basic_manifest(agent={"prompt": str(prompt), "skills": [str(skill)]},
                                      bottle={"env": {"LANG": "C.UTF-8"}}))
    (env.workdir / "hello.txt").write_text("from the host")
    proc, identity = start_waiting(env)
    agent = f"claude-bottle-{identity}"
    try:
        # the working directory at the same absolute path, shared both ways
        assert docker("exec", agent, "cat", str(env.workdir / "hello.txt")).stdout == "from the host"
        docker("exec", "-u", f"{AGENT_UID}:{AGENT_UID}", agent, "sh", "-c", f"echo back > {env.workdir}/from-agent.txt")
        assert (env.workdir / "from-agent.txt").read_text() == "back\n"
        assert (env.workdir / "from-agent.txt").stat().st_uid == AGENT_UID
        # prompt and skills in place, owned by the agent user
        assert "careful implementer" in docker("exec", agent, "cat", "/home/claude/.claude-bottle/prompt.md").stdout
        assert "Write the test first" in docker("exec", agent, "cat", "/home/claude/.claude/skills/tdd/SKILL.md").stdout
        cmdline = docker("exec", agent, "sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '").stdout
        assert "--append-system-prompt-file /home/claude/.claude-bottle/prompt.md" in cmdline
        assert "--dangerously-skip-permissions" in cmdline
        # (`find -printf`, not `stat`/`ls -n`: Debian's runsc answers coreutils' statx with EINVAL)
        owner = docker("exec", agent, "find", "/home/claude", "-maxdepth", "0", "-printf", "%U").stdout
        assert owner == str(AGENT_UID)
        assert docker("exec", agent, "printenv", "LANG").stdout.strip() == "C.UTF-8"
        # every container and network carries both labels
        containers, networks = labelled(identity)
        assert len(containers) >= 3 and len(networks) == 2
        for name in containers + networks:
            kind = "network" if name in networks else "container"
            labels = json.loads(docker(kind, "inspect", "--format", "{{json .Config.Labels}}" if kind == "container"
                                       else "{{json .Labels}}", name).stdout)
            assert labels["claude-bottle.identity"] == identity
            assert labels["claude-bottle.role"]
        listed = env.cli("list")
        assert listed.returncode == 0 and identity in listed.stdout
    finally:
        _, _, err = finish(proc)
    assert "removed bottle" in err
    assert labelled(identity) == ([], [])


def test_copy_cwd_copies_instead_of_mounting(env: Env) -> None:
    (env.workdir / "hello.txt").write_text("copied")
    proc, identity = start_waiting(env, "--copy-cwd")
    agent = f"claude-bottle-{identity}"
    try:
        assert docker("exec", agent, "cat", str(env.workdir / "hello.txt")).stdout == "copied"
        docker("exec", agent, "sh", "-c", f"echo x > {env.workdir}/inside.txt")
        assert not (env.workdir / "inside.txt").exists()
        mounts = docker("inspect", "--format", "{{json .Mounts}}", agent).stdout
        assert str(env.workdir) not in mounts
    finally:
        finish(proc)
    assert labelled(identity) == ([], [])


def test_two_concurrent_starts_in_one_directory(env: Env) -> None:
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(env.cli, "start", "claude", "-y", "--", "--version") for _ in range(2)]
        results = [f.result() for f in futures]
    for r in results:
        assert r.returncode == 0, r.stderr[-2000:]
    ids = identities(env)
    assert len(ids) == 2 and ids[0] != ids[1]
    for identity in ids:
        assert labelled(identity) == ([], [])


def test_sigkill_mid_launch_leaves_only_what_cleanup_removes(env: Env) -> None:
    proc = env.popen("start", "claude", "-y", "--", "-p", "hello")
    wait_for(lambda: len(identities(env)) == 1, what="metadata")
    identity = identities(env)[0]
    wait_for(lambda: bool(labelled(identity)[1]), what="a network")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(2)  # docker CLI children still running may finish creating things
    containers, networks = labelled(identity)
    assert containers or networks
    out = env.cli("cleanup", "-y")
    assert out.returncode == 0, out.stderr
    assert labelled(identity) == ([], [])
    assert (env.home / "state" / identity / "metadata.json").is_file()  # state is never cleaned up


def test_bad_agent_and_missing_secret_are_one_line_errors(env: Env) -> None:
    out = env.cli("start", "nobody", "-y")
    assert out.returncode == 1
    assert out.stderr.strip().count("\n") == 0 and "no agent named 'nobody'" in out.stderr
    env.write_manifest(basic_manifest(routes=[{"name": "anthropic", "role": "anthropic-base-url",
                                               "upstream": "https://api.anthropic.com", "header": "Authorization",
                                               "value": "Bearer ${CB_TEST_MISSING_TOKEN}"}]))
    out = env.cli("start", "claude", "-y")
    assert out.returncode == 1 and "CB_TEST_MISSING_TOKEN" in out.stderr
    assert identities(env) == []
