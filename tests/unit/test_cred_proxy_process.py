"""cred-proxy run as in the sidecar, `python -m claude_bottle.cred_proxy`: signals, files, exit codes."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


class EchoAuthorization(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        body = self.headers.get("Authorization", "-").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def upstream_port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), EchoAuthorization)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def routes_json(port: int, *names: str, value: str = "Bearer ${T}") -> str:
    return json.dumps({"routes": [
        {"name": n, "upstream": f"http://127.0.0.1:{port}/{n}", "header": "Authorization", "value": value}
        for n in names
    ]})


def wait_for(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class ProxyProcess:
    def __init__(self, tmp_path: Path, routes: str, *, secrets: str | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.routes = tmp_path / "routes.json"
        self.routes.write_text(routes)
        self.secrets = tmp_path / "secrets.json"
        args = [sys.executable, "-m", "claude_bottle.cred_proxy", "--routes", str(self.routes),
                "--listen", "127.0.0.1:0"]
        if secrets is not None:
            self.secrets.write_text(secrets)
            args += ["--secrets", str(self.secrets)]
        self.log = tmp_path / "stderr.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(args, cwd=ROOT, stderr=log, env={
                "PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), **(env or {})})
        wait_for(lambda: "listening on" in self.stderr() or self.proc.poll() is not None, "the proxy to start")
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", self.stderr())
        assert match, self.stderr()
        self.port = int(match[1])

    def stderr(self) -> str:
        return self.log.read_text()

    def get(self, path: str) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read().decode()
        finally:
            conn.close()

    def reload(self, *, routes: str | None = None, secrets: str | None = None) -> None:
        if routes is not None:
            self.routes.write_text(routes)
        if secrets is not None:
            self.secrets.write_text(secrets)
        self.proc.send_signal(signal.SIGHUP)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(5)


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., ProxyProcess]]:
    started: list[ProxyProcess] = []

    def start(routes: str, *, secrets: str | None = None, env: dict[str, str] | None = None) -> ProxyProcess:
        proxy = ProxyProcess(tmp_path, routes, secrets=secrets, env=env)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        if proxy.proc.poll() is None:
            proxy.proc.kill()
            proxy.proc.wait()


def test_sighup_adds_routes_and_an_invalid_file_keeps_the_old_ones(
    start: Callable[..., ProxyProcess], upstream_port: int,
) -> None:
    proxy = start(routes_json(upstream_port, "a"), env={"T": "tok"})
    assert proxy.get("/a/x") == (200, "Bearer tok")
    assert proxy.get("/b/x")[0] == 404

    proxy.reload(routes=routes_json(upstream_port, "a", "b"))
    wait_for(lambda: proxy.get("/b/x")[0] == 200, "route b after SIGHUP")

    for broken in ('{"routes": [', routes_json(upstream_port, "c", value="Bearer literal-secret")):
        before = proxy.stderr().count("reload failed")
        proxy.reload(routes=broken)
        wait_for(lambda: proxy.stderr().count("reload failed") > before, "the reload failure")
        assert proxy.get("/a/x") == (200, "Bearer tok")
        assert proxy.get("/b/x") == (200, "Bearer tok")
        assert proxy.get("/c/x")[0] == 404
    failures = [line for line in proxy.stderr().splitlines() if "reload failed" in line]
    assert f"{proxy.routes}: not valid JSON" in failures[0]
    assert f"{proxy.routes}: routes[0].value: must reference a secret" in failures[1]
    assert proxy.stop() == 0


def test_secrets_file_overrides_the_environment_and_reloads(
    start: Callable[..., ProxyProcess], upstream_port: int,
) -> None:
    proxy = start(routes_json(upstream_port, "a"), secrets='{"T": "from-file"}', env={"T": "from-env"})
    assert proxy.get("/a/x") == (200, "Bearer from-file")

    proxy.reload(secrets='{"T": "rotated"}')
    wait_for(lambda: proxy.get("/a/x") == (200, "Bearer rotated"), "the rotated secret")

    proxy.reload(secrets='{"T": 42}')
    wait_for(lambda: "reload failed" in proxy.stderr(), "the reload failure")
    assert proxy.get("/a/x") == (200, "Bearer rotated")
    assert f"{proxy.secrets}: T: must be a string" in proxy.stderr()


def test_missing_secret_is_warned_at_start_and_answered_502(
    start: Callable[..., ProxyProcess], upstream_port: int,
) -> None:
    proxy = start(routes_json(upstream_port, "a", value="Bearer ${T} ${MISSING}"), env={"T": "do-not-print"})
    assert "${MISSING} is not set" in proxy.stderr()
    status, body = proxy.get("/a/x")
    assert status == 502 and "${MISSING}" in body and "do-not-print" not in body


def test_logs_one_line_per_request_without_header_values(
    start: Callable[..., ProxyProcess], upstream_port: int,
) -> None:
    proxy = start(routes_json(upstream_port, "a"), env={"T": "do-not-print"})
    proxy.get("/a/x")
    proxy.get("/zzz")
    wait_for(lambda: "GET - 404" in proxy.stderr(), "the request log")  # written in batches
    assert proxy.stop() == 0  # SIGTERM: PID 1 in a container must exit on it
    lines = proxy.stderr().splitlines()
    assert re.fullmatch(r"cred-proxy: GET a 200 \d+\.\dms", lines[-2]), lines
    assert re.fullmatch(r"cred-proxy: GET - 404 \d+\.\dms", lines[-1]), lines
    assert "do-not-print" not in proxy.stderr()


@pytest.mark.parametrize(("routes", "secrets", "expected"), [
    ('{"routes": 3}', None, "routes.json: routes: must be a list of route objects"),
    ("{}", None, "routes.json: missing key 'routes'"),
    ('{"routes": []}', "[]", "secrets.json: must be a JSON object"),
    ('{"routes": []}', '{"bad name": "x"}', "secrets.json: 'bad name' is not a valid variable name"),
])
def test_bad_files_stop_the_start_with_one_line(tmp_path: Path, routes: str, secrets: str | None,
                                                 expected: str) -> None:
    (tmp_path / "routes.json").write_text(routes)
    args = [sys.executable, "-m", "claude_bottle.cred_proxy", "--routes", str(tmp_path / "routes.json"),
            "--listen", "127.0.0.1:0"]
    if secrets is not None:
        (tmp_path / "secrets.json").write_text(secrets)
        args += ["--secrets", str(tmp_path / "secrets.json")]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=10,
                          env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT)})
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and expected in done.stderr, done.stderr
