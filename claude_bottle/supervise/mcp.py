"""MCP over JSON-RPC 2.0: what the supervise server answers to each message.

`handle_message` is the whole protocol and knows nothing of HTTP. Most requests get a
Reply at once; a valid block-tool call queues its proposal and returns a Wait, which the
transport (`server.py`) turns into an event stream that ends when the operator decides.
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from ..errors import BottleError
from .queue import Proposal, archive, proposal_status, write_proposal
from ..errors import json_type
from .checks import shown
from .records import ID_RE
from .tools import (
    STATUS_TOOL, TOOL_DEFINITIONS, TOOL_NAMES, ContentChecks, check_argument_names,
    decision_text, pending_text, proposal_from_call,
)

SUPPORTED_PROTOCOL_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26")  # newest first
SERVER_INFO = {"name": "claude-bottle-supervise", "version": "0.1.0"}
INSTRUCTIONS = (
    "This bottle lets you reach only what the operator allowed. When you need more - a network host "
    "(pipelock-block), a credential for an API (cred-proxy-block) or a different image "
    "(capability-block) - propose it with these tools. A human decides; each call waits for the decision."
)

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

RequestId = str | int


def _log_stderr(line: str) -> None:
    print(f"supervise: {line}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class SuperviseConfig:
    queue_dir: Path  # this identity's queue folder (the sidecar's bind mount)
    identity: str
    max_wait_seconds: float = 1800.0
    keepalive_seconds: float = 15.0
    poll_seconds: float = 0.25
    checks: ContentChecks = field(default_factory=ContentChecks)
    log: Callable[[str], None] = _log_stderr


@dataclass(frozen=True)
class Reply:
    """Answer now: HTTP `status` with `message` as JSON, or no body (202) when it is None."""

    status: int
    message: dict[str, object] | None
    session_id: str | None = None


@dataclass(frozen=True)
class Wait:
    """Stream keepalives until the operator answers `proposal`, then the tools/call result."""

    request_id: RequestId
    proposal: Proposal


def error_reply(request_id: RequestId | None, code: int, message: str, *, status: int = 200) -> Reply:
    return Reply(status, {"jsonrpc": "2.0", "id": request_id,
                          "error": {"code": code, "message": _one_line(message)}})


def result_message(request_id: RequestId, result: dict[str, object]) -> dict[str, object]:
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


def tool_result(text: str, *, is_error: bool = False) -> dict[str, object]:
    return {"content": [{"type": "text", "text": text}], "isError": is_error}


def _one_line(text: str) -> str:
    return " ".join(text.split("\n"))


def handle_message(msg: object, config: SuperviseConfig) -> Reply | Wait:
    """One parsed JSON-RPC message in, what to answer out (may write a proposal)."""
    if isinstance(msg, list):
        return error_reply(None, INVALID_REQUEST, "batches are not supported: send one message per POST",
                           status=400)
    if not isinstance(msg, dict):
        return error_reply(None, INVALID_REQUEST, f"a JSON-RPC message is an object, not {json_type(msg)}",
                           status=400)
    m = cast("dict[str, object]", msg)
    raw_id = m.get("id")
    rid: RequestId | None = raw_id if isinstance(raw_id, (str, int)) and not isinstance(raw_id, bool) else None
    if m.get("jsonrpc") != "2.0":
        return error_reply(rid, INVALID_REQUEST, 'jsonrpc must be "2.0"', status=400)
    if "method" not in m:
        if rid is not None and ("result" in m or "error" in m):
            return Reply(202, None)  # a client's response; this server never asks anything
        return error_reply(None, INVALID_REQUEST, "message has no method", status=400)
    method = m["method"]
    if not isinstance(method, str):
        return error_reply(rid, INVALID_REQUEST, "method must be a string", status=400)
    if "id" not in m:
        return Reply(202, None)  # a notification: initialized, cancelled, ...
    if rid is None:
        return error_reply(None, INVALID_REQUEST, "id must be a string or an integer", status=400)
    params = m.get("params", {})
    if not isinstance(params, dict):
        return error_reply(rid, INVALID_PARAMS, f"params must be an object, not {json_type(params)}")
    handler = _METHODS.get(method)
    if handler is None:
        return error_reply(rid, METHOD_NOT_FOUND, f"method not found: {shown(method)}")
    return handler(rid, cast("dict[str, object]", params), config)


def _initialize(rid: RequestId, params: dict[str, object], config: SuperviseConfig) -> Reply:
    asked = params.get("protocolVersion")
    if not isinstance(asked, str):
        return error_reply(rid, INVALID_PARAMS, "initialize needs params.protocolVersion (a string)")
    version = asked if asked in SUPPORTED_PROTOCOL_VERSIONS else SUPPORTED_PROTOCOL_VERSIONS[0]
    result: dict[str, object] = {
        "protocolVersion": version, "capabilities": {"tools": {"listChanged": False}},
        "serverInfo": SERVER_INFO, "instructions": INSTRUCTIONS,
    }
    return Reply(200, result_message(rid, result), session_id=secrets.token_hex(16))


def _ping(rid: RequestId, params: dict[str, object], config: SuperviseConfig) -> Reply:
    return Reply(200, result_message(rid, {}))


def _tools_list(rid: RequestId, params: dict[str, object], config: SuperviseConfig) -> Reply:
    return Reply(200, result_message(rid, {"tools": list(TOOL_DEFINITIONS)}))


def _tools_call(rid: RequestId, params: dict[str, object], config: SuperviseConfig) -> Reply | Wait:
    name = params.get("name")
    if not isinstance(name, str):
        return error_reply(rid, INVALID_PARAMS, "tools/call needs params.name (a string)")
    if name not in TOOL_NAMES:
        return error_reply(rid, INVALID_PARAMS, f"unknown tool {shown(name)} (tools: {', '.join(TOOL_NAMES)})")
    arguments = params.get("arguments")
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        return _tool_reply(rid, f"invalid {name} call: arguments must be an object, not {json_type(arguments)}",
                           is_error=True)
    args = cast("dict[str, object]", arguments)
    if name == STATUS_TOOL:
        return _proposal_status(rid, args, config)
    try:
        proposal = proposal_from_call(name, args, identity=config.identity, checks=config.checks)
    except BottleError as e:
        return _tool_reply(rid, f"invalid {name} call: {e}", is_error=True)
    except ImportError as e:  # fail closed: content nobody can check is not queued
        config.log(f"cannot check a {name} proposal: {e}")
        return _tool_reply(rid, f"the {name} proposal cannot be checked here ({e}); it was not queued",
                           is_error=True)
    try:
        write_proposal(config.queue_dir, proposal)
    except BottleError as e:
        config.log(str(e))
        return _tool_reply(rid, f"the proposal could not be queued: {e}", is_error=True)
    config.log(f"proposal {proposal.id} ({name}) queued; waiting for the operator")
    return Wait(rid, proposal)


def _proposal_status(rid: RequestId, args: dict[str, object], config: SuperviseConfig) -> Reply:
    try:
        check_argument_names(STATUS_TOOL, args)
    except BottleError as e:
        return _tool_reply(rid, f"invalid {STATUS_TOOL} call: {e}", is_error=True)
    if "id" not in args:
        return _tool_reply(rid, f"invalid {STATUS_TOOL} call: missing argument 'id'", is_error=True)
    proposal_id = args["id"]
    if not isinstance(proposal_id, str) or not ID_RE.fullmatch(proposal_id):
        shown_id = shown(proposal_id) if isinstance(proposal_id, str) else json_type(proposal_id)
        return _tool_reply(rid, f"invalid {STATUS_TOOL} call: id {shown_id} is not a proposal id", is_error=True)
    answer = answer_for(config, proposal_id) or Answer(pending_text(proposal_id))
    if answer.decided:
        archive_quietly(config, proposal_id)  # the agent has its answer
    return _tool_reply(rid, answer.text, is_error=answer.is_error)


@dataclass(frozen=True)
class Answer:
    text: str
    is_error: bool = False
    decided: bool = False


def answer_for(config: SuperviseConfig, proposal_id: str) -> Answer | None:
    """What the agent is told about a proposal now; None while it is pending."""
    try:
        status = proposal_status(config.queue_dir, proposal_id)
    except BottleError as e:
        return Answer(f"cannot read the state of proposal {proposal_id}: {e}", is_error=True)
    if status.state == "pending":
        return None
    if status.state == "closed":
        return Answer(f"Proposal {proposal_id} was removed from the queue without a decision; nothing was changed.")
    if status.state == "unknown" or status.response is None:
        return Answer(f"No proposal {proposal_id} is known in this bottle's queue.", is_error=True)
    tool = status.proposal.tool if status.proposal is not None else None
    return Answer(decision_text(proposal_id, tool, status.response), decided=True)


def archive_quietly(config: SuperviseConfig, proposal_id: str) -> None:
    try:
        archive(config.queue_dir, proposal_id)
    except BottleError as e:
        config.log(str(e))


def _tool_reply(rid: RequestId, text: str, *, is_error: bool) -> Reply:
    return Reply(200, result_message(rid, tool_result(_one_line(text) if is_error else text, is_error=is_error)))


_METHODS: dict[str, Callable[[RequestId, dict[str, object], SuperviseConfig], Reply | Wait]] = {
    "initialize": _initialize,
    "ping": _ping,
    "tools/list": _tools_list,
    "tools/call": _tools_call,
}
