"""The MCP tools the agent sees: their schemas, argument checks, and the text it gets back.

An invalid call never reaches the queue: the agent gets a one-line reason and can fix
its call. A routes file goes through cred-proxy's own parser (so a proposal can never
carry a literal secret) and every host through pipelock's pattern check; both modules
are imported only when a call needs them, through `ContentChecks`, which tests replace.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from ..errors import BottleError, json_type
from .checks import iso_utc, shown, text_problem, utc_now
from .records import MAX_HOSTS, MAX_REASON_BYTES, MAX_TEXT_BYTES, Proposal, Response, new_proposal_id

STATUS_TOOL = "proposal-status"


def _parse_routes(text: str) -> None:
    from ..cred_proxy import parse_routes_file

    parse_routes_file(text, where="routes")


def _egress_pattern_problem(pattern: object) -> str | None:
    from ..pipelock import egress_pattern_problem

    return egress_pattern_problem(pattern)


@dataclass(frozen=True)
class ContentChecks:
    """How proposed content is judged: `routes` raises BottleError for a bad routes file,
    `host_problem` says why a host pattern is unusable (None when fine)."""

    routes: Callable[[str], None] = _parse_routes
    host_problem: Callable[[object], str | None] = _egress_pattern_problem


_REASON_SCHEMA = {
    "type": "string", "minLength": 1, "maxLength": MAX_REASON_BYTES,
    "description": "Why you need this, in a sentence or two. The operator reads it before deciding.",
}
_HOSTS_SCHEMA = {
    "type": "array", "maxItems": MAX_HOSTS,
    "items": {"type": "string", "minLength": 1, "maxLength": 253},
}
_AFTER_CALL = (
    " The call waits while a human operator reviews the proposal (this can take many minutes) and "
    "then returns the decision: approved, approved with the operator's edits, or rejected, with the "
    "operator's reason and the content that was actually applied. If nobody decides within the wait "
    "limit it returns 'still pending' with the proposal id: call proposal-status with that id later."
)

TOOL_DEFINITIONS: tuple[dict[str, object], ...] = (
    {
        "name": "cred-proxy-block",
        "description": (
            "Ask for a new or changed credential-proxy route, e.g. when an API you must call needs a "
            "credential you do not have, or its cred-proxy route is missing. Pass the FULL proposed "
            "routes.json text (all current routes plus your change): "
            '{"routes": [{"name": "github", "upstream": "https://api.github.com", "header": '
            '"Authorization", "value": "token ${GH_TOKEN}"}]}. Secrets are ONLY written as ${ENV_NAME} '
            "references, never as literal values; the operator supplies them." + _AFTER_CALL
        ),
        "inputSchema": {
            "type": "object",
            "properties": {
                "routes": {"type": "string", "minLength": 1, "maxLength": MAX_TEXT_BYTES,
                           "description": "The full proposed routes.json text."},
                "reason": _REASON_SCHEMA,
            },
            "required": ["routes", "reason"],
            "additionalProperties": False,
        },
    },
    {
        "name": "pipelock-block",
        "description": (
            "Ask for network access to more hosts, e.g. after a request failed with 403 'domain not in "
            "allowlist'. Pass EITHER `hosts` (hosts to add to the current allowlist) OR `allowlist` "
            "(the full proposed list, replacing the current one), plus a reason. Entries are exact host "
            "names (pypi.org) or wildcards (*.pythonhosted.org, which also matches the apex); no "
            "schemes, ports or paths." + _AFTER_CALL
        ),
        "inputSchema": {
            "type": "object",
            "properties": {
                "hosts": {**_HOSTS_SCHEMA, "minItems": 1,
                          "description": "Hosts to add to the current allowlist."},
                "allowlist": {**_HOSTS_SCHEMA, "description": "The full proposed allowlist."},
                "reason": _REASON_SCHEMA,
            },
            "required": ["reason"],
            "additionalProperties": False,
        },
    },
    {
        "name": "capability-block",
        "description": (
            "Ask for a different agent image, when you need a tool or system package that cannot be "
            "installed in this bottle. Pass the FULL proposed Dockerfile text (it replaces the current "
            "one) and a reason. If it is approved, the bottle is rebuilt from it: this session stops, "
            "and the operator resumes it in the new bottle with this conversation." + _AFTER_CALL
        ),
        "inputSchema": {
            "type": "object",
            "properties": {
                "dockerfile": {"type": "string", "minLength": 1, "maxLength": MAX_TEXT_BYTES,
                               "description": "The full proposed Dockerfile text."},
                "reason": _REASON_SCHEMA,
            },
            "required": ["dockerfile", "reason"],
            "additionalProperties": False,
        },
    },
    {
        "name": STATUS_TOOL,
        "description": (
            "Look up a proposal you made earlier, by the id a *-block tool returned when it was still "
            "pending. Answers at once: still pending; decided (approved, approved with edits, or "
            "rejected, with the operator's reason and the applied content); or unknown id."
        ),
        "inputSchema": {
            "type": "object",
            "properties": {"id": {"type": "string", "description": "The proposal id."}},
            "required": ["id"],
            "additionalProperties": False,
        },
    },
)
BLOCK_TOOLS = ("cred-proxy-block", "pipelock-block", "capability-block")
TOOL_NAMES = (*BLOCK_TOOLS, STATUS_TOOL)
_ALLOWED_ARGS = {
    "cred-proxy-block": ("reason", "routes"), "pipelock-block": ("allowlist", "hosts", "reason"),
    "capability-block": ("dockerfile", "reason"), STATUS_TOOL: ("id",),
}


def proposal_from_call(tool: str, arguments: dict[str, object], *, identity: str,
                       checks: ContentChecks) -> Proposal:
    """Check a block tool's arguments and make the Proposal; BottleError says what is wrong."""
    check_argument_names(tool, arguments)
    reason = _text_arg(arguments, "reason", max_bytes=MAX_REASON_BYTES)
    routes = hosts = allowlist = dockerfile = None
    if tool == "cred-proxy-block":
        routes = _text_arg(arguments, "routes", max_bytes=MAX_TEXT_BYTES)
        try:
            checks.routes(routes)
        except RecursionError:
            raise BottleError("routes: nested too deeply") from None
    elif tool == "capability-block":
        dockerfile = _text_arg(arguments, "dockerfile", max_bytes=MAX_TEXT_BYTES)
    else:
        if ("hosts" in arguments) == ("allowlist" in arguments):
            raise BottleError("pass exactly one of 'hosts' (hosts to add) or 'allowlist' (the full list)")
        if "hosts" in arguments:
            hosts = _hosts_arg(arguments, "hosts", checks=checks)
        else:
            allowlist = _hosts_arg(arguments, "allowlist", checks=checks)
    return Proposal(id=new_proposal_id(), identity=identity, tool=tool, reason=reason,
                    created_at=iso_utc(utc_now()), routes=routes, hosts=hosts, allowlist=allowlist,
                    dockerfile=dockerfile)


def check_argument_names(tool: str, arguments: dict[str, object]) -> None:
    unknown = sorted(set(arguments) - set(_ALLOWED_ARGS[tool]))
    if unknown:
        raise BottleError(f"unknown argument {shown(unknown[0])} (expected: {', '.join(_ALLOWED_ARGS[tool])})")


def _text_arg(arguments: dict[str, object], key: str, *, max_bytes: int) -> str:
    if key not in arguments:
        raise BottleError(f"missing argument {key!r}")
    value = arguments[key]
    if not isinstance(value, str):
        raise BottleError(f"argument {key!r} must be a string, not {json_type(value)}")
    if not value.strip():
        raise BottleError(f"argument {key!r} must not be empty")
    problem = text_problem(value, max_bytes=max_bytes)
    if problem:
        raise BottleError(f"argument {key!r} {problem}")
    return value


def _hosts_arg(arguments: dict[str, object], key: str, *, checks: ContentChecks) -> tuple[str, ...]:
    value = arguments[key]
    if not isinstance(value, list):
        raise BottleError(f"argument {key!r} must be a list of host names, not {json_type(value)}")
    items = cast("list[object]", value)
    if key == "hosts" and not items:
        raise BottleError("argument 'hosts' must name at least one host")
    if len(items) > MAX_HOSTS:
        raise BottleError(f"argument {key!r} has {len(items)} entries, more than the limit of {MAX_HOSTS}")
    for i, item in enumerate(items):
        problem = f"must be a string, not {json_type(item)}" if not isinstance(item, str) else checks.host_problem(item)
        if problem:
            shown_item = f" {shown(item)}" if isinstance(item, str) else ""
            raise BottleError(f"{key}[{i}]{shown_item}: {problem}")
    return tuple(dict.fromkeys(cast("list[str]", items)))


_CONTENT_NAMES = {"cred-proxy-block": "routes file", "pipelock-block": "allowlist",
                  "capability-block": "Dockerfile"}


def decision_text(proposal_id: str, tool: str | None, response: Response) -> str:
    """What the agent reads once the operator has decided."""
    what = _CONTENT_NAMES.get(tool or "", "content")
    reason = response.reason.strip() or "(none given)"
    if response.decision == "reject":
        return (f"Proposal {proposal_id} was REJECTED by the operator. Nothing was changed.\n"
                f"Operator's reason: {reason}")
    head = (f"Proposal {proposal_id} was APPROVED by the operator." if response.decision == "approve" else
            f"Proposal {proposal_id} was APPROVED WITH CHANGES: the operator edited it, so what was "
            f"applied differs from what you proposed.")
    after = ""
    if tool == "capability-block":
        after = ("\nThe bottle is being rebuilt from this Dockerfile: this session will stop and be resumed "
                 "in the new bottle.")
    elif tool is not None:
        after = f"\nThe new {what} is in effect now."
    return (f"{head}\nOperator's reason: {reason}{after}\n"
            f"Applied {what}:\n{response.final_content}")


def pending_text(proposal_id: str) -> str:
    return (f"Still pending: the operator has not decided proposal {proposal_id} yet. It stays queued; "
            f'call proposal-status with {{"id": "{proposal_id}"}} later to learn the decision.')
