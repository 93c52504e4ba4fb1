"""The streamable-HTTP transport: `POST /mcp` carries JSON-RPC, `GET /_health` says ok.

A block-tool call is answered as `text/event-stream`: headers at once, a `: keepalive`
comment every few seconds (Claude Code waits on a stream as long as it needs to, but
times a plain JSON answer out after 60 s), then one `message` event with the result.
If the client goes away meanwhile the proposal simply stays queued.
"""

from __future__ import annotations

import json
import re
import select
import socket
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import cast
from urllib.parse import urlsplit

from ..errors import BottleError
from .mcp import (
    INTERNAL_ERROR, INVALID_REQUEST, PARSE_ERROR, Answer, Reply, SuperviseConfig, Wait, answer_for, archive_quietly,
    error_reply, handle_message, result_message, tool_result,
)
from .checks import loads_strict
from .tools import pending_text

MAX_BODY_BYTES = 1024 * 1024
_SESSION_ID_RE = re.compile(r"[\x21-\x7e]{1,128}")


class SuperviseServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], config: SuperviseConfig) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.config = config
        self.stopping = threading.Event()
        super().__init__(address, _Handler)

    def stop(self) -> None:
        """Stop serving; requests still waiting answer 'still pending' and end."""
        self.stopping.set()
        self.shutdown()
        self.server_close()


def make_server(config: SuperviseConfig, listen: str) -> SuperviseServer:
    """Bind `host:port` (`[::]:8090` for IPv6); BottleError when that is impossible."""
    host, sep, port_text = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise BottleError(f"--listen {listen!r}: expected HOST:PORT, e.g. 0.0.0.0:8090")
    try:
        return SuperviseServer((host, int(port_text)), config)
    except OSError as e:
        raise BottleError(f"--listen {listen}: cannot listen: {e.strerror or e}") from None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; the event stream is sent chunked
    timeout = 300  # an idle or trickling connection does not hold a thread forever

    def version_string(self) -> str:
        return "claude-bottle-supervise"

    @property
    def _srv(self) -> SuperviseServer:
        return cast(SuperviseServer, self.server)

    def log_message(self, format: str, *args: object) -> None:
        self._srv.config.log(f"{self.address_string()} {format % args}")

    def _path(self) -> str:
        return urlsplit(self.path).path

    def do_GET(self) -> None:
        if self._path() == "/_health":
            self._send(200, b'{"status": "ok"}\n')
        elif self._path() == "/mcp":
            self._send(405, b"", headers={"Allow": "POST"})  # no server-initiated stream: nothing to push
        else:
            self._send(404, b"")

    def do_DELETE(self) -> None:
        if self._path() == "/mcp":
            self._send(405, b"", headers={"Allow": "POST"})  # sessions hold nothing to end
        else:
            self._send(404, b"")

    def do_POST(self) -> None:
        if self._path() != "/mcp":
            self.close_connection = True
            self._send(404, b"")
            return
        origin = self.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc.lower() != (self.headers.get("Host") or "").lower():
            self.close_connection = True  # a browser page elsewhere (DNS rebinding) gets nothing
            self._send(403, b"")
            return
        body = self._read_body()
        if body is None:
            return
        try:
            msg = loads_strict(body)
        except ValueError as e:
            self._reply(error_reply(None, PARSE_ERROR, f"parse error: {e}", status=400))
            return
        try:
            outcome = handle_message(msg, self._srv.config)
        except Exception:  # a bug: log it, answer the client, keep serving
            self._srv.config.log(traceback.format_exc())
            outcome = error_reply(None, INTERNAL_ERROR, "internal error in the supervise server")
        if isinstance(outcome, Wait):
            self._stream_decision(outcome)
        else:
            self._reply(outcome)

    def _read_body(self) -> bytes | None:
        length_text = self.headers.get("Content-Length")
        if length_text is None or not length_text.strip().isdigit():
            self.close_connection = True
            self._reply(error_reply(None, INVALID_REQUEST, "a POST needs a Content-Length", status=411))
            return None
        length = int(length_text)
        if length > MAX_BODY_BYTES:
            self.close_connection = True  # the body stays unread
            self._reply(error_reply(None, INVALID_REQUEST,
                                    f"body of {length} bytes is over the limit of {MAX_BODY_BYTES}", status=413))
            return None
        return self.rfile.read(length)

    def _session_headers(self, new_session: str | None) -> dict[str, str]:
        session = new_session or self.headers.get("Mcp-Session-Id")
        return {"Mcp-Session-Id": session} if session and _SESSION_ID_RE.fullmatch(session) else {}

    def _reply(self, reply: Reply) -> None:
        body = b"" if reply.message is None else json.dumps(reply.message).encode()
        self._send(reply.status, body, headers=self._session_headers(reply.session_id))

    def _send(self, status: int, body: bytes, *, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        if body:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _stream_decision(self, wait: Wait) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        for name, value in self._session_headers(None).items():
            self.send_header(name, value)
        self.end_headers()
        proposal_id = wait.proposal.id
        try:
            answer = self._wait_for_answer(proposal_id)
            if answer is None:
                self._srv.config.log(f"client left while proposal {proposal_id} waits; it stays queued")
                self.close_connection = True
                return
            message = result_message(wait.request_id, tool_result(answer.text, is_error=answer.is_error))
            self._chunk(f"event: message\ndata: {json.dumps(message)}\n\n".encode())
            self._chunk(b"")
        except OSError:  # broken pipe, reset: the client is gone
            self.close_connection = True
            return
        if answer.decided:
            archive_quietly(self._srv.config, proposal_id)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _wait_for_answer(self, proposal_id: str) -> Answer | None:
        """The operator's answer, 'still pending' at the time limit, or None if the client left."""
        config = self._srv.config
        now = time.monotonic()
        deadline = now + config.max_wait_seconds
        next_keepalive = now + config.keepalive_seconds
        watch_socket = True
        while True:
            answer = answer_for(config, proposal_id)
            if answer is not None:
                return answer
            now = time.monotonic()
            if now >= deadline or self._srv.stopping.is_set():
                return Answer(pending_text(proposal_id))
            if now >= next_keepalive:
                self._chunk(b": keepalive\n\n")
                next_keepalive = now + config.keepalive_seconds
            pause = max(0.0, min(config.poll_seconds, deadline - now, next_keepalive - now))
            if not watch_socket:
                self._srv.stopping.wait(pause)
            elif select.select([self.connection], [], [], pause)[0]:
                try:
                    peeked = self.connection.recv(1, socket.MSG_PEEK)
                except OSError:
                    return None
                if not peeked:
                    return None  # the client closed its end
                watch_socket = False  # it sent more; only a failed write will tell us now
