"""The curses dashboard driven for real in tmux (send-keys, capture-pane) against a running
bottle whose agent proposes through the supervise sidecar."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from claude_bottle.audit import read_audit
from claude_bottle.pipelock import read_live_allowlist

from .conftest import CLI, DENIED, Env, wait_for
from .test_supervise_bottle import call_tool, result_text, via_cred_proxy, via_pipelock

pytestmark = pytest.mark.integration

# $EDITOR for the test: rewrites the file the dashboard hands it, like an operator would.
EDITOR = """\
import json, sys
path = sys.argv[1]
text = open(path).read()
if path.endswith(".json"):
    routes = json.loads(text)
    routes["routes"].append({"name": "extra2", "upstream": "http://denied.test:8000",
                             "header": "X-Api-Key", "value": "${CB_TEST_TOKEN}"})
    text = json.dumps(routes, indent=2)
elif "x.example.com" in text:
    text = text.replace("x.example.com", "y.example.com")
else:
    text += "z.example.com\\n"
open(path, "w").write(text)
"""


class Tmux:
    def __init__(self, name: str) -> None:
        self.name = name

    def keys(self, *keys: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, *keys], check=True)

    def screen(self) -> str:
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", self.name], capture_output=True, text=True).stdout

    def wait_for(self, text: str, timeout: float = 30) -> str:
        shown: list[str] = [""]

        def look() -> bool:
            shown[0] = self.screen()
            return text in shown[0]
        try:
            wait_for(look, timeout=timeout, what=repr(text))
        except AssertionError:
            raise AssertionError(f"{text!r} never appeared; screen:\n{shown[0]}") from None
        return shown[0]


@pytest.fixture
def dashboard(bottle: tuple[Env, str], tmp_path: Path) -> Iterator[Tmux]:
    env, _ = bottle
    editor = tmp_path / "editor.py"
    editor.write_text(EDITOR)
    name = f"cbtest-dash-{int(time.time() * 1000) % 100000}"
    vars = {**env.vars, "EDITOR": f"{sys.executable} {editor}", "TERM": "xterm-256color", "CB_TEST_TOKEN": "t0ken"}
    # COLUMNS/LINES from pytest's own terminal would pin curses to the wrong size.
    command = " ".join(f"{k}={shlex.quote(v)}" for k, v in vars.items()
                       if k.isidentifier() and k not in ("COLUMNS", "LINES"))
    subprocess.run(["tmux", "new-session", "-d", "-s", name, "-x", "150", "-y", "40",
                    f"env {command} {sys.executable} {CLI} dashboard"], check=True)
    subprocess.run(["tmux", "resize-window", "-t", name, "-x", "150", "-y", "40"], check=False)
    t = Tmux(name)
    t.wait_for("claude-bottle dashboard")
    yield t
    subprocess.run(["tmux", "kill-session", "-t", name], check=False)


def test_dashboard_approve_reject_modify_and_edit(bottle: tuple[Env, str], dashboard: Tmux) -> None:
    env, identity = bottle
    t = dashboard
    t.wait_for("0 pending")

    # approve, after looking at the details
    call = call_tool(identity, "pipelock-block", {"hosts": [DENIED], "reason": "need the denied test host"})
    t.wait_for("need the denied test host")
    t.keys("Enter")
    detail = t.wait_for("diff against the live file")
    assert f"+{DENIED}" in detail
    print("\n--- dashboard detail view ---\n" + detail)
    t.keys("Escape")
    t.keys("a")
    t.wait_for(f"approved pipelock-block for {identity}")
    assert "approve" in result_text(call).lower()
    assert via_pipelock(identity, DENIED) == "200"

    # reject with a reason typed inline
    routes = json.dumps({"routes": [{"name": "anthropic", "role": "anthropic-base-url", "upstream": "http://fake-anthropic.test:8000",
                                     "header": "Authorization", "value": "Bearer ${CB_TEST_TOKEN}"}]})
    call = call_tool(identity, "cred-proxy-block", {"routes": routes, "reason": "same routes, just checking"})
    screen = t.wait_for("same routes, just checking")
    print("\n--- dashboard list view ---\n" + screen)
    t.keys("r")
    t.wait_for("reason for rejecting")
    t.keys("-l", "no need, nothing changes")
    t.keys("Enter")
    t.wait_for(f"rejected cred-proxy-block for {identity}")
    assert "no need, nothing changes" in result_text(call)

    # edit, then approve: the operator's version is what applies
    call = call_tool(identity, "pipelock-block", {"hosts": ["x.example.com"], "reason": "mirror host"})
    t.wait_for("mirror host")
    t.keys("m")
    t.wait_for(f"approved pipelock-block for {identity}")
    text = result_text(call)
    assert "y.example.com" in text
    assert "y.example.com" in read_live_allowlist(identity) and "x.example.com" not in read_live_allowlist(identity)

    # p: edit the live allowlist directly; e: the live routes
    t.keys("p")
    t.wait_for(f"allowlist of {identity} updated")
    assert "z.example.com" in read_live_allowlist(identity)
    t.keys("e")
    t.wait_for(f"routes of {identity} updated")
    assert via_cred_proxy(identity, "/extra2/v1/models") == "200"

    actions = [e.action for e in read_audit(env.home / "audit.jsonl")]
    assert actions == ["approve", "reject", "approve-modified", "operator-edit", "operator-edit"]
    t.keys("q")
    time.sleep(0.5)


def test_dashboard_lists_a_malformed_proposal_and_survives_resize(bottle: tuple[Env, str], dashboard: Tmux) -> None:
    env, identity = bottle
    bad = env.home / "queue" / identity / "20260101t000000000000-zzzz.proposal.json"
    bad.write_text('{"tool": "capability-block", "dockerfile": "FROM x\\nRUN rm -rf /"')
    dashboard.wait_for("INVALID")
    dashboard.keys("a")
    dashboard.wait_for("is not a valid proposal")
    subprocess.run(["tmux", "resize-window", "-t", dashboard.name, "-x", "60", "-y", "12"], check=False)
    dashboard.wait_for("claude-bottle dashboard")
    assert bad.exists()
