"""Fuzzing the MCP message handler: any JSON value, near-valid JSON-RPC requests.

`handle_message` gets what the agent sends, parsed; whatever it is, the answer is a Reply
(whose JSON errors are one line) or a Wait for a proposal it queued, never an exception.
Only `handle_message` is called, so a Wait is inspected and never waited on.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import cast

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from claude_bottle.supervise.mcp import SUPPORTED_PROTOCOL_VERSIONS, Reply, SuperviseConfig, Wait, handle_message
from claude_bottle.supervise.queue import (
    Proposal, archive, make_response, proposal_path, read_proposal, response_path, write_proposal, write_response,
)
from claude_bottle.supervise.records import ID_RE, MAX_HOSTS
from claude_bottle.supervise.tools import TOOL_NAMES
from tests.unit.test_fuzz_common import (
    bug_settings, fuzz_settings, json_lists, json_scalars, json_values, leaf, near_object, odd_text, parse,
    sometimes_wrong, weighted, wrong_values,
)
from tests.unit.test_fuzz_manifest import hosts
from tests.unit.test_fuzz_proposals import IDENTITY, reasons
from tests.unit.test_fuzz_routes import routes_file_objects, routes_texts

# Proposals already in the queue, in each state proposal-status can find.
DECIDED = "20250101-000000-000000-aaaaa"
PENDING = "20250101-000000-000000-bbbbb"
BROKEN = "20250101-000000-000000-ccccc"  # its response file is not JSON
CLOSED = "20250101-000000-000000-ddddd"  # archived without a decision


def fill_queue(queue_dir: Path) -> None:
    for pid in (DECIDED, PENDING, BROKEN, CLOSED):
        write_proposal(queue_dir, Proposal(id=pid, identity=IDENTITY, tool="pipelock-block", reason="need pypi",
                                           created_at="2025-01-01T00:00:00.000000Z", hosts=("pypi.org",)))
    write_response(queue_dir, make_response(DECIDED, "approve-modified", "only pypi", "pypi.org\n"))
    response_path(queue_dir, BROKEN).write_bytes(b"{not json")
    archive(queue_dir, CLOSED)


request_ids: SearchStrategy[object] = weighted(
    (8, st.integers()), (6, odd_text(12)), (1, st.sampled_from((None, True, 1.5, [1], {"a": 1}))),
)
status_ids: SearchStrategy[str] = leaf((DECIDED, PENDING, BROKEN, CLOSED, "20250101-000000-000000-zzzzz"),
                                       ("", "A", "../x", "a" * 65), st.from_regex(ID_RE, fullmatch=True))
routes_arguments: SearchStrategy[str] = weighted(
    (3, routes_file_objects.map(json.dumps)), (1, routes_texts), (1, odd_text()),
)
host_arguments: SearchStrategy[list[str]] = weighted(
    (8, json_lists(hosts)), (1, st.just(["h.org"] * (MAX_HOSTS + 1))), (1, st.just([])),
)
dockerfiles: SearchStrategy[str] = leaf(("FROM debian:bookworm-slim\nRUN apt-get install -y jq\n",),
                                        ("", " ", "\x1b]0;x\x07", "a" * 200_000))


@st.composite
def tool_arguments(draw: st.DrawFn, tool: str) -> object:
    reason = sometimes_wrong(reasons)
    if tool == "cred-proxy-block":
        args = near_object({"reason": reason, "routes": sometimes_wrong(routes_arguments)})
    elif tool == "pipelock-block":
        key = draw(st.sampled_from(("hosts", "allowlist")))
        args = near_object({"reason": reason, key: sometimes_wrong(host_arguments)},
                           {"allowlist" if key == "hosts" else "hosts": wrong_values})
    elif tool == "capability-block":
        args = near_object({"reason": reason, "dockerfile": sometimes_wrong(dockerfiles)})
    elif tool == "proposal-status":
        args = near_object({"id": sometimes_wrong(status_ids)})
    else:
        args = st.dictionaries(st.sampled_from(("reason", "routes", "hosts", "id")), wrong_values, max_size=2)
    return draw(weighted((8, args), (1, st.just(None)), (1, wrong_values)))


@st.composite
def tools_call_params(draw: st.DrawFn) -> dict[str, object]:
    name = draw(leaf(TOOL_NAMES, ("rm-rf", "", "Pipelock-block", "proposal_status")))
    params: dict[str, object] = {"name": draw(sometimes_wrong(st.just(name)))}
    arguments = draw(tool_arguments(name))
    if arguments is not None or draw(st.booleans()):
        params["arguments"] = arguments
    return params


@st.composite
def requests(draw: st.DrawFn) -> dict[str, object]:
    """A JSON-RPC message: mostly a request for a method the server has, each part sometimes wrong."""
    method = draw(leaf(("tools/call", "tools/call", "tools/call", "initialize", "ping", "tools/list"),
                       ("notifications/initialized", "resources/list", "", "Tools/Call")))
    if method == "tools/call":
        params = draw(sometimes_wrong(tools_call_params()))
    elif method == "initialize":
        params = draw(sometimes_wrong(near_object(
            {"protocolVersion": sometimes_wrong(leaf(SUPPORTED_PROTOCOL_VERSIONS, ("2024-11-05", "")))},
            {"capabilities": wrong_values, "clientInfo": wrong_values})))
    else:
        params = draw(weighted((3, st.just({})), (1, wrong_values)))
    optional: dict[str, SearchStrategy[object]] = {}
    if draw(st.sampled_from(range(10))) == 9:  # a client's response, or one carrying both
        optional.update(result=json_scalars, error=json_scalars)
    # The envelope is rarely wrong here: test_any_json_value_gets_a_reply covers that.
    return draw(near_object(
        {"jsonrpc": weighted((15, st.just("2.0")), (1, wrong_values)), "id": request_ids,
         "method": weighted((15, st.just(method)), (1, wrong_values)), "params": st.just(params)},
        optional,
    ))


@pytest.fixture(scope="module")
def queue_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A filled queue folder, made once (writes fsync) and copied for each example."""
    queue_dir = tmp_path_factory.mktemp("queue") / IDENTITY
    queue_dir.mkdir()
    fill_queue(queue_dir)
    return queue_dir


def answer(msg: object, template: Path) -> Reply | Wait:
    """handle_message against a fresh copy of the queue; checks the answer is well-formed."""
    with tempfile.TemporaryDirectory() as tmp:
        queue_dir = Path(tmp) / IDENTITY
        shutil.copytree(template, queue_dir, symlinks=True)
        logs: list[str] = []
        config = SuperviseConfig(queue_dir=queue_dir, identity=IDENTITY, log=logs.append)
        outcome = parse(lambda: handle_message(msg, config))
        assert isinstance(outcome, (Reply, Wait)), f"handle_message gave {outcome!r}"
        if isinstance(outcome, Wait):
            assert read_proposal(proposal_path(queue_dir, outcome.proposal.id), identity=IDENTITY) == outcome.proposal
        else:
            assert_reply_is_sound(outcome)
        return outcome


def assert_reply_is_sound(reply: Reply) -> None:
    assert reply.status in (200, 202, 400)
    if reply.message is None:
        assert reply.status == 202
        return
    json.dumps(reply.message)  # what the transport sends; must not fail
    assert reply.message["jsonrpc"] == "2.0"
    error = reply.message.get("error")
    if error is not None:
        message = cast("dict[str, object]", error)["message"]
        assert isinstance(message, str) and message and "\n" not in message
    result = cast("dict[str, object]", reply.message.get("result", {}))
    if result.get("isError"):
        content = cast("list[dict[str, object]]", result["content"])
        assert all("\n" not in str(c["text"]) for c in content)


@fuzz_settings(300)
@given(json_values)
def test_any_json_value_gets_a_reply(queue_template: Path, msg: object) -> None:
    answer(msg, queue_template)


@fuzz_settings(600)
@given(requests())
def test_near_valid_requests_get_a_reply_or_a_wait(queue_template: Path, msg: dict[str, object]) -> None:
    answer(msg, queue_template)


# --- bugs found by the tests above, not fixed yet ----------------------------------------


def _cred_proxy_call(upstream: str) -> dict[str, object]:
    route = {"name": "a", "upstream": upstream, "header": "Authorization", "value": "Bearer ${T}"}
    arguments = {"reason": "need it", "routes": json.dumps({"routes": [route]})}
    return {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "cred-proxy-block", "arguments": arguments}}


@bug_settings()
@given(st.sampled_from(("http://[/", "https://]/", "http://[x]/", "https://[::1/")))
@example("http://[/")
def test_bug_cred_proxy_call_with_a_broken_ip_literal(upstream: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config = SuperviseConfig(queue_dir=Path(tmp), identity=IDENTITY, log=lambda line: None)
        parse(lambda: handle_message(_cred_proxy_call(upstream), config), tolerate_known_bugs=False)
