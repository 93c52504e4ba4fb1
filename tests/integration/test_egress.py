"""Egress and credentials against a real daemon: real Claude Code through cred-proxy to the
fake Anthropic API, and escape attempts from inside the agent container (invariants 1-3)."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import pytest

from claude_bottle.cred_proxy import PLACEHOLDER_TOKEN

from .conftest import ALLOWED, DENIED, FAKE, ROUTES, TOKEN, Env, Upstreams, basic_manifest, docker, identities
from .probe import raw, unreachable

pytestmark = pytest.mark.integration

def test_real_claude_code_talks_through_cred_proxy(env: Env, upstreams: Upstreams) -> None:
    env.vars["CB_TEST_TOKEN"] = TOKEN
    env.write_manifest(basic_manifest(routes=ROUTES))
    upstreams.script(FAKE, [{"reply": {"text": "hello from the fake API"}}])
    joiner = threading.Thread(target=lambda: upstreams.join(_await_identity(env)))
    joiner.start()
    out = env.cli("start", "claude", "-y", "--", "-p", "say ok")
    joiner.join()
    assert out.returncode == 0, out.stderr[-3000:]
    assert "hello from the fake API" in out.stdout
    messages = [r for r in upstreams.requests(FAKE) if str(r["path"]).startswith("/v1/messages")]
    assert messages, upstreams.requests(FAKE)
    for r in messages:
        headers = r["headers"]
        assert isinstance(headers, dict)
        assert headers["authorization"] == f"Bearer {TOKEN}"
        assert headers["host"] == f"{FAKE}:8000"
    assert TOKEN not in out.stdout + out.stderr


def _await_identity(env: Env) -> str:
    from .conftest import wait_for
    wait_for(lambda: len(identities(env)) == 1, what="identity")
    return identities(env)[0]


def test_no_secret_in_the_agent_container(bottle: tuple[Env, str]) -> None:
    _, identity = bottle
    agent = f"claude-bottle-{identity}"
    inspect = docker("inspect", agent).stdout
    assert TOKEN not in inspect
    env_out = docker("exec", agent, "env").stdout
    assert f"CLAUDE_CODE_OAUTH_TOKEN={PLACEHOLDER_TOKEN}" in env_out and TOKEN not in env_out
    # every file and every process the agent can see, as root inside its container; the
    # token comes in on stdin so that no command line of the search itself holds it
    search = (
        'read -r T; grep -rlsF -e "$T" --exclude-dir=proc --exclude-dir=sys / ; '
        'for f in /proc/[0-9]*/environ /proc/[0-9]*/cmdline; do '
        'case "$(tr "\\0" " " < "$f" 2>/dev/null)" in *"$T"*) echo "$f";; esac; done; echo searched'
    )
    found = docker("exec", "-i", agent, "sh", "-c", search, input=(TOKEN + "\n").encode())
    assert found.stdout.strip() == "searched", found.stdout
    for sidecar in ("pipelock", "supervise"):
        assert TOKEN not in docker("inspect", f"claude-bottle-{identity}-{sidecar}").stdout
    assert TOKEN not in docker("inspect", f"claude-bottle-{identity}-cred-proxy").stdout


def test_only_the_sidecars_are_reachable(bottle: tuple[Env, str], upstreams: Upstreams) -> None:
    _, identity = bottle
    agent = f"claude-bottle-{identity}"
    egress = f"claude-bottle-{identity}-egress"
    # the upstreams by name: the agent's DNS does not know them
    assert unreachable(agent, FAKE, 8000)
    # ... nor by address: no route off the internal network
    assert unreachable(agent, upstreams.ip(FAKE, egress), 8000)
    # outside names do not resolve (the lookup alone; nothing is sent anywhere)
    lookup = docker("exec", agent, "getent", "hosts", "example.com", check=False)
    assert lookup.returncode != 0 and not lookup.stdout
    # through pipelock: an allowlisted host works, anything else is 403
    assert "200 OK" in raw(agent, "pipelock", 8888, f"GET http://{ALLOWED}:8000/_health HTTP/1.1\r\nHost: {ALLOWED}\r\nConnection: close\r\n\r\n")
    denied = raw(agent, "pipelock", 8888, f"CONNECT {DENIED}:443 HTTP/1.1\r\nHost: {DENIED}:443\r\n\r\n")
    assert "403" in denied and f"CONNECT blocked: domain not in allowlist: {DENIED}" in denied
    logs = docker("logs", f"claude-bottle-{identity}-pipelock").stdout
    assert any(json.loads(line).get("event") == "blocked" for line in logs.splitlines() if line.startswith("{"))


def test_host_services_are_unreachable(bottle: tuple[Env, str], upstreams: Upstreams) -> None:
    """A server on the host listening on 0.0.0.0 (this test's own) cannot be reached from the agent."""
    _, identity = bottle
    agent = f"claude-bottle-{identity}"
    server = http.server.ThreadingHTTPServer(("0.0.0.0", 0), http.server.SimpleHTTPRequestHandler)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        internal = f"claude-bottle-{identity}-internal"
        gateways = {docker("network", "inspect", "--format", "{{range .IPAM.Config}}{{.Gateway}}{{end}}", n).stdout.strip()
                    for n in (internal, "bridge")}
        gateways.add(socket.gethostbyname(socket.gethostname()))
        for gw in filter(None, gateways):
            assert unreachable(agent, gw, port), gw
    finally:
        server.shutdown()


@pytest.mark.parametrize(("request_text", "status"), [
    (f"GET http://{DENIED}:8000/_health HTTP/1.1\r\nHost: {DENIED}\r\n\r\n", "400"),
    (f"CONNECT {DENIED}:8000 HTTP/1.1\r\nHost: {DENIED}\r\n\r\n", "405"),
    ("GET /github/user HTTP/1.1\r\nHost: cred-proxy\r\n\r\n", "404"),
    ("GET /anthropic/../github/x HTTP/1.1\r\nHost: cred-proxy\r\n\r\n", "400"),
    ("GET /anthropic/%2e%2e/%2e%2e/x HTTP/1.1\r\nHost: cred-proxy\r\n\r\n", "400"),
    ("GET /anthropic/v1%2f..%2fx HTTP/1.1\r\nHost: cred-proxy\r\n\r\n", "400"),
])
def test_cred_proxy_is_not_an_open_proxy(bottle: tuple[Env, str], request_text: str, status: str) -> None:
    _, identity = bottle
    answer = raw(f"claude-bottle-{identity}", "cred-proxy", 8080, request_text.replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n"))
    assert answer.split()[1] == status, answer


def test_forged_host_header_still_goes_to_the_declared_upstream(bottle: tuple[Env, str], upstreams: Upstreams) -> None:
    _, identity = bottle
    answer = raw(f"claude-bottle-{identity}", "cred-proxy", 8080,
                 f"GET /anthropic/v1/models HTTP/1.1\r\nHost: {DENIED}\r\nConnection: close\r\n\r\n")
    assert answer.split()[1] == "200", answer
    assert not [r for r in upstreams.requests(DENIED) if r["path"] == "/v1/models"]
    seen = [r for r in upstreams.requests(FAKE) if r["path"] == "/v1/models"]
    assert seen and seen[-1]["headers"]["host"] == f"{FAKE}:8000"
