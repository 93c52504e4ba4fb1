"""The agent asks, a human decides, against a real bottle: MCP calls from inside the agent
container, decisions through the dashboard's apply path, and real Claude Code calling the
supervise tool."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Callable

import pytest

from claude_bottle.audit import read_audit
from claude_bottle.dashboard import decisions
from claude_bottle.supervise.discover import PendingItem

from .conftest import DENIED, FAKE, ROUTES, TOKEN, Env, Upstreams, basic_manifest, docker, identities, wait_for
from .probe import raw

pytestmark = pytest.mark.integration

# An MCP tools/call from the agent's own Node.js, as Claude Code makes it; prints the
# JSON-RPC result once the event stream delivers it.
CALL = r"""
const http = require('http');
const body = process.argv[1];
const req = http.request({host: 'supervise', port: 8090, path: '/mcp', method: 'POST',
  headers: {'Content-Type': 'application/json', 'Accept': 'application/json, text/event-stream'}}, res => {
  let buf = '';
  res.on('data', d => { buf += d; });
  res.on('end', () => {
    const data = buf.split('\n').filter(l => l.startsWith('data: ')).map(l => l.slice(6));
    console.log(data.length ? data[data.length - 1] : buf);
  });
});
req.on('error', e => console.log('ERR ' + e.code));
req.end(body);
"""


def call_tool(identity: str, tool: str, arguments: dict[str, object]) -> "subprocess.Popen[str]":
    msg = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": arguments}})
    return subprocess.Popen(["docker", "exec", f"claude-bottle-{identity}", "node", "-e", CALL, msg],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def result_text(proc: "subprocess.Popen[str]") -> str:
    out, _ = proc.communicate(timeout=60)
    content = json.loads(out)["result"]["content"]
    return " ".join(c["text"] for c in content)


def wait_pending(tool: str) -> PendingItem:
    found: list[PendingItem] = []

    def look() -> bool:
        found[:] = [i for i in decisions.pending() if i.proposal and i.proposal.tool == tool]
        return bool(found)
    wait_for(look, timeout=30, what=f"a {tool} proposal")
    return found[0]


def via_pipelock(identity: str, host: str) -> str:
    answer = raw(f"claude-bottle-{identity}", "pipelock", 8888,
                 f"GET http://{host}:8000/_health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
    return answer.split()[1] if answer.startswith("HTTP/") else answer


def via_cred_proxy(identity: str, path: str) -> str:
    answer = raw(f"claude-bottle-{identity}", "cred-proxy", 8080, f"GET {path} HTTP/1.1\r\nHost: cred-proxy\r\nConnection: close\r\n\r\n")
    return answer.split()[1] if answer.startswith("HTTP/") else answer


def test_approve_and_reject_apply_live_and_the_agent_hears(bottle: tuple[Env, str], monkeypatch: pytest.MonkeyPatch) -> None:
    env, identity = bottle
    # pipelock-block approved: the host becomes reachable without a restart
    assert via_pipelock(identity, DENIED) == "403"
    call = call_tool(identity, "pipelock-block", {"hosts": [DENIED], "reason": "need the denied test host"})
    item = wait_pending("pipelock-block")
    assert item.proposal is not None and item.proposal.reason == "need the denied test host"
    decisions.approve(item)
    assert "approve" in result_text(call).lower()
    assert via_pipelock(identity, DENIED) == "200"

    # cred-proxy-block rejected: nothing changes, the agent gets the reason
    routes = json.dumps({"routes": [*ROUTES, {"name": "extra", "upstream": f"http://{DENIED}:8000",
                                              "header": "X-Api-Key", "value": "${CB_TEST_TOKEN}"}]})
    call = call_tool(identity, "cred-proxy-block", {"routes": routes, "reason": "want the extra upstream"})
    decisions.reject(wait_pending("cred-proxy-block"), "not today, use the main route")
    text = result_text(call)
    assert "reject" in text.lower() and "not today, use the main route" in text
    assert via_cred_proxy(identity, "/extra/v1/models") == "404"

    # the same approved: the route works at once
    monkeypatch.setenv("CB_TEST_TOKEN", TOKEN)
    call = call_tool(identity, "cred-proxy-block", {"routes": routes, "reason": "want the extra upstream, please"})
    decisions.approve(wait_pending("cred-proxy-block"))
    assert "approve" in result_text(call).lower()
    assert via_cred_proxy(identity, "/extra/v1/models") == "200"

    actions = [(e.tool, e.action) for e in read_audit(env.home / "audit.jsonl")]
    assert actions == [("pipelock-block", "approve"), ("cred-proxy-block", "reject"), ("cred-proxy-block", "approve")]
    assert decisions.pending() == []


def test_failed_apply_keeps_the_proposal_pending(bottle: tuple[Env, str]) -> None:
    env, identity = bottle
    call = call_tool(identity, "pipelock-block", {"hosts": ["new.example.com"], "reason": "docs"})
    item = wait_pending("pipelock-block")
    docker("stop", f"claude-bottle-{identity}-pipelock")
    with pytest.raises(Exception, match="no running pipelock"):
        decisions.approve(item)
    assert [i.id for i in decisions.pending()] == [item.id]
    assert not (env.home / "audit.jsonl").exists()
    call.kill()


def _await_identity(env: Env) -> str:
    wait_for(lambda: len(identities(env)) == 1, what="identity")
    return identities(env)[0]


def _in_background(fn: Callable[[], None]) -> threading.Thread:
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    return t


def test_real_claude_code_proposes_and_gets_the_decision(env: Env, upstreams: Upstreams) -> None:
    env.vars["CB_TEST_TOKEN"] = TOKEN
    env.write_manifest(basic_manifest(routes=ROUTES))
    upstreams.script(FAKE, [
        {"when_last_user_contains": "approved", "reply": {"text": "thanks, the host is mine now"}},
        {"when_last_user_contains": "please fetch", "reply": {"tool_use": {
            "name": "mcp__supervise__pipelock-block",
            "input": {"hosts": ["docs.example.com"], "reason": "the user asked me to fetch the docs"}}}},
    ])
    joiner = _in_background(lambda: upstreams.join(_await_identity(env)))
    decided: list[str] = []

    def decide() -> None:
        item = wait_pending("pipelock-block")
        decided.append(decisions.approve(item).status)
    decider = _in_background(decide)
    out = env.cli("start", "claude", "-y", "--", "-p", "please fetch the docs")
    joiner.join()
    decider.join(timeout=5)
    assert out.returncode == 0, out.stderr[-3000:]
    assert decided and "approved pipelock-block" in decided[0]
    assert "thanks, the host is mine now" in out.stdout
    turns = [r["body"] for r in upstreams.requests(FAKE) if str(r["path"]).startswith("/v1/messages")]
    tool_results = [b for b in turns if "tool_result" in json.dumps(b)]
    assert tool_results and "approve" in json.dumps(tool_results[-1]).lower()
    assert "docs.example.com" in json.dumps(tool_results[-1])
