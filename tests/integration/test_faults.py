"""Faults against the real daemon (invariants 5 and 6): a launch killed or interrupted at
each step, the daemon restarted under a running bottle, $CLAUDE_BOTTLE_HOME on a full
filesystem, and a live apply that fails half-way."""

from __future__ import annotations

import json
import os
import signal

import pytest

from .conftest import ROUTES, TOKEN, Env, basic_manifest, labelled, wait_for
from .steps import STEPS, cleanup_leftovers, creating, named, new_identity, wait_step, watched_launch

pytestmark = pytest.mark.integration


@pytest.fixture
def routed(env: Env) -> Env:
    """A bottle with every default sidecar: pipelock, cred-proxy (one route), supervise."""
    env.vars["CB_TEST_TOKEN"] = TOKEN
    env.write_manifest(basic_manifest(routes=ROUTES))
    return env


def _metadata(env: Env, identity: str) -> dict[str, object]:
    return json.loads((env.home / "state" / identity / "metadata.json").read_text())


# --- a launch killed at each step -------------------------------------------------------

@pytest.mark.parametrize("step", list(STEPS))
def test_sigkill_at_each_step_leaves_only_what_cleanup_removes(routed: Env, step: str) -> None:
    env = routed
    with watched_launch(env) as (events, proc):
        identity = new_identity(env, proc)
        seen = wait_step(events, identity, step, proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        # The launcher's docker commands run on as orphans; let them finish creating.
        wait_for(lambda: not creating(proc.pid), timeout=120, what="the orphaned docker commands")
        left = labelled(identity)
        how = cleanup_leftovers(env, identity)
        assert labelled(identity) == ([], []), f"killed after {seen}; {how} left {labelled(identity)}"
        assert named(identity) == ([], [])
    meta = _metadata(env, identity)  # state is never cleaned up: resumable
    assert meta["identity"] == identity and meta["session_id"]
    print(f"SIGKILL at {step}: after {seen}; left {left}; removed by {how}")


SIGNALS = {
    "SIGTERM": (signal.SIGTERM, False, 143),  # `kill <launcher>`
    "SIGINT": (signal.SIGINT, True, 130),  # ^C on a terminal: the whole group, docker children too
}


@pytest.mark.parametrize("step", list(STEPS))
@pytest.mark.parametrize("how", list(SIGNALS))
def test_signal_at_each_step_tears_down_and_says_so(routed: Env, how: str, step: str) -> None:
    env = routed
    signum, group, code = SIGNALS[how]
    with watched_launch(env) as (events, proc):
        identity = new_identity(env, proc)
        seen = wait_step(events, identity, step, proc)
        if group:
            os.killpg(proc.pid, signum)
        else:
            proc.send_signal(signum)
        _, err = proc.communicate(timeout=180)
        still = creating(proc.pid)
    assert "Traceback" not in err, err
    assert proc.returncode == code, err[-2000:]
    assert f"claude-bottle: removed bottle {identity}" in err, err[-2000:]
    assert not still, f"the launcher exited with docker commands still running: {still}"
    assert labelled(identity) == ([], []), f"{how} after {seen} left {labelled(identity)}"
    assert named(identity) == ([], [])
    assert _metadata(env, identity)["identity"] == identity
    print(f"{how} at {step}: existed {seen}; exit {proc.returncode}; {err.strip().splitlines()[-2:]}")


