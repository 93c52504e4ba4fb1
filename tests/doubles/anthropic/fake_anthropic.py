#!/usr/bin/env python3
"""TEST DOUBLE for the Anthropic Messages API: enough of it for Claude Code 2.1.x.

Listens on 0.0.0.0:$FAKE_ANTHROPIC_PORT (default 8000).

- `POST /v1/messages` with `"stream": true` answers with server-sent events:
  message_start, ping, then for each content block content_block_start,
  content_block_delta (text_delta pieces, or input_json_delta for a tool_use
  block) and content_block_stop, then message_delta (stop_reason `end_turn`, or
  `tool_use` when the reply calls a tool; with usage) and message_stop. Without
  `stream` it answers one JSON message of the same content.
- `POST /v1/messages/count_tokens` answers {"input_tokens": N}; `GET /v1/models`
  lists one model; any other path answers 404 with an Anthropic error object.
- Every request except the `/_` control endpoints is recorded: method, path,
  headers (names lowercased), the JSON body (or `body_text` when not JSON).
  `GET /_requests` returns them as a JSON list, `DELETE /_requests` forgets them.
- `POST /_script` replaces the reply rules with a JSON list of
  {"when_last_user_contains": "...", "reply": {...}}. The first rule whose text
  occurs in the last user turn answers (text blocks and tool_result contents
  both count; a rule without the key matches every request); rules stay until
  replaced. A reply is {"text": "..."}, {"tool_use": {"name": "...", "input":
  {...}}}, both (text first), or {"error": {"status": 529, "type":
  "overloaded_error", "message": "..."}}; "pause_seconds": N makes a stream
  wait N seconds between events. Without a matching rule the reply text is
  $FAKE_ANTHROPIC_REPLY, default "ok from fake anthropic".
  `POST /_reset` forgets both requests and rules.
- `GET /_health` answers 200.
"""

from __future__ import annotations

import gzip
import http.server
import itertools
import json
import os
import sys
import threading
import time
from typing import Any, cast

DEFAULT_REPLY = os.environ.get("FAKE_ANTHROPIC_REPLY", "ok from fake anthropic")
RULE_KEYS = {"when_last_user_contains", "reply"}
REPLY_KEYS = {"text", "tool_use", "error", "pause_seconds"}

_lock = threading.Lock()
_requests: list[dict[str, object]] = []
_rules: list[dict[str, Any]] = []
_ids = itertools.count(1)


def last_user_text(body: object) -> str:
    """The text of the last user turn: its text blocks and tool_result contents."""
    if not isinstance(body, dict):
        return ""
    messages = cast("dict[str, Any]", body).get("messages")
    if not isinstance(messages, list):
        return ""
    for message in reversed(cast("list[Any]", messages)):
        if isinstance(message, dict) and cast("dict[str, Any]", message).get("role") == "user":
            return _text_of(cast("dict[str, Any]", message).get("content"))
    return ""


def _text_of(content: object) -> str:
    if isinstance(content, str):
        return content
    parts: list[str] = []
    if isinstance(content, list):
        for block in cast("list[Any]", content):
            if not isinstance(block, dict):
                continue
            block = cast("dict[str, Any]", block)
            if block.get("type") == "text":
                parts.append(str(block.get("text", "")))
            elif block.get("type") == "tool_result":
                parts.append(_text_of(block.get("content")))
    return "\n".join(parts)


def choose_reply(body: object) -> dict[str, Any]:
    text = last_user_text(body)
    with _lock:
        rules = list(_rules)
    for rule in rules:
        needle = rule.get("when_last_user_contains")
        if not needle or needle in text:
            return cast("dict[str, Any]", rule["reply"])
    return {"text": DEFAULT_REPLY}


def script_problem(rules: object) -> str | None:
    if not isinstance(rules, list):
        return "the script must be a JSON list of rules"
    for i, rule in enumerate(cast("list[Any]", rules)):
        if not isinstance(rule, dict):
            return f"rule {i} is not an object"
        rule = cast("dict[str, Any]", rule)
        if set(rule) - RULE_KEYS or "reply" not in rule:
            return f"rule {i} must have 'reply' and may have 'when_last_user_contains'"
        reply = rule["reply"]
        if not isinstance(reply, dict) or not reply or set(cast("dict[str, Any]", reply)) - REPLY_KEYS:
            return f"rule {i}: reply must be an object with text, tool_use, error and/or pause_seconds"
        pause = cast("dict[str, Any]", reply).get("pause_seconds", 0)
        if isinstance(pause, bool) or not isinstance(pause, (int, float)) or pause < 0:
            return f"rule {i}: pause_seconds must be a number >= 0"
        tool = cast("dict[str, Any]", reply).get("tool_use")
        if tool is not None and (not isinstance(tool, dict) or "name" not in tool):
            return f"rule {i}: tool_use needs a name"
    return None


def content_blocks(reply: dict[str, Any]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if "text" in reply or "tool_use" not in reply:
        blocks.append({"type": "text", "text": str(reply.get("text", DEFAULT_REPLY))})
    if "tool_use" in reply:
        tool = cast("dict[str, Any]", reply["tool_use"])
        blocks.append({
            "type": "tool_use",
            "id": str(tool.get("id") or f"toolu_fake_{next(_ids):06d}"),
            "name": str(tool["name"]),
            "input": tool.get("input", {}),
        })
    return blocks


def sse_events(model: str, blocks: list[dict[str, Any]], input_tokens: int) -> list[tuple[str, dict[str, Any]]]:
    stop_reason = "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"
    output_tokens = 0
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": {
            "id": f"msg_fake_{next(_ids):06d}", "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": 1,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
        }}),
        ("ping", {"type": "ping"}),
    ]
    for index, block in enumerate(blocks):
        start: dict[str, Any]
        if block["type"] == "text":
            start = {"type": "text", "text": ""}
            words = block["text"].split(" ")
            pieces = [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]
            deltas = [{"type": "text_delta", "text": p} for p in pieces if p]
        else:
            start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            encoded = json.dumps(block["input"])
            half = len(encoded) // 2
            deltas = [{"type": "input_json_delta", "partial_json": part} for part in (encoded[:half], encoded[half:])]
        output_tokens += sum(len(str(d)) for d in deltas) // 4 + 1
        events.append(("content_block_start", {"type": "content_block_start", "index": index, "content_block": start}))
        events += [("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d}) for d in deltas]
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                                     "usage": {"output_tokens": output_tokens}}))
    events.append(("message_stop", {"type": "message_stop"}))
    return events


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-anthropic"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def _dispatch(self) -> None:
        raw = self._read_body()
        path = self.path.split("?")[0]
        if path.startswith("/_"):
            self._control(path, raw)
            return
        body = self._record(raw)
        if self.command == "POST" and path == "/v1/messages":
            self._messages(body, raw)
        elif self.command == "POST" and path == "/v1/messages/count_tokens":
            self._json(200, {"input_tokens": max(1, len(raw) // 4)})
        elif self.command == "GET" and path == "/v1/models":
            model = {"type": "model", "id": "claude-fake", "display_name": "Fake", "created_at": "2025-01-01T00:00:00Z"}
            self._json(200, {"data": [model], "has_more": False, "first_id": "claude-fake", "last_id": "claude-fake"})
        else:
            self._error(404, "not_found_error", f"{self.command} {path} is not part of the fake API")

    def _control(self, path: str, raw: bytes) -> None:
        if path == "/_health":
            self._json(200, {"status": "ok"})
        elif path == "/_requests" and self.command == "GET":
            with _lock:
                self._json(200, list(_requests))
        elif path == "/_requests" and self.command == "DELETE":
            with _lock:
                _requests.clear()
            self._json(200, {"cleared": True})
        elif path == "/_reset" and self.command == "POST":
            with _lock:
                _requests.clear()
                _rules.clear()
            self._json(200, {"reset": True})
        elif path == "/_script" and self.command == "POST":
            try:
                rules: object = json.loads(raw or b"null")
            except ValueError as exc:
                self._json(400, {"error": f"not JSON: {exc}"})
                return
            problem = script_problem(rules)
            if problem is not None:
                self._json(400, {"error": problem})
                return
            with _lock:
                _rules[:] = cast("list[dict[str, Any]]", rules)
                count = len(_rules)
            self._json(200, {"rules": count})
        else:
            self._json(404, {"error": f"no control endpoint {self.command} {path}"})

    def _record(self, raw: bytes) -> object:
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        entry: dict[str, object] = {"method": self.command, "path": self.path, "headers": headers, "time": time.time()}
        body: object = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                entry["body_text"] = raw.decode("utf-8", "replace")
        entry["body"] = body
        with _lock:
            _requests.append(entry)
        return body

    def _messages(self, body: object, raw: bytes) -> None:
        request: dict[str, Any] = cast("dict[str, Any]", body) if isinstance(body, dict) else {}
        reply = choose_reply(request)
        if "error" in reply:
            error = cast("dict[str, Any]", reply["error"])
            self._error(int(error.get("status", 500)), str(error.get("type", "api_error")), str(error.get("message", "scripted error")))
            return
        model = str(request.get("model", "claude-fake"))
        blocks = content_blocks(reply)
        input_tokens = max(1, len(raw) // 4)
        if request.get("stream"):
            self._stream(sse_events(model, blocks, input_tokens), float(reply.get("pause_seconds", 0)))
            return
        stop_reason = "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"
        self._json(200, {
            "id": f"msg_fake_{next(_ids):06d}", "type": "message", "role": "assistant", "model": model,
            "content": blocks, "stop_reason": stop_reason, "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": max(1, len(json.dumps(blocks)) // 4)},
        })

    def _stream(self, events: list[tuple[str, dict[str, Any]]], pause: float) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("request-id", f"req_fake_{next(_ids):06d}")
        self.end_headers()
        for i, (name, data) in enumerate(events):
            if pause and i:
                time.sleep(pause)
            chunk = f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
            self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def _error(self, status: int, kind: str, message: str) -> None:
        self._json(status, {"type": "error", "error": {"type": kind, "message": message}})

    def _json(self, status: int, payload: object) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("request-id", f"req_fake_{next(_ids):06d}")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raw = b""
            while True:
                size = int(self.rfile.readline(65537).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                raw += self.rfile.read(size)
                self.rfile.readline(65537)
        else:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0") or "0"))
        if self.headers.get("Content-Encoding", "").lower() == "gzip":
            raw = gzip.decompress(raw)
        return raw


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # a client going away is not news
            super().handle_error(request, client_address)


def main() -> int:
    port = int(os.environ.get("FAKE_ANTHROPIC_PORT", "8000"))
    server = Server(("0.0.0.0", port), Handler)
    print(f"fake anthropic listening on 0.0.0.0:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    sys.exit(main())
