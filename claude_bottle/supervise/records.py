"""What travels through the queue: a Proposal from the agent, a Response from the operator.

Both are frozen dataclasses that validate themselves on construction, so an invalid one
cannot be written, and `from_json` turns any fault in a file into one BottleError line.
Text fields refuse control and invisible characters: the operator reviews this content on
a terminal, and an escape sequence or a bidi override could make it read differently
from what would be applied.
"""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Iterable, Sequence, Set as AbstractSet
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import NoReturn, cast

from ..bottle_state import IDENTITY_RE
from ..errors import BottleError
from ..errors import json_type
from .checks import InvalidRecord, iso_utc, shown, text_problem, timestamp_problem, utc_now

TOOLS = ("cred-proxy-block", "pipelock-block", "capability-block")
DECISIONS = ("approve", "approve-modified", "reject")
FORMAT_VERSION = 1

MAX_FILE_BYTES = 256 * 1024  # any queue file; larger is refused unread
MAX_TEXT_BYTES = 100 * 1024  # a proposed routes file or Dockerfile
MAX_REASON_BYTES = 4096
MAX_HOSTS = 256
MAX_HOST_CHARS = 253

ID_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"
_HOST_CHARS_RE = re.compile(r"[\x21-\x7e]+")  # the syntax is pipelock's to judge; this keeps the file sane

_PROPOSAL_KEYS = ("version", "id", "identity", "tool", "reason", "created_at")
_CONTENT_KEYS = {
    "cred-proxy-block": (("routes",),),
    "pipelock-block": (("hosts",), ("allowlist",)),
    "capability-block": (("dockerfile",),),
}
_PROPOSAL_ALLOWED = frozenset(_PROPOSAL_KEYS + ("routes", "hosts", "allowlist", "dockerfile"))
_RESPONSE_KEYS = ("version", "id", "decision", "reason", "final_content", "decided_at")

_id_lock = threading.Lock()
_last_id_time = datetime.min.replace(tzinfo=timezone.utc)


def new_proposal_id() -> str:
    """`20250131-120000-123456-k3j9x`: sorts by arrival (strictly, within one process)."""
    global _last_id_time
    with _id_lock:
        now = max(utc_now(), _last_id_time + timedelta(microseconds=1))
        _last_id_time = now
    suffix = "".join(secrets.choice(_BASE36) for _ in range(5))
    return f"{now:%Y%m%d-%H%M%S-%f}-{suffix}"


def check_id(proposal_id: str) -> str:
    """Ids become file names: refuse anything that is not [a-z0-9][a-z0-9-]{0,63}."""
    if not ID_RE.fullmatch(proposal_id):
        raise BottleError(f"{shown(proposal_id)} is not a proposal id (expected [a-z0-9][a-z0-9-]{{0,63}})")
    return proposal_id


def _text_field_problem(key: str, value: str, *, max_bytes: int, empty_ok: bool = False) -> str | None:
    if not empty_ok and (not value or value.isspace()):
        return f"{key} must not be empty"
    problem = text_problem(value, max_bytes=max_bytes)
    return f"{key} {problem}" if problem else None


def _hosts_problem(key: str, hosts: Sequence[str], *, empty_ok: bool) -> str | None:
    if not hosts and not empty_ok:
        return f"{key} must name at least one host"
    if len(hosts) > MAX_HOSTS:
        return f"{key} has {len(hosts)} entries, more than the limit of {MAX_HOSTS}"
    for i, host in enumerate(hosts):
        if len(host) > MAX_HOST_CHARS or not _HOST_CHARS_RE.fullmatch(host):
            return f"{key}[{i}] {shown(host)} is not a host name"
    return None


@dataclass(frozen=True, slots=True)
class Proposal:
    """An agent's request for more access; exactly the content fields of its tool are set.

    cred-proxy-block: `routes`, the full proposed routes.json text.
    pipelock-block: `hosts` (hosts to add to the live allowlist) or `allowlist` (a full list).
    capability-block: `dockerfile`, the full proposed Dockerfile text.
    """

    id: str
    identity: str
    tool: str
    reason: str
    created_at: str
    routes: str | None = None
    hosts: tuple[str, ...] | None = None
    allowlist: tuple[str, ...] | None = None
    dockerfile: str | None = None

    def __post_init__(self) -> None:
        problem = _proposal_problem(self)
        if problem:
            raise InvalidRecord(f"proposal {shown(self.id)}", problem)

    @property
    def content(self) -> str:
        """The proposed content as the operator reviews and edits it (hosts: one a line)."""
        if self.routes is not None:
            return self.routes
        if self.dockerfile is not None:
            return self.dockerfile
        hosts = self.hosts if self.hosts is not None else self.allowlist or ()
        return "".join(f"{h}\n" for h in hosts)

    def proposed_allowlist(self, live: Iterable[str]) -> tuple[str, ...]:
        """pipelock-block: the full allowlist this proposal asks for, given the live one."""
        if self.tool != "pipelock-block":
            raise BottleError(f"proposal {self.id} is a {self.tool}, not a pipelock-block")
        if self.allowlist is not None:
            return self.allowlist
        return tuple(dict.fromkeys([*live, *(self.hosts or ())]))

    def to_json(self) -> dict[str, object]:
        obj: dict[str, object] = {
            "version": FORMAT_VERSION, "id": self.id, "identity": self.identity, "tool": self.tool,
            "reason": self.reason, "created_at": self.created_at,
        }
        for key in ("routes", "dockerfile"):
            if getattr(self, key) is not None:
                obj[key] = getattr(self, key)
        for key in ("hosts", "allowlist"):
            value = cast("tuple[str, ...] | None", getattr(self, key))
            if value is not None:
                obj[key] = list(value)
        return obj

    @classmethod
    def from_json(cls, obj: object, *, where: str) -> Proposal:
        d = _object(obj, where=where)
        _check_keys(d, where=where, required=_PROPOSAL_KEYS, allowed=_PROPOSAL_ALLOWED)
        # discover_pending reads thousands of these: one cheap check first, precise messages after.
        pid, identity, tool, reason, created_at = d["id"], d["identity"], d["tool"], d["reason"], d["created_at"]
        if not (isinstance(pid, str) and isinstance(identity, str) and isinstance(tool, str)
                and isinstance(reason, str) and isinstance(created_at, str)):
            _raise_for_first_non_string(d, _PROPOSAL_KEYS[1:], where=where)
        get = d.get
        routes, hosts, allowlist, dockerfile = get("routes"), get("hosts"), get("allowlist"), get("dockerfile")
        try:
            return cls(
                pid, identity, tool, reason, created_at,
                None if routes is None else _str(d, "routes", where=where),
                None if hosts is None else _str_list(d, "hosts", where=where),
                None if allowlist is None else _str_list(d, "allowlist", where=where),
                None if dockerfile is None else _str(d, "dockerfile", where=where),
            )
        except InvalidRecord as e:
            raise BottleError(f"{where}: {e.problem}") from None


def _proposal_problem(p: Proposal) -> str | None:
    if not ID_RE.fullmatch(p.id):
        return "id is not [a-z0-9][a-z0-9-]{0,63}"
    if not IDENTITY_RE.fullmatch(p.identity):
        return f"identity {shown(p.identity)} is not a bottle identity"
    if p.tool not in TOOLS:
        return f"tool {shown(p.tool)} is not one of {', '.join(TOOLS)}"
    given = tuple(key for key, value in (("routes", p.routes), ("hosts", p.hosts), ("allowlist", p.allowlist),
                                         ("dockerfile", p.dockerfile)) if value is not None)
    if given not in _CONTENT_KEYS[p.tool]:
        wanted = " or ".join("+".join(keys) for keys in _CONTENT_KEYS[p.tool])
        return f"a {p.tool} proposal carries {wanted}, not {'+'.join(given) or 'nothing'}"
    return (
        _text_field_problem("reason", p.reason, max_bytes=MAX_REASON_BYTES)
        or timestamp_problem("created_at", p.created_at)
        or (_text_field_problem("routes", p.routes, max_bytes=MAX_TEXT_BYTES) if p.routes is not None else None)
        or (_text_field_problem("dockerfile", p.dockerfile, max_bytes=MAX_TEXT_BYTES)
            if p.dockerfile is not None else None)
        or (_hosts_problem("hosts", p.hosts, empty_ok=False) if p.hosts is not None else None)
        or (_hosts_problem("allowlist", p.allowlist, empty_ok=True) if p.allowlist is not None else None)
    )


@dataclass(frozen=True, slots=True)
class Response:
    """The operator's decision; `final_content` is what was applied (after any edit).

    For pipelock-block, final_content is the applied allowlist, one host a line; for a
    reject it is empty.
    """

    id: str
    decision: str
    reason: str
    final_content: str
    decided_at: str

    def __post_init__(self) -> None:
        problem = _response_problem(self)
        if problem:
            raise InvalidRecord(f"response {shown(self.id)}", problem)

    def to_json(self) -> dict[str, object]:
        return {
            "version": FORMAT_VERSION, "id": self.id, "decision": self.decision, "reason": self.reason,
            "final_content": self.final_content, "decided_at": self.decided_at,
        }

    @classmethod
    def from_json(cls, obj: object, *, where: str) -> Response:
        d = _object(obj, where=where)
        _check_keys(d, where=where, required=_RESPONSE_KEYS, allowed=frozenset(_RESPONSE_KEYS))
        try:
            return cls(
                id=_str(d, "id", where=where), decision=_str(d, "decision", where=where),
                reason=_str(d, "reason", where=where), final_content=_str(d, "final_content", where=where),
                decided_at=_str(d, "decided_at", where=where),
            )
        except InvalidRecord as e:
            raise BottleError(f"{where}: {e.problem}") from None


def _response_problem(r: Response) -> str | None:
    if not ID_RE.fullmatch(r.id):
        return "id is not [a-z0-9][a-z0-9-]{0,63}"
    if r.decision not in DECISIONS:
        return f"decision {shown(r.decision)} is not one of {', '.join(DECISIONS)}"
    if len(r.final_content.encode("utf-8", "surrogatepass")) > MAX_TEXT_BYTES:
        return f"final_content is larger than {MAX_TEXT_BYTES} bytes"
    return (_text_field_problem("reason", r.reason, max_bytes=MAX_REASON_BYTES, empty_ok=r.decision != "reject")
            or timestamp_problem("decided_at", r.decided_at))


def make_response(proposal_id: str, decision: str, reason: str, final_content: str) -> Response:
    """A Response decided now."""
    return Response(id=proposal_id, decision=decision, reason=reason, final_content=final_content,
                    decided_at=iso_utc(utc_now()))


def _object(obj: object, *, where: str) -> dict[str, object]:
    if not isinstance(obj, dict):
        raise BottleError(f"{where}: must be a JSON object, not {json_type(obj)}")
    return cast("dict[str, object]", obj)


def _check_keys(d: dict[str, object], *, where: str, required: Iterable[str], allowed: AbstractSet[str]) -> None:
    if not d.keys() <= allowed:
        raise BottleError(f"{where}: unknown key {shown(min(d.keys() - allowed))}")
    for key in required:
        if key not in d:
            raise BottleError(f"{where}: missing key {key!r}")
    version = d["version"]
    if type(version) is not int or version != FORMAT_VERSION:
        raise BottleError(f"{where}: version must be {FORMAT_VERSION}")


def _str(d: dict[str, object], key: str, *, where: str) -> str:
    value = d[key]
    if type(value) is not str:
        raise BottleError(f"{where}: {key} must be a string, not {json_type(value)}")
    return value


def _raise_for_first_non_string(d: dict[str, object], keys: Iterable[str], *, where: str) -> NoReturn:
    for key in keys:
        _str(d, key, where=where)
    raise AssertionError("called with all strings")


def _str_list(d: dict[str, object], key: str, *, where: str) -> tuple[str, ...]:
    value = d[key]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in cast("list[object]", value)):
        raise BottleError(f"{where}: {key} must be a list of strings")
    return tuple(cast("list[str]", value))
