"""The TEST DOUBLES against a real Docker daemon: the pipelock stand-in and the fake Anthropic API.

Everything runs on a network of the test's own; the only traffic is between the
containers the test starts (and the host's loopback, for the fake API's port).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest

from claude_bottle.pipelock import (
    PIPELOCK_CONFIG_DIR,
    PIPELOCK_CONFIG_PATH,
    pipelock_block_message,
    pipelock_command,
    pipelock_config,
    pipelock_health_url,
    pipelock_healthcheck_command,
    render_pipelock_config,
)
from tests.doubles.images import ensure_fake_anthropic_image, ensure_pipelock_double_image

pytestmark = pytest.mark.integration

ALLOW = ["*.allowed.test"]
UPSTREAM_ALIASES = ("allowed.test", "api.allowed.test", "evil.blocked.test", "later.added.test")

# Runs inside the client container: one request through pipelock, result as JSON.
CLIENT = r"""
import json, socket, sys, urllib.error, urllib.request
mode, target = sys.argv[1], sys.argv[2]
if mode == "connect":
    s = socket.create_connection(("pipelock", 8888), timeout=10)
    s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        byte = s.recv(1)  # one at a time: what follows the head belongs to the tunnel
        if not byte:
            break
        head += byte
    status = int(head.split()[1])
    if status == 200:
        s.sendall(f"GET /_health HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n".encode())
    rest = b""
    while True:
        try:
            data = s.recv(65536)
        except socket.timeout:
            break
        if not data:
            break
        rest += data
        if status != 200 and len(rest) >= int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0]):
            break
    print(json.dumps({"status": status, "head": head.decode(), "body": rest.decode()}))
else:
    handlers = [urllib.request.ProxyHandler({"http": "http://pipelock:8888"} if mode == "plain" else {})]
    try:
        with urllib.request.build_opener(*handlers).open(target, timeout=10) as r:
            print(json.dumps({"status": r.status, "body": r.read().decode()}))
    except urllib.error.HTTPError as e:
        print(json.dumps({"status": e.code, "body": e.read().decode()}))
"""


# Runs inside the client container: a streamed /v1/messages call to the upstream,
# through a CONNECT tunnel or as plain HTTP; prints when each SSE event arrived.
STREAM_CLIENT = r"""
import json, socket, sys, time
mode = sys.argv[1]
body = json.dumps({"model": "m", "stream": True, "messages": [{"role": "user", "content": "slowly"}]})
target = "api.allowed.test:8000"
s = socket.create_connection(("pipelock", 8888), timeout=20)
if mode == "connect":
    s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    path = "/v1/messages"
else:
    path = f"http://{target}/v1/messages"
s.sendall((f"POST {path} HTTP/1.1\r\nHost: {target}\r\nContent-Type: application/json\r\n"
           f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}").encode())
start, arrivals, seen = time.monotonic(), [], b""
while True:
    data = s.recv(65536)
    if not data:
        break
    seen += data
    for name in (b"message_start", b"message_stop"):
        if b"event: " + name in seen and name.decode() not in dict(arrivals):
            arrivals.append((name.decode(), time.monotonic() - start))
print(json.dumps(dict(arrivals)))
"""


# Runs inside the client container: a CONNECT tunnel whose first bytes are a TLS
# ClientHello naming argv[2]; prints how many bytes came back before the close.
SNI_CLIENT = r"""
import socket, sys
target, name = sys.argv[1], sys.argv[2].encode()
sni = b"\0\0" + (len(name) + 5).to_bytes(2, "big") + (len(name) + 3).to_bytes(2, "big") + b"\0"
sni += len(name).to_bytes(2, "big") + name
hello = b"\3\3" + bytes(32) + b"\0" + b"\0\2\x13\1" + b"\1\0" + len(sni).to_bytes(2, "big") + sni
handshake = b"\1" + len(hello).to_bytes(3, "big") + hello
s = socket.create_connection(("pipelock", 8888), timeout=10)
s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
head = b""
while b"\r\n\r\n" not in head:
    head += s.recv(1)
s.sendall(b"\x16\3\1" + len(handshake).to_bytes(2, "big") + handshake)
s.shutdown(socket.SHUT_WR)
received = b""
try:
    while data := s.recv(65536):
        received += data
except OSError:
    pass
print(len(received))
"""


def docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(("docker", *args), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def wait_until(condition: Callable[[], bool], what: str, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out after {seconds:g} s waiting for {what}")


@pytest.fixture(scope="module")
def docker_ready() -> None:
    if shutil.which("docker") is None or docker("info", check=False, timeout=30).returncode != 0:
        pytest.skip("no Docker daemon")


@dataclass
class Stack:
    prefix: str
    pipelock: str
    client: str
    workdir: Path

    def request(self, mode: str, target: str) -> dict[str, Any]:
        out = docker("exec", self.client, "python3", "-c", CLIENT, mode, target, timeout=30).stdout
        return cast("dict[str, Any]", json.loads(out))

    def install_config(self, text: str, *, hup: bool) -> None:
        path = self.workdir / "pipelock.yaml"
        path.write_text(text)
        path.chmod(0o644)
        docker("cp", str(path), f"{self.pipelock}:{PIPELOCK_CONFIG_PATH}")
        if hup:
            docker("kill", "--signal", "HUP", self.pipelock)

    def log_lines(self) -> list[dict[str, Any]]:
        lines: list[dict[str, Any]] = []
        for line in docker("logs", self.pipelock).stdout.splitlines():
            if line.startswith("{"):
                lines.append(cast("dict[str, Any]", json.loads(line)))
        return lines

    def reloads(self, status: str) -> list[dict[str, Any]]:
        return [e for e in self.log_lines() if e.get("event") == "config_reload" and e.get("status") == status]


def start_pipelock(name: str, network: str, config_text: str, workdir: Path) -> None:
    """Like the launcher will: create, copy the config folder in, start."""
    image = ensure_pipelock_double_image()
    alias = ("--network-alias", "pipelock") if network != "none" else ()
    docker("create", "--name", name, "--network", network, *alias, image, *pipelock_command())
    config_dir = workdir / "config"
    config_dir.mkdir(exist_ok=True)
    (config_dir / "pipelock.yaml").write_text(config_text)
    (config_dir / "pipelock.yaml").chmod(0o644)
    docker("cp", str(config_dir), f"{name}:{PIPELOCK_CONFIG_DIR}")
    docker("start", name)


@pytest.fixture(scope="module")
def stack(docker_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prefix = f"cbtest-doubles-{uuid.uuid4().hex[:8]}"
    workdir = tmp_path_factory.mktemp("pipelock")
    names = [f"{prefix}-upstream", f"{prefix}-pipelock", f"{prefix}-client"]
    docker("network", "create", prefix)
    try:
        aliases = [arg for alias in UPSTREAM_ALIASES for arg in ("--network-alias", alias)]
        docker("run", "-d", "--name", names[0], "--network", prefix, *aliases, ensure_fake_anthropic_image())
        start_pipelock(names[1], prefix, render_pipelock_config(ALLOW), workdir)
        image = ensure_pipelock_double_image()
        docker("run", "-d", "--name", names[2], "--network", prefix, "--entrypoint", "sleep", image, "infinity")
        wait_until(
            lambda: docker("exec", names[1], *pipelock_healthcheck_command(), check=False).returncode == 0,
            "pipelock double to be healthy",
        )
        yield Stack(prefix, names[1], names[2], workdir)
    finally:
        docker("rm", "-f", *names, check=False)
        docker("network", "rm", prefix, check=False)


def test_connect_to_allowlisted_host_is_tunnelled(stack: Stack) -> None:
    for target in ("api.allowed.test:8000", "allowed.test:8000"):  # a wildcard covers the apex too
        result = stack.request("connect", target)
        assert result["status"] == 200
        assert result["body"].startswith("HTTP/1.1 200") and '"status": "ok"' in result["body"]


def test_plain_http_to_allowlisted_host_is_forwarded(stack: Stack) -> None:
    result = stack.request("plain", "http://api.allowed.test:8000/_health")
    assert result == {"status": 200, "body": '{"status": "ok"}'}


def test_connect_outside_allowlist_gets_403(stack: Stack) -> None:
    result = stack.request("connect", "evil.blocked.test:8000")
    assert result["status"] == 403
    assert result["body"] == pipelock_block_message("evil.blocked.test") + "\n"
    assert result["body"] == "CONNECT blocked: domain not in allowlist: evil.blocked.test\n"


def test_plain_http_outside_allowlist_gets_403(stack: Stack) -> None:
    result = stack.request("plain", "http://evil.blocked.test:8000/_health")
    assert result == {"status": 403, "body": "blocked: domain not in allowlist: evil.blocked.test\n"}
    assert result["body"] == pipelock_block_message("evil.blocked.test", connect=False) + "\n"


def test_block_is_logged_as_a_json_line(stack: Stack) -> None:
    stack.request("connect", "evil.blocked.test:443")
    blocked = [e for e in stack.log_lines() if e.get("event") == "blocked"]
    assert any(
        e["scanner"] == "allowlist" and e["target"] == "evil.blocked.test:443" and e["method"] == "CONNECT"
        for e in blocked
    )


def test_health_endpoint(stack: Stack) -> None:
    assert docker("exec", stack.pipelock, *pipelock_healthcheck_command(), check=False).returncode == 0
    result = stack.request("direct", pipelock_health_url("pipelock"))
    assert result["status"] == 200
    health = json.loads(result["body"])
    assert health["status"] == "healthy" and health["mode"] == "strict"


def test_reload_adds_and_removes_hosts_live(stack: Stack) -> None:
    assert stack.request("connect", "later.added.test:8000")["status"] == 403
    stack.install_config(render_pipelock_config([*ALLOW, "later.added.test"]), hup=True)
    wait_until(lambda: stack.request("connect", "later.added.test:8000")["status"] == 200, "the added host")
    assert stack.reloads("success")[-1]["api_allowlist"] == ["*.allowed.test", "later.added.test"]
    # A changed file is picked up without a signal too.
    stack.install_config(render_pipelock_config(ALLOW), hup=False)
    wait_until(lambda: stack.request("connect", "later.added.test:8000")["status"] == 403, "the removed host")


def test_tls_server_name_must_match_the_connect_host(stack: Stack) -> None:
    def answered(name: str) -> int:
        out = docker("exec", stack.client, "python3", "-c", SNI_CLIENT, "api.allowed.test:8000", name, timeout=30)
        return int(out.stdout)

    assert answered("api.allowed.test") > 0  # forwarded: the plain-HTTP upstream answers 400
    assert answered("evil.blocked.test") == 0
    assert any(e.get("scanner") == "sni" and e.get("event") == "blocked" for e in stack.log_lines())


@pytest.mark.parametrize("mode", ["connect", "plain"])
def test_responses_stream_through_unbuffered(stack: Stack, mode: str) -> None:
    script = [{"when_last_user_contains": "slowly", "reply": {"text": "one two three", "pause_seconds": 0.4}}]
    docker("exec", stack.client, "python3", "-c",
           "import sys, urllib.request; urllib.request.urlopen(urllib.request.Request("
           "'http://api.allowed.test:8000/_script', data=sys.argv[1].encode(), method='POST'))", json.dumps(script))
    out = docker("exec", stack.client, "python3", "-c", STREAM_CLIENT, mode, timeout=60).stdout
    arrivals = cast("dict[str, float]", json.loads(out))
    assert arrivals["message_stop"] > 3  # eight pauses of 0.4 s
    assert arrivals["message_start"] < 1, "the first event waited for the whole response"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"mode": "balanced"}, "mode change from strict to balanced"),
        ({"forward_proxy": {"enabled": False}}, "forward_proxy.enabled cannot change"),
        ({"surprise": True}, "unknown field 'surprise'"),
        ({"api_allowlist": []}, "non-empty api_allowlist"),
    ],
)
def test_weakening_or_invalid_reload_is_refused(stack: Stack, change: dict[str, object], reason: str) -> None:
    config = pipelock_config(ALLOW)
    for key, value in change.items():
        old = config.get(key)
        config[key] = {**cast("dict[str, object]", old), **cast("dict[str, object]", value)} if isinstance(old, dict) else value
    before = len(stack.reloads("rejected"))
    stack.install_config(json.dumps(config), hup=True)
    wait_until(lambda: len(stack.reloads("rejected")) > before, "the reload to be refused")
    assert reason in stack.reloads("rejected")[-1]["reason"]
    assert stack.request("connect", "evil.blocked.test:8000")["status"] == 403
    assert stack.request("connect", "api.allowed.test:8000")["status"] == 200
    stack.install_config(render_pipelock_config(ALLOW), hup=True)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({**pipelock_config(ALLOW), "unknown_key": 1}, "unknown field 'unknown_key'"),
        ({**pipelock_config(ALLOW), "api_allowlist": []}, "strict mode requires a non-empty api_allowlist"),
        (
            {**pipelock_config(ALLOW), "forward_proxy": {"enabled": True, "max_tunnel_seconds": 0}},
            "forward_proxy.max_tunnel_seconds: must be an integer > 0",
        ),
    ],
)
def test_invalid_config_stops_pipelock(
    docker_ready: None, tmp_path: Path, config: dict[str, object], message: str
) -> None:
    name = f"cbtest-doubles-{uuid.uuid4().hex[:8]}-badconfig"
    try:
        start_pipelock(name, "none", json.dumps(config), tmp_path)
        assert docker("wait", name, timeout=30).stdout.strip() == "1"
        assert message in docker("logs", name).stderr
    finally:
        docker("rm", "-f", name, check=False)


# --- the fake Anthropic API ---------------------------------------------------


@dataclass
class FakeAPI:
    url: str

    def call(self, method: str, path: str, body: object = None, headers: dict[str, str] | None = None) -> tuple[int, str]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers or {})
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()


@pytest.fixture(scope="module")
def fake_api(docker_ready: None) -> Iterator[FakeAPI]:
    name = f"cbtest-doubles-{uuid.uuid4().hex[:8]}-anthropic"
    image = ensure_fake_anthropic_image()
    try:
        docker("run", "-d", "--name", name, "-p", "127.0.0.1::8000", image)
        port = docker("port", name, "8000/tcp").stdout.splitlines()[0].rpartition(":")[2]
        api = FakeAPI(f"http://127.0.0.1:{port}")

        def healthy() -> bool:
            try:
                return api.call("GET", "/_health")[0] == 200
            except OSError:
                return False

        wait_until(healthy, "the fake Anthropic API")
        yield api
    finally:
        docker("rm", "-f", name, check=False)


def sse(text: str) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], cast("dict[str, Any]", json.loads(fields["data"]))))
    return events


def test_fake_api_streams_a_default_reply_and_records_the_request(fake_api: FakeAPI) -> None:
    fake_api.call("POST", "/_reset")
    body = {"model": "claude-x", "stream": True, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    status, text = fake_api.call("POST", "/v1/messages", body, {"Authorization": "Bearer sk-test"})
    assert status == 200
    events = sse(text)
    assert [name for name, _ in events if name != "content_block_delta"] == [
        "message_start", "ping", "content_block_start", "content_block_stop", "message_delta", "message_stop",
    ]
    reply = "".join(d["delta"]["text"] for name, d in events if name == "content_block_delta")
    assert reply == "ok from fake anthropic"
    assert events[0][1]["message"]["model"] == "claude-x"
    assert events[-2][1]["delta"]["stop_reason"] == "end_turn"
    recorded = json.loads(fake_api.call("GET", "/_requests")[1])
    assert len(recorded) == 1
    assert recorded[0]["headers"]["authorization"] == "Bearer sk-test"
    assert recorded[0]["body"]["messages"] == [{"role": "user", "content": "hi"}]


def test_fake_api_scripted_tool_use_and_tool_result(fake_api: FakeAPI) -> None:
    fake_api.call("POST", "/_reset")
    script = [
        {"when_last_user_contains": "TOOL-DONE", "reply": {"text": "all done"}},
        {"when_last_user_contains": "list files", "reply": {"tool_use": {"name": "Bash", "input": {"command": "ls"}}}},
    ]
    assert fake_api.call("POST", "/_script", script) == (200, '{"rules": 2}')
    first: dict[str, Any] = {"model": "m", "stream": True, "messages": [{"role": "user", "content": [{"type": "text", "text": "please list files"}]}]}
    events = sse(fake_api.call("POST", "/v1/messages", first)[1])
    start = next(d for name, d in events if name == "content_block_start")
    assert start["content_block"]["type"] == "tool_use" and start["content_block"]["name"] == "Bash"
    partial = "".join(d["delta"]["partial_json"] for name, d in events if name == "content_block_delta")
    assert json.loads(partial) == {"command": "ls"}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    tool_result = {"type": "tool_result", "tool_use_id": start["content_block"]["id"], "content": "a.txt TOOL-DONE"}
    second: dict[str, Any] = {"model": "m", "messages": [*first["messages"], {"role": "user", "content": [tool_result]}]}
    message = json.loads(fake_api.call("POST", "/v1/messages", second)[1])
    assert message["content"] == [{"type": "text", "text": "all done"}] and message["stop_reason"] == "end_turn"
    assert fake_api.call("POST", "/v1/messages/count_tokens", second)[0] == 200
