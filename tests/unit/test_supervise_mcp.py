"""The supervise MCP server, driven through its real HTTP server on loopback."""

from __future__ import annotations

import http.client
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest

from claude_bottle.errors import BottleError
from claude_bottle.supervise.mcp import SUPPORTED_PROTOCOL_VERSIONS, SuperviseConfig
from claude_bottle.supervise.queue import (
    archive_dir, discover_pending, make_response, proposal_path, read_proposal, write_response,
)
from claude_bottle.supervise.server import SuperviseServer, make_server
from claude_bottle.supervise.tools import ContentChecks

IDENTITY = "dev-abcde"
REPO = Path(__file__).resolve().parents[2]
ROUTES = '{"routes": [{"name": "gh", "upstream": "https://api.github.com", "header": "Authorization", ' \
         '"value": "token ${GH_TOKEN}"}]}'


def _fake_routes(text: str) -> None:
    if "LITERAL" in text:
        raise BottleError("routes: routes[0].value: a literal secret")


def _fake_host_problem(pattern: object) -> str | None:
    return "is not a host" if isinstance(pattern, str) and ("/" in pattern or " " in pattern) else None


FAKE_CHECKS = ContentChecks(routes=_fake_routes, host_problem=_fake_host_problem)
JsonObj = dict[str, object]


@dataclass
class Served:
    server: SuperviseServer
    queue_dir: Path
    logs: list[str]

    @property
    def port(self) -> int:
        return cast("tuple[str, int]", self.server.server_address)[1]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    started: list[SuperviseServer] = []

    def start(*, max_wait: float = 10.0, keepalive: float = 5.0, checks: ContentChecks = FAKE_CHECKS) -> Served:
        queue_dir = tmp_path / "queue" / IDENTITY
        queue_dir.mkdir(parents=True, exist_ok=True)
        logs: list[str] = []
        config = SuperviseConfig(queue_dir=queue_dir, identity=IDENTITY, max_wait_seconds=max_wait,
                                 keepalive_seconds=keepalive, poll_seconds=0.02, checks=checks, log=logs.append)
        server = make_server(config, "127.0.0.1:0")
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        started.append(server)
        return Served(server, queue_dir, logs)

    yield start
    for server in started:
        server.stop()


def wait_until(condition: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def request(port: int, method: str, path: str, body: bytes = b"",
            headers: dict[str, str] | None = None) -> tuple[int, http.client.HTTPMessage, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body if method == "POST" else None, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def post(port: int, message: object, headers: dict[str, str] | None = None) -> tuple[int, JsonObj | None]:
    body = message if isinstance(message, bytes) else json.dumps(message).encode()
    status, _, data = request(port, "POST", "/mcp", body, {"Content-Type": "application/json",
                                                          "Accept": "application/json, text/event-stream",
                                                          **(headers or {})})
    return status, cast("JsonObj", json.loads(data)) if data else None


def rpc(method: str, params: JsonObj | None = None, rid: int | str = 1) -> JsonObj:
    msg: JsonObj = {"jsonrpc": "2.0", "id": rid, "method": method}
    if params is not None:
        msg["params"] = params
    return msg


def call(port: int, tool: str, arguments: object) -> JsonObj:
    """A tools/call answered at once (as JSON): its result."""
    status, reply = post(port, rpc("tools/call", {"name": tool, "arguments": arguments}))
    assert status == 200 and reply is not None, reply
    return cast("JsonObj", reply["result"])


def result_text(result: JsonObj) -> str:
    [content] = cast("list[JsonObj]", result["content"])
    assert content["type"] == "text"
    return str(content["text"])


class StreamedCall:
    """A tools/call whose answer arrives as an event stream."""

    def __init__(self, port: int, tool: str, arguments: JsonObj, rid: int = 7) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        body = json.dumps(rpc("tools/call", {"name": tool, "arguments": arguments}, rid))
        self.conn.request("POST", "/mcp", body, {"Content-Type": "application/json",
                                                 "Accept": "application/json, text/event-stream"})
        self.resp = self.conn.getresponse()
        self.comments = 0

    def result(self) -> JsonObj:
        event = None
        while line := self.resp.readline().decode():
            line = line.rstrip("\n")
            if line.startswith(":"):
                self.comments += 1
            elif line.startswith("event: "):
                event = line[len("event: "):]
            elif line.startswith("data: "):
                assert event == "message"
                message = cast("JsonObj", json.loads(line[len("data: "):]))
                assert message["id"] == 7 and message["jsonrpc"] == "2.0"
                return cast("JsonObj", message["result"])
        raise AssertionError("stream ended without a message")

    def close(self) -> None:
        self.conn.close()


def the_proposal_id(served: Served) -> str:
    wait_until(lambda: discover_pending(served.queue_dir.parent))
    [item] = discover_pending(served.queue_dir.parent)
    return item.id


@pytest.mark.parametrize("asked", [*SUPPORTED_PROTOCOL_VERSIONS, "2099-01-01", "1.0"])
def test_initialize_negotiates_the_protocol_version(serve: Callable[..., Served], asked: str) -> None:
    served = serve()
    status, reply = post(served.port, rpc("initialize", {"protocolVersion": asked, "capabilities": {},
                                                         "clientInfo": {"name": "t", "version": "0"}}))
    assert status == 200 and reply is not None
    result = cast("JsonObj", reply["result"])
    expected = asked if asked in SUPPORTED_PROTOCOL_VERSIONS else "2025-11-25"
    assert result["protocolVersion"] == expected
    assert result["capabilities"] == {"tools": {"listChanged": False}}
    assert cast("JsonObj", result["serverInfo"])["name"] == "claude-bottle-supervise"


def test_session_id_is_issued_and_optional(serve: Callable[..., Served]) -> None:
    served = serve()
    _, headers, _ = request(served.port, "POST", "/mcp", json.dumps(rpc("initialize", {
        "protocolVersion": "2025-11-25"})).encode())
    assert re.fullmatch(r"[0-9a-f]{32}", headers["Mcp-Session-Id"])
    _, headers, body = request(served.port, "POST", "/mcp", json.dumps(rpc("ping")).encode(),
                               {"Mcp-Session-Id": "abc123"})
    assert headers["Mcp-Session-Id"] == "abc123" and json.loads(body)["result"] == {}
    _, headers, body = request(served.port, "POST", "/mcp", json.dumps(rpc("ping")).encode())
    assert "Mcp-Session-Id" not in headers and json.loads(body)["result"] == {}


def test_notifications_are_accepted_with_202(serve: Callable[..., Served]) -> None:
    served = serve()
    notes: list[JsonObj] = [{"jsonrpc": "2.0", "method": "notifications/initialized"},
                            {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 3}},
                            {"jsonrpc": "2.0", "id": 5, "result": {}}]
    for note in notes:
        status, _, body = request(served.port, "POST", "/mcp", json.dumps(note).encode())
        assert (status, body) == (202, b"")


def test_unknown_methods_and_server_discover_get_json_rpc_errors(serve: Callable[..., Served]) -> None:
    served = serve()
    for method in ("server/discover", "resources/list", "nope"):
        status, reply = post(served.port, rpc(method, rid="x"))
        assert status == 200 and reply is not None
        assert reply["id"] == "x" and cast("JsonObj", reply["error"])["code"] == -32601


def test_tools_list_describes_four_tools_with_schemas(serve: Callable[..., Served]) -> None:
    served = serve()
    _, reply = post(served.port, rpc("tools/list"))
    assert reply is not None
    tools = {str(t["name"]): t for t in cast("list[JsonObj]", cast("JsonObj", reply["result"])["tools"])}
    assert set(tools) == {"cred-proxy-block", "pipelock-block", "capability-block", "proposal-status"}
    required = {"cred-proxy-block": ["routes", "reason"], "pipelock-block": ["reason"],
                "capability-block": ["dockerfile", "reason"], "proposal-status": ["id"]}
    for name, tool in tools.items():
        schema = cast("JsonObj", tool["inputSchema"])
        assert schema["type"] == "object" and schema["additionalProperties"] is False
        assert schema["required"] == required[name]
        assert set(cast("JsonObj", schema["properties"])) >= set(required[name])
        assert len(str(tool["description"])) > 80
    for name in ("cred-proxy-block", "pipelock-block", "capability-block"):
        assert "pending" in str(tools[name]["description"]) and "reason" in str(tools[name]["description"])
    assert "${" in str(tools["cred-proxy-block"]["description"])


@pytest.mark.parametrize(("tool", "arguments", "decision", "final", "expect"), [
    ("cred-proxy-block", {"routes": ROUTES}, "approve", ROUTES, "APPROVED by the operator"),
    ("pipelock-block", {"hosts": ["pypi.org", "pypi.org"]}, "approve-modified", "pypi.org\n",
     "APPROVED WITH CHANGES"),
    ("pipelock-block", {"allowlist": []}, "reject", "", "REJECTED"),
    ("capability-block", {"dockerfile": "FROM debian\n"}, "approve", "FROM debian\n", "rebuilt"),
])
def test_a_block_call_queues_a_proposal_and_returns_the_decision(
        serve: Callable[..., Served], tool: str, arguments: JsonObj, decision: str, final: str, expect: str) -> None:
    served = serve()
    streamed = StreamedCall(served.port, tool, {**arguments, "reason": "the build needs it"})
    try:
        assert streamed.resp.status == 200
        assert streamed.resp.headers["Content-Type"] == "text/event-stream"
        proposal_id = the_proposal_id(served)
        proposal = read_proposal(proposal_path(served.queue_dir, proposal_id))
        assert (proposal.tool, proposal.identity, proposal.reason) == (tool, IDENTITY, "the build needs it")
        if "hosts" in arguments:
            assert proposal.hosts == ("pypi.org",)  # duplicates dropped
        write_response(served.queue_dir, make_response(proposal_id, decision, "operator says so", final))
        result = streamed.result()
    finally:
        streamed.close()
    text = result_text(result)
    assert result["isError"] is False
    assert expect in text and "operator says so" in text and proposal_id in text
    if decision != "reject":
        assert final in text
    wait_until(lambda: (archive_dir(served.queue_dir) / f"{proposal_id}.response.json").exists())
    assert discover_pending(served.queue_dir.parent) == []


def test_keepalive_comments_arrive_while_waiting(serve: Callable[..., Served]) -> None:
    served = serve(keepalive=0.05)
    streamed = StreamedCall(served.port, "capability-block", {"dockerfile": "FROM x\n", "reason": "rg"})
    try:
        proposal_id = the_proposal_id(served)
        for _ in range(3):
            assert streamed.resp.readline() == b": keepalive\n"
            assert streamed.resp.readline() == b"\n"
        write_response(served.queue_dir, make_response(proposal_id, "reject", "no", ""))
        assert "REJECTED" in result_text(streamed.result())
    finally:
        streamed.close()


def test_after_max_wait_the_call_says_still_pending(serve: Callable[..., Served]) -> None:
    served = serve(max_wait=0.3)
    streamed = StreamedCall(served.port, "pipelock-block", {"hosts": ["pypi.org"], "reason": "pip"})
    try:
        result = streamed.result()
    finally:
        streamed.close()
    [item] = discover_pending(served.queue_dir.parent)
    assert result["isError"] is False
    text = result_text(result)
    assert text.startswith("Still pending") and item.id in text and "proposal-status" in text


def test_proposal_status_pending_decided_unknown(serve: Callable[..., Served]) -> None:
    served = serve(max_wait=0.05)
    streamed = StreamedCall(served.port, "pipelock-block", {"hosts": ["pypi.org"], "reason": "pip"})
    streamed.result()
    streamed.close()
    proposal_id = the_proposal_id(served)
    pending = call(served.port, "proposal-status", {"id": proposal_id})
    assert pending["isError"] is False and result_text(pending).startswith("Still pending")
    write_response(served.queue_dir, make_response(proposal_id, "approve", "", "pypi.org\n"))
    decided = call(served.port, "proposal-status", {"id": proposal_id})
    assert "APPROVED" in result_text(decided) and "(none given)" in result_text(decided)
    assert (archive_dir(served.queue_dir) / f"{proposal_id}.proposal.json").exists()
    again = call(served.port, "proposal-status", {"id": proposal_id})  # found in the archive
    assert "APPROVED" in result_text(again)
    unknown = call(served.port, "proposal-status", {"id": "20200101-000000-000000-aaaaa"})
    assert unknown["isError"] is True and "No proposal" in result_text(unknown)


def test_a_client_that_leaves_stops_the_wait_and_the_proposal_stays(serve: Callable[..., Served]) -> None:
    served = serve(keepalive=60)
    streamed = StreamedCall(served.port, "capability-block", {"dockerfile": "FROM x\n", "reason": "rg"})
    proposal_id = the_proposal_id(served)
    streamed.close()
    wait_until(lambda: any("client left" in line for line in served.logs))
    assert [i.id for i in discover_pending(served.queue_dir.parent)] == [proposal_id]


def test_stopping_the_server_ends_a_waiting_call_as_pending(serve: Callable[..., Served]) -> None:
    served = serve()
    streamed = StreamedCall(served.port, "capability-block", {"dockerfile": "FROM x\n", "reason": "rg"})
    the_proposal_id(served)
    served.server.stop()
    try:
        assert result_text(streamed.result()).startswith("Still pending")
    finally:
        streamed.close()


def test_http_surface(serve: Callable[..., Served]) -> None:
    served = serve()
    assert request(served.port, "GET", "/_health")[0] == 200
    status, headers, _ = request(served.port, "GET", "/mcp")
    assert status == 405 and headers["Allow"] == "POST"
    assert request(served.port, "DELETE", "/mcp")[0] == 405
    assert request(served.port, "GET", "/elsewhere")[0] == 404
    assert request(served.port, "POST", "/elsewhere", b"{}")[0] == 404
    ping = json.dumps(rpc("ping")).encode()
    assert request(served.port, "POST", "/mcp", ping, {"Origin": "http://evil.example"})[0] == 403
    assert request(served.port, "POST", "/mcp", ping, {"Origin": f"http://127.0.0.1:{served.port}"})[0] == 200


def _raw(port: int, head: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        chunks: list[bytes] = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def test_an_oversized_or_unsized_body_is_refused_unread(serve: Callable[..., Served]) -> None:
    served = serve()
    answer = _raw(served.port, b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n{")
    assert answer.startswith(b"HTTP/1.1 413 ") and b"over the limit" in answer
    answer = _raw(served.port, b"POST /mcp HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 411 ")


def test_the_real_content_checks_refuse_literal_secrets_and_bad_hosts(serve: Callable[..., Served]) -> None:
    pytest.importorskip("claude_bottle.pipelock")
    served = serve(checks=ContentChecks(), max_wait=0.05)
    literal = ROUTES.replace("token ${GH_TOKEN}", "token ghp_abcdefabcdef")
    result = call(served.port, "cred-proxy-block", {"routes": literal, "reason": "gh"})
    assert result["isError"] is True and "secret" in result_text(result)
    result = call(served.port, "pipelock-block", {"hosts": ["https://pypi.org/simple"], "reason": "pip"})
    assert result["isError"] is True and "hosts[0]" in result_text(result)
    assert discover_pending(served.queue_dir.parent) == []
    streamed = StreamedCall(served.port, "cred-proxy-block", {"routes": ROUTES, "reason": "gh"})
    assert result_text(streamed.result()).startswith("Still pending")
    streamed.close()


def test_the_command_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "claude_bottle.supervise", "--queue", str(tmp_path), "--identity", IDENTITY,
         "--listen", "127.0.0.1:0"], cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        match = re.search(r"on 127\.0\.0\.1:(\d+)", line)
        assert match, line
        assert request(int(match.group(1)), "GET", "/_health")[0] == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(("args", "message"), [
    (["--identity", "Bad!"], "is not a bottle identity"),
    (["--identity", IDENTITY, "--listen", "nowhere"], "expected HOST:PORT"),
    (["--identity", IDENTITY, "--queue", "/nonexistent/q"], "not a folder"),
])
def test_the_command_refuses_bad_arguments_in_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    argv = ["--queue", str(tmp_path), *args] if "--queue" not in args else args
    proc = subprocess.run([sys.executable, "-m", "claude_bottle.supervise", *argv], cwd=REPO,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert message in proc.stderr and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
