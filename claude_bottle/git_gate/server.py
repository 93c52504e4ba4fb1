"""The gate's HTTP server: git's smart HTTP for the declared remotes, nothing else.

Each request is handed to `git http-backend` (CGI) over the gate's own clone of
the remote (`clones.py`). The ref advertisement (`GET info/refs`) first refreshes
the clone from the real remote, so a fetch or a push always starts from the real
remote's current refs; a failed refresh is a 502 whose text the agent's git shows.
Only `/<name>.git/info/refs` and `/<name>.git/git-{upload,receive}-pack` of declared
names are served: no dumb HTTP, no other path, no other host.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import IO, cast
from urllib.parse import parse_qs, urlsplit

from .clones import Gate
from .launch import GATE_HEALTH_PATH
from .remotes import GitRemote

_GIT_PATH_RE = re.compile(r"/(?P<name>[A-Za-z0-9_-]+)\.git/(?P<what>info/refs|git-upload-pack|git-receive-pack)")
_SERVICES = ("git-upload-pack", "git-receive-pack")
_GIT_PROTOCOL_RE = re.compile(r"[A-Za-z0-9=:._-]{1,100}")
# Variables that would point http-backend at another repository; the rest of the
# gate's environment (GIT_SSL_CAINFO, GIT_TRACE, …) is the operator's to set.
_REPO_ENV = frozenset({
    "GIT_DIR", "GIT_WORK_TREE", "GIT_COMMON_DIR", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_NAMESPACE", "GIT_QUARANTINE_PATH", "GIT_PROTOCOL",
    "GIT_CONFIG", "GIT_CONFIG_PARAMETERS", "GIT_CONFIG_COUNT",
})


class GateServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], gate: Gate) -> None:
        self.gate = gate
        super().__init__(address, GateHandler)


class GateHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "git-gate"
    sys_version = ""

    @property
    def gate(self) -> Gate:
        return cast(GateServer, self.server).gate

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        parts = urlsplit(self.path)
        if parts.path == GATE_HEALTH_PATH and method == "GET":
            self._text(200, "ok\n")
            return
        m = _GIT_PATH_RE.fullmatch(parts.path)
        if m is None:
            self._text(404, "git-gate: this gate serves only /<remote>.git/ of its declared remotes\n")
            return
        gate = self.gate
        remote = gate.remotes.get(m.group("name"))
        if remote is None:
            declared = ", ".join(sorted(gate.remotes)) or "none"
            self._text(404, f"git-gate: no remote named {m.group('name')!r} (declared: {declared})\n")
            return
        what = m.group("what")
        if what == "info/refs":
            services = parse_qs(parts.query).get("service", [])
            if method != "GET" or len(services) != 1 or services[0] not in _SERVICES:
                self._text(403, "git-gate: only git's smart HTTP protocol is served\n")
                return
            with gate.locks[remote.name]:
                problem = gate.refresh(remote)
            if problem:
                self.log_message("refresh of %s failed: %s", remote.name, " | ".join(problem.splitlines()[1:]))
                self._text(502, problem)
                return
            self._run_backend(remote, "GET", what, f"service={services[0]}")
        elif method != "POST":
            self._text(405, f"git-gate: {what} takes POST\n")
        elif what == "git-receive-pack":
            with gate.locks[remote.name]:
                self._run_backend(remote, "POST", what, "")
        else:
            self._run_backend(remote, "POST", what, "")

    def _run_backend(self, remote: GitRemote, method: str, what: str, query: str) -> None:
        env = {k: v for k, v in os.environ.items() if k not in _REPO_ENV and not k.startswith("HTTP_")}
        env.update({
            "GIT_PROJECT_ROOT": str(self.gate.repos_dir),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": "/dev/null",
            "REQUEST_METHOD": method,
            "PATH_INFO": f"/{remote.name}.git/{what}",
            "QUERY_STRING": query,
            "REMOTE_USER": "agent",
            "REMOTE_ADDR": self.client_address[0],
        })
        if method == "POST":
            env["CONTENT_TYPE"] = self.headers.get("Content-Type", "")
            if "Content-Length" in self.headers and "Transfer-Encoding" not in self.headers:
                env["CONTENT_LENGTH"] = self.headers["Content-Length"]
            if self.headers.get("Content-Encoding"):
                env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        protocol = self.headers.get("Git-Protocol", "")
        if _GIT_PROTOCOL_RE.fullmatch(protocol):
            env["HTTP_GIT_PROTOCOL"] = protocol

        proc = subprocess.Popen(["git", "http-backend"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        assert proc.stdin is not None and proc.stdout is not None
        writer = threading.Thread(target=self._feed, args=(proc.stdin, method == "POST"), daemon=True)
        writer.start()
        try:
            self._relay_cgi_response(cast(io.BufferedReader, proc.stdout))
        except (BrokenPipeError, ConnectionResetError):
            proc.kill()
        finally:
            proc.stdout.close()
            proc.wait()
            writer.join(timeout=5)
        self.close_connection = True

    def _feed(self, stdin: IO[bytes], has_body: bool) -> None:
        try:
            if has_body:
                for chunk in self._request_body():
                    stdin.write(chunk)
        except (OSError, ValueError):
            pass  # the backend stopped reading, or the client sent a broken body
        finally:
            try:
                stdin.close()
            except OSError:
                pass

    def _request_body(self) -> Iterator[bytes]:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline(1024).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return
                remaining = size
                while remaining:
                    data = self.rfile.read(min(remaining, 65536))
                    if not data:
                        return
                    remaining -= len(data)
                    yield data
                self.rfile.readline(1024)
        remaining = int(self.headers.get("Content-Length", "0") or "0")
        while remaining > 0:
            data = self.rfile.read(min(remaining, 65536))
            if not data:
                return
            remaining -= len(data)
            yield data

    def _relay_cgi_response(self, out: io.BufferedReader) -> None:
        status, reason = 200, "OK"
        headers: list[tuple[str, str]] = []
        while True:
            line = out.readline(65536)
            if line in (b"\r\n", b"\n", b""):
                break
            key, _, value = line.decode("latin-1").partition(":")
            if key.strip().lower() == "status":
                code, _, reason = value.strip().partition(" ")
                status = int(code)
            else:
                headers.append((key.strip(), value.strip()))
        self.send_response(status, reason or None)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Connection", "close")
        self.end_headers()
        while chunk := out.read1(65536):
            self.wfile.write(chunk)
            self.wfile.flush()

    def _text(self, status: int, text: str) -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write(f"git-gate: {self.client_address[0]} {format % args}\n")
