"""Bad MCP bodies and bad tool arguments: (input, expected error) tables, through real HTTP."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import pytest

from claude_bottle.supervise.queue import discover_pending
from tests.unit.test_supervise_mcp import JsonObj, Served, call, post, result_text, serve

__all__ = ["serve"]  # the fixture, used by name below

_PING = b'"jsonrpc": "2.0", "id": 1, "method": "ping"'

# (raw body, HTTP status, JSON-RPC error code, text in the message)
BAD_BODIES: list[tuple[bytes, int, int, str]] = [
    (b"{", 400, -32700, "parse error"),
    (b"", 400, -32700, "parse error"),
    (b"\xff\xfe", 400, -32700, "parse error"),
    (b"{" + _PING + b', "x": NaN}', 400, -32700, "NaN is not JSON"),
    (b"{" + _PING + b', "id": 2}', 400, -32700, "duplicate key"),
    (b"[" * 100_000, 400, -32700, "nested too deeply"),
    (b"[]", 400, -32600, "batches are not supported"),
    (b"[{" + _PING + b"}]", 400, -32600, "batches are not supported"),
    (b'"ping"', 400, -32600, "not a string"),
    (b'{"jsonrpc": "1.0", "id": 1, "method": "ping"}', 400, -32600, 'jsonrpc must be "2.0"'),
    (b'{"id": 1, "method": "ping"}', 400, -32600, 'jsonrpc must be "2.0"'),
    (b'{"jsonrpc": "2.0", "id": 1}', 400, -32600, "no method"),
    (b'{"jsonrpc": "2.0", "id": 1, "method": 5}', 400, -32600, "method must be a string"),
    (b'{"jsonrpc": "2.0", "id": true, "method": "ping"}', 400, -32600, "id must be a string or an integer"),
    (b'{"jsonrpc": "2.0", "id": null, "method": "ping"}', 400, -32600, "id must be a string or an integer"),
    (b'{"jsonrpc": "2.0", "id": 1.5, "method": "ping"}', 400, -32600, "id must be a string or an integer"),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": [1]}', 200, -32602, "params must be an object"),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}', 200, -32602, "protocolVersion"),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {}}', 200, -32602, "params.name"),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "rm-rf"}}', 200, -32602,
     "unknown tool 'rm-rf'"),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "shell/exec"}', 200, -32601, "method not found"),
]


@pytest.mark.parametrize(("body", "status", "code", "message"), BAD_BODIES)
def test_bad_bodies_get_json_rpc_errors(serve: Callable[..., Served], body: bytes, status: int, code: int,
                                        message: str) -> None:
    served = serve()
    got_status, reply = post(served.port, body)
    assert got_status == status and reply is not None
    error = cast("JsonObj", reply["error"])
    assert error["code"] == code and message in str(error["message"])
    assert "\n" not in str(error["message"])


_OK_ROUTES = '{"routes": []}'
_MANY_HOSTS = [f"h{i}.example.org" for i in range(300)]

# (tool, arguments, text in the one-line error)
BAD_ARGUMENTS: list[tuple[str, object, str]] = [
    ("cred-proxy-block", [], "arguments must be an object, not a list"),
    ("cred-proxy-block", {"reason": "r"}, "missing argument 'routes'"),
    ("cred-proxy-block", {"routes": {"routes": []}, "reason": "r"}, "'routes' must be a string, not an object"),
    ("cred-proxy-block", {"routes": "LITERAL", "reason": "r"}, "a literal secret"),
    ("cred-proxy-block", {"routes": "x" * 200_000, "reason": "r"}, "more than the limit"),
    ("cred-proxy-block", {"routes": _OK_ROUTES}, "missing argument 'reason'"),
    ("cred-proxy-block", {"routes": _OK_ROUTES, "reason": ""}, "'reason' must not be empty"),
    ("cred-proxy-block", {"routes": _OK_ROUTES, "reason": 42}, "'reason' must be a string, not a number"),
    ("cred-proxy-block", {"routes": _OK_ROUTES, "reason": "y" * 4097}, "limit of 4096"),
    ("cred-proxy-block", {"routes": _OK_ROUTES, "reason": "see \x1b]8;;http://x\x07"}, "U+001B"),
    ("cred-proxy-block", {"routes": _OK_ROUTES, "reason": "r", "upstream": "x"}, "unknown argument 'upstream'"),
    ("pipelock-block", {"reason": "r"}, "exactly one of 'hosts'"),
    ("pipelock-block", {"hosts": ["a.org"], "allowlist": ["a.org"], "reason": "r"}, "exactly one of 'hosts'"),
    ("pipelock-block", {"hosts": "pypi.org", "reason": "r"}, "must be a list of host names, not a string"),
    ("pipelock-block", {"hosts": [], "reason": "r"}, "at least one host"),
    ("pipelock-block", {"hosts": [7], "reason": "r"}, "hosts[0]: must be a string, not a number"),
    ("pipelock-block", {"hosts": ["ok.org", "pypi.org/simple"], "reason": "r"}, "hosts[1] 'pypi.org/simple'"),
    ("pipelock-block", {"allowlist": _MANY_HOSTS, "reason": "r"}, "more than the limit of 256"),
    ("capability-block", {"dockerfile": "", "reason": "r"}, "'dockerfile' must not be empty"),
    ("capability-block", {"dockerfile": "RUN echo hi\u202e#", "reason": "r"}, "U+202E"),
    ("capability-block", {"dockerfile": "FROM x\n", "reason": "r", "extra": 1}, "unknown argument 'extra'"),
    ("proposal-status", {}, "missing argument 'id'"),
    ("proposal-status", {"id": "../../etc/passwd"}, "is not a proposal id"),
    ("proposal-status", {"id": 12}, "id a number is not a proposal id"),
    ("proposal-status", {"id": "x", "verbose": True}, "unknown argument 'verbose'"),
]


@pytest.mark.parametrize(("tool", "arguments", "message"), BAD_ARGUMENTS)
def test_bad_arguments_are_tool_errors_and_queue_nothing(serve: Callable[..., Served], tool: str,
                                                         arguments: object, message: str) -> None:
    served = serve()
    result: JsonObj = call(served.port, tool, arguments)
    text = result_text(result)
    assert result["isError"] is True
    assert message in text and "\n" not in text
    assert discover_pending(served.queue_dir.parent) == []
