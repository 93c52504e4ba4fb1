"""Capability change and resume with the real Claude Code: the transcript survives a rebuild
and the conversation continues in the new image."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from claude_bottle.capability import apply_capability_change

from .conftest import (CLI, FAKE, ROUTES, TOKEN, Env, Upstreams, agent_ready, basic_manifest, docker, finish, identities,
                       labelled, start_waiting, wait_for)

pytestmark = pytest.mark.integration


def _joined_run(env: Env, upstreams: Upstreams, *args: str) -> str:
    """Run the CLI while the fake API joins whichever bottle it starts."""
    known = set(docker("network", "ls", "--format", "{{.Name}}").stdout.split())

    def join() -> None:
        def new_egress() -> bool:
            nets = set(docker("network", "ls", "--format", "{{.Name}}").stdout.split())
            return any(n.endswith("-egress") and n.startswith("claude-bottle-") for n in nets - known)
        wait_for(new_egress, timeout=300, what="egress network")
        nets = set(docker("network", "ls", "--format", "{{.Name}}").stdout.split()) - known
        [net] = [n for n in nets if n.endswith("-egress")]
        upstreams.join(net.removeprefix("claude-bottle-").removesuffix("-egress"))

    t = threading.Thread(target=join)
    t.start()
    out = env.cli(*args)
    t.join()
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_capability_change_rebuilds_and_resumes_the_same_session(env: Env, upstreams: Upstreams) -> None:
    env.vars["CB_TEST_TOKEN"] = TOKEN
    env.write_manifest(basic_manifest(routes=ROUTES))
    upstreams.script(FAKE, [{"when_last_user_contains": "which word", "reply": {"text": "the word was noted"}},
                            {"reply": {"text": "noted"}}])
    _joined_run(env, upstreams, "start", "claude", "-y", "--", "-p", "remember the word PELICAN")
    [identity] = identities(env)
    meta = json.loads((env.home / "state" / identity / "metadata.json").read_text())
    [transcript] = (env.home / "state" / identity / "transcript").glob(f"*/{meta['session_id']}.jsonl")
    assert "PELICAN" in transcript.read_text()  # snapshotted when the session ended normally

    # resume, and while it runs an operator approves a new Dockerfile
    proc, _ = start_waiting_resume(env, identity, upstreams)
    base = docker("inspect", "--format", "{{.Config.Image}}", f"claude-bottle-{identity}").stdout.strip()
    t0 = time.monotonic()
    hint = apply_capability_change(identity, f"FROM {base}\nRUN apt-get update && apt-get install -y --no-install-recommends jq\n")
    stopped = time.monotonic() - t0
    assert hint == f"./cli.py resume {identity}"
    code, _, err = finish(proc)
    assert labelled(identity) == ([], [])
    assert (env.home / "state" / identity / "Dockerfile").is_file()
    listed = env.cli("list").stdout
    assert identity in listed and "Dockerfile change pending" in listed

    # resume: the new image has the package, the identity and the conversation carry on
    out = _joined_run(env, upstreams, "resume", identity, "-y", "--", "-p", "which word did I ask you to remember?")
    assert "the word was noted" in out
    requests = [r for r in upstreams.requests(FAKE) if str(r["path"]).startswith("/v1/messages")]
    last = json.dumps(requests[-1]["body"])
    assert "PELICAN" in last and "which word" in last
    tags = docker("images", "--format", "{{.Repository}}:{{.Tag}}", "claude-bottle-agent").stdout.split()
    [tag] = [t for t in tags if t.startswith(f"claude-bottle-agent:{identity}-")]
    assert "jq-" in docker("run", "--rm", tag, "jq", "--version").stdout
    assert identities(env) == [identity]
    print(f"approve -> bottle stopped with state kept: {stopped:.2f} s (launcher exit {code}; {err.strip()[-80:]})")


def start_waiting_resume(env: Env, identity: str, upstreams: Upstreams) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, str(CLI), "resume", identity, "-y", "--", "-p"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env.vars, cwd=env.workdir)
    assert proc.stdin is not None
    proc.stdin.write("hold on\n")
    proc.stdin.flush()
    upstreams.join(identity)
    wait_for(lambda: proc.poll() is not None or agent_ready(identity), timeout=300, what="resumed agent")
    assert proc.poll() is None
    return proc, identity


def test_resume_refuses_unknown_running_and_broken(env: Env) -> None:
    out = env.cli("resume", "claude-zzzzz", "-y")
    assert out.returncode == 1 and "no bottle state for 'claude-zzzzz'" in out.stderr
    out = env.cli("resume", "../../etc", "-y")
    assert out.returncode == 1 and "is not a bottle identity" in out.stderr
    proc, identity = start_waiting(env)
    try:
        out = env.cli("resume", identity, "-y")
        assert out.returncode == 1 and "still running" in out.stderr
    finally:
        finish(proc)
    state = env.home / "state" / identity
    (state / "Dockerfile").write_text("FROM debian:bookworm-slim\nRUN exit 3\n")
    out = env.cli("resume", identity, "-y")
    error = out.stderr.strip().splitlines()[-1]
    assert out.returncode == 1 and error.startswith("claude-bottle: error: `docker build") and "exit 3" not in error[:20]
    assert (state / "metadata.json").is_file() and (state / "Dockerfile").is_file()
    assert labelled(identity) == ([], [])
    (state / "metadata.json").write_text("{")
    out = env.cli("resume", identity, "-y")
    assert out.returncode == 1 and "not valid JSON" in out.stderr
