"""cred-proxy's server end to end on loopback, in process, against a stdlib upstream."""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import cast

import pytest

from claude_bottle.cred_proxy import CredProxyRoute
from claude_bottle.cred_proxy.config import ProxyConfig, load_config
from claude_bottle.cred_proxy.server import CredProxyServer

SECRET = "s3cret-token-value"


@dataclass
class Seen:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes
    chunked: bool
    peer_port: int

    def header(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]


class UpstreamServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), UpstreamHandler)
        if ssl_context is not None:
            self.socket = ssl_context.wrap_socket(self.socket, server_side=True)
        self.seen: list[Seen] = []
        self.gate = threading.Event()  # the SSE reply waits on it between its two events
        self.gate_opened_in_time: bool | None = None
        self.first_chunk = threading.Event()  # a chunked request's first chunk has arrived
        self.connection_closed = threading.Event()

    @property
    def port(self) -> int:
        return self.server_address[1]

    def shutdown_request(self, request: socket.socket | tuple[bytes, socket.socket]) -> None:
        super().shutdown_request(request)
        self.connection_closed.set()


class UpstreamHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:
        pass

    @property
    def upstream(self) -> UpstreamServer:
        return cast(UpstreamServer, self.server)

    def _read_body(self) -> tuple[bytes, bool]:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts: list[bytes] = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                parts.append(self.rfile.read(size))
                self.rfile.readline()
                self.upstream.first_chunk.set()
            while self.rfile.readline() not in (b"\r\n", b""):
                pass
            return b"".join(parts), True
        return self.rfile.read(int(self.headers.get("Content-Length", "0"))), False

    def _send_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def do_GET(self) -> None:
        body, chunked = self._read_body()
        self.upstream.seen.append(Seen(self.command, self.path, list(self.headers.items()), body, chunked,
                                       self.client_address[1]))
        last = self.path.split("?")[0].rsplit("/", 1)[-1]
        if last == "sse":
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self._send_chunk(b"event: one\ndata: 1\n\n")
            self.upstream.gate_opened_in_time = self.upstream.gate.wait(5)
            self._send_chunk(b"event: two\ndata: 2\n\n")
            self.wfile.write(b"0\r\n\r\n")
        elif last == "chunked-reply":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Trailer", "X-Checksum")
            self.end_headers()
            for part in (b"alpha ", b"beta ", b"gamma"):
                self._send_chunk(part)
            self.wfile.write(b"0\r\nX-Checksum: 1\r\n\r\n")
        elif last == "close-delimited":
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"until the end")
            self.close_connection = True
        elif "/status/" in self.path:
            self.send_response(int(last))
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif last == "big":
            payload = bytes(range(256)) * 1024
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
        else:
            reply = json.dumps({
                "method": self.command, "path": self.path, "headers": list(self.headers.items()),
                "body_sha256": hashlib.sha256(body).hexdigest(), "body_length": len(body), "chunked": chunked,
            }).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.send_header("Keep-Alive", "timeout=5")
            self.send_header("X-Upstream", "yes")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(reply)
            # Close without announcing it, as servers do when they retire a connection.
            self.close_connection = last == "close-after"

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET


def _serve(server: ThreadingHTTPServer | CredProxyServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return thread


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamServer]:
    server = UpstreamServer()
    _serve(server)
    yield server
    server.shutdown()
    server.server_close()


@dataclass
class Proxy:
    server: CredProxyServer
    upstream: UpstreamServer
    routes: list[CredProxyRoute] = field(default_factory=list[CredProxyRoute])

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def use(self, *routes: CredProxyRoute, secrets: dict[str, str] | None = None) -> None:
        self.server.config = ProxyConfig.build(routes, {"TOKEN": SECRET} if secrets is None else secrets)

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def raw(self, data: bytes) -> bytes:
        """Send bytes as they are; everything the proxy answers until it closes."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(data)
            received = b""
            while chunk := s.recv(65536):
                received += chunk
            return received


LOG: list[str] = []


@pytest.fixture(scope="module")
def proxy_server() -> Iterator[CredProxyServer]:
    server = CredProxyServer(("127.0.0.1", 0), ProxyConfig.build([], {}), request_log=LOG.append)
    _serve(server)
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(proxy_server: CredProxyServer, upstream: UpstreamServer) -> Proxy:
    p = Proxy(proxy_server, upstream)
    p.use(api_route(upstream))
    upstream.seen.clear()
    return p


def api_route(upstream: UpstreamServer, *, name: str = "api", prefix: str = "/base", header: str = "Authorization",
              value: str = "Bearer ${TOKEN}") -> CredProxyRoute:
    return CredProxyRoute(name, f"http://127.0.0.1:{upstream.port}{prefix}", header, value)


def echoed(body: bytes) -> dict[str, object]:
    return cast(dict[str, object], json.loads(body))


# --- forwarding --------------------------------------------------------------------


def test_injects_the_credential_replacing_what_the_client_sent(proxy: Proxy) -> None:
    status, _, _ = proxy.request("GET", "/api/v1/models", headers={"authorization": "Bearer placeholder"})
    assert status == 200
    seen = proxy.upstream.seen[-1]
    assert seen.header("Authorization") == [f"Bearer {SECRET}"]


def test_rewrites_host_keeps_query_and_prepends_the_path_prefix(proxy: Proxy) -> None:
    status, headers, _ = proxy.request("GET", "/api/v1/messages/count?beta=true&x=%20y",
                                       headers={"Host": "evil.example"})
    assert status == 200
    seen = proxy.upstream.seen[-1]
    assert seen.path == "/base/v1/messages/count?beta=true&x=%20y"
    assert seen.header("Host") == [f"127.0.0.1:{proxy.upstream.port}"]
    assert headers["x-upstream"] == "yes"


def test_route_root_maps_to_the_upstream_prefix(proxy: Proxy) -> None:
    proxy.use(api_route(proxy.upstream), api_route(proxy.upstream, name="bare", prefix=""))
    assert proxy.request("GET", "/api")[0] == 200
    assert proxy.upstream.seen[-1].path == "/base"
    assert proxy.request("GET", "/bare?q=1")[0] == 200
    assert proxy.upstream.seen[-1].path == "/?q=1"


def test_a_custom_header_route(proxy: Proxy) -> None:
    proxy.use(api_route(proxy.upstream, header="x-api-key", value="${TOKEN}"))
    proxy.request("GET", "/api/x", headers={"X-Api-Key": "placeholder", "Authorization": "Basic abc"})
    seen = proxy.upstream.seen[-1]
    assert seen.header("x-api-key") == [SECRET]
    assert seen.header("Authorization") == ["Basic abc"]


def test_drops_hop_by_hop_headers_both_ways(proxy: Proxy) -> None:
    status, headers, _ = proxy.request("GET", "/api/x", headers={
        "Connection": "keep-alive, X-Private", "X-Private": "1", "Keep-Alive": "timeout=9",
        "Proxy-Authorization": "Basic Zm9v", "TE": "trailers", "Upgrade": "h2c", "X-Kept": "yes",
    })
    assert status == 200
    names = {n.lower() for n, _ in proxy.upstream.seen[-1].headers}
    assert not names & {"x-private", "keep-alive", "proxy-authorization", "te", "upgrade"}
    assert proxy.upstream.seen[-1].header("X-Kept") == ["yes"]
    assert "keep-alive" not in headers


def test_methods_and_bodies_pass_through(proxy: Proxy) -> None:
    for method in ("POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
        body = f"{method} body".encode()
        status, _, reply = proxy.request(method, "/api/items/1", body=body, headers={"Content-Type": "text/plain"})
        assert status == 200
        assert echoed(reply)["method"] == method
        assert echoed(reply)["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_a_large_body_streams_both_ways(proxy: Proxy) -> None:
    body = bytes(range(256)) * 1200  # above the size that is read whole for replay
    status, _, reply = proxy.request("POST", "/api/upload", body=body)
    assert status == 200 and echoed(reply)["body_length"] == len(body)
    status, _, reply = proxy.request("GET", "/api/big")
    assert status == 200 and reply == bytes(range(256)) * 1024


def test_head_and_bodiless_statuses(proxy: Proxy) -> None:
    status, headers, reply = proxy.request("HEAD", "/api/big")
    assert (status, headers["content-length"], reply) == (200, str(256 * 1024), b"")
    assert proxy.request("GET", "/api/status/204")[0] == 204
    assert proxy.request("GET", "/api/status/304")[0] == 304


def test_chunked_request_body_is_forwarded_chunked(proxy: Proxy) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
    conn.request("POST", "/api/upload", body=iter([b"hello ", b"chunked ", b"world"]), encode_chunked=True)
    reply = echoed(conn.getresponse().read())
    conn.close()
    assert reply["chunked"] is True
    assert reply["body_sha256"] == hashlib.sha256(b"hello chunked world").hexdigest()


def test_chunked_request_body_streams_before_it_ends(proxy: Proxy) -> None:
    proxy.upstream.first_chunk.clear()
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
        s.sendall(b"POST /api/upload HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        assert proxy.upstream.first_chunk.wait(5), "the first chunk did not reach the upstream on its own"
        s.sendall(b"7\r\n second\r\n0\r\n\r\n")
        reply = s.recv(65536)
    assert reply.startswith(b"HTTP/1.1 200")
    assert proxy.upstream.seen[-1].body == b"first second"


def test_expect_100_continue(proxy: Proxy) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
        s.sendall(b"PUT /api/x HTTP/1.1\r\nHost: p\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        assert s.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(b"data")
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
    assert proxy.upstream.seen[-1].header("Expect") == []


def test_sse_reaches_the_client_event_by_event(proxy: Proxy) -> None:
    proxy.upstream.gate.clear()
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
        s.sendall(b"GET /api/v1/sse HTTP/1.1\r\nHost: p\r\n\r\n")
        received = b""
        while b"data: 1" not in received:
            received += s.recv(65536)
        assert b"data: 2" not in received
        assert b"text/event-stream" in received and b"Transfer-Encoding: chunked" in received
        proxy.upstream.gate.set()  # only now may the upstream send its second event
        while not received.endswith(b"0\r\n\r\n"):
            received += s.recv(65536)
    assert proxy.upstream.gate_opened_in_time is True
    assert b"data: 2" in received


def test_chunked_and_close_delimited_replies(proxy: Proxy) -> None:
    status, headers, reply = proxy.request("GET", "/api/chunked-reply")
    assert (status, reply) == (200, b"alpha beta gamma")
    assert "trailer" not in headers
    status, _, reply = proxy.request("GET", "/api/close-delimited")
    assert (status, reply) == (200, b"until the end")
    # An HTTP/1.0 client gets the body unframed and the connection closed.
    raw = proxy.raw(b"GET /api/chunked-reply HTTP/1.0\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200") and raw.endswith(b"\r\n\r\nalpha beta gamma")


def test_keep_alive_to_the_client_and_to_the_upstream(proxy: Proxy) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
    for _ in range(3):
        conn.request("GET", "/api/x")
        assert conn.getresponse().read()
    conn.close()
    assert len({seen.peer_port for seen in proxy.upstream.seen[-3:]}) == 1


def test_a_pooled_connection_the_upstream_closed_is_not_an_error(proxy: Proxy) -> None:
    for body in (None, bytes(200_000)):  # replayed, and checked before use
        proxy.upstream.connection_closed.clear()
        assert proxy.request("GET", "/api/close-after")[0] == 200
        assert proxy.upstream.connection_closed.wait(5)
        status, _, reply = proxy.request("POST", "/api/after", body=body or b"x")
        assert status == 200, reply


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
def test_https_upstream(tmp_path: Path, proxy_server: CredProxyServer) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    tls_upstream = UpstreamServer(server_ctx)
    _serve(tls_upstream)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    tls_proxy = CredProxyServer(("127.0.0.1", 0), ProxyConfig.build(
        [CredProxyRoute("tls", f"https://127.0.0.1:{tls_upstream.port}", "Authorization", "Bearer ${TOKEN}")],
        {"TOKEN": SECRET}), ssl_context=client_ctx, request_log=LOG.append)
    _serve(tls_proxy)
    try:
        p = Proxy(tls_proxy, tls_upstream)
        assert p.request("GET", "/tls/v1/x")[0] == 200
        assert tls_upstream.seen[-1].header("Authorization") == [f"Bearer {SECRET}"]
        # Without the CA the upstream's certificate is refused.
        p.server.pool = type(p.server.pool)(ssl.create_default_context())
        status, _, reply = p.request("GET", "/tls/v1/x")
        assert status == 502 and b"TLS" in reply
    finally:
        for server in (tls_proxy, tls_upstream):
            server.shutdown()
            server.server_close()


# --- refusals --------------------------------------------------------------------------


REFUSED: list[tuple[bytes, int]] = [
    (b"GET /nope/x HTTP/1.1\r\n\r\n", 404),
    (b"GET http://127.0.0.1/api/x HTTP/1.1\r\n\r\n", 400),
    (b"GET //127.0.0.1/api/x HTTP/1.1\r\n\r\n", 404),
    (b"OPTIONS * HTTP/1.1\r\n\r\n", 400),
    (b"CONNECT api.anthropic.com:443 HTTP/1.1\r\n\r\n", 405),
    (b"TRACE /api/x HTTP/1.1\r\n\r\n", 405),
    (b"GET /api/../nope/x HTTP/1.1\r\n\r\n", 400),
    (b"GET /api/v1/.. HTTP/1.1\r\n\r\n", 400),
    (b"GET /api/./x HTTP/1.1\r\n\r\n", 400),
    (b"GET /api/%2e%2e/x HTTP/1.1\r\n\r\n", 400),
    (b"GET /api/.%2E/x HTTP/1.1\r\n\r\n", 400),
    (b"GET /%2e%2e/api/x HTTP/1.1\r\n\r\n", 400),
    (b"GET /api/a%2fb HTTP/1.1\r\n\r\n", 400),
    (b"GET /api/a%2Fb HTTP/1.1\r\n\r\n", 400),
    (b"GET /api/a%5cb HTTP/1.1\r\n\r\n", 400),
    (b"GET /api/a\\b HTTP/1.1\r\n\r\n", 400),
    (b"GET /api/a%00b HTTP/1.1\r\n\r\n", 400),
    (b"GET /api/a\x00b HTTP/1.1\r\n\r\n", 400),
    (b"GET /api/%zz HTTP/1.1\r\n\r\n", 400),
    (b"GET /api/caf\xc3\xa9 HTTP/1.1\r\n\r\n", 400),
    (b"GET /api/x HTTP/2.0\r\n\r\n", 505),
    (b"GET /api/x\r\n\r\n", 400),
    (b"GET /api/x HTTP/1.1\r\nBad Header: x\r\n\r\n", 400),
    (b"GET /api/x HTTP/1.1\r\n folded: x\r\n\r\n", 400),
    (b"POST /api/x HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"POST /api/x HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
    (b"POST /api/x HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
    (b"POST /api/x HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
    (b"POST /api/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    (b"GET /" + b"a" * 8200 + b" HTTP/1.1\r\n\r\n", 414),
    (b"GET /api/x HTTP/1.1\r\n" + b"X-Big: " + b"b" * 33_000 + b"\r\n\r\n", 431),
    (b"GET /api/x HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(101)) + b"\r\n", 431),
]


@pytest.mark.parametrize(("request_bytes", "status"), REFUSED, ids=[r[:40].decode("latin-1") for r, _ in REFUSED])
def test_refusals_never_reach_the_upstream(proxy: Proxy, request_bytes: bytes, status: int) -> None:
    reply = proxy.raw(request_bytes)
    assert reply.startswith(b"HTTP/1.1 %d " % status), reply[:200]
    assert b"Connection: close" in reply
    assert proxy.upstream.seen == []


def test_limits_accept_requests_just_inside_them(proxy: Proxy) -> None:
    path = "/api/" + "a" * (8 * 1024 - len("GET /api/ HTTP/1.1") - 1)
    assert proxy.request("GET", path)[0] == 200
    # 100 lines with Host and Accept-Encoding; the proxy drops two, so that the upstream
    # (http.server takes at most 99) accepts the rest.
    many = {f"X-H{i}": "v" for i in range(96)} | {"Keep-Alive": "1", "Proxy-Authorization": "x"}
    assert proxy.request("GET", "/api/x", headers=many)[0] == 200


def test_unknown_route_names_the_known_ones(proxy: Proxy) -> None:
    status, _, reply = proxy.request("GET", "/github/user")
    assert status == 404
    assert reply == b"cred-proxy: no route named 'github' (routes: api)\n"


def test_health(proxy: Proxy) -> None:
    assert proxy.request("GET", "/_health")[:3:2] == (200, b"ok\n")
    assert proxy.request("POST", "/_health", body=b"")[0] == 405
    assert proxy.upstream.seen == []


def test_missing_secret_is_502_naming_it_without_leaking_values(proxy: Proxy) -> None:
    proxy.use(api_route(proxy.upstream, value="Bearer ${TOKEN} ${OTHER}"), secrets={"TOKEN": SECRET})
    status, _, reply = proxy.request("GET", "/api/x")
    assert status == 502
    assert b"${OTHER}" in reply and SECRET.encode() not in reply
    assert proxy.upstream.seen == []
    proxy.use(api_route(proxy.upstream), secrets={"TOKEN": "two\r\nlines"})
    status, _, reply = proxy.request("GET", "/api/x")
    assert status == 502 and b"${TOKEN}" in reply and b"lines" not in reply


def test_unreachable_upstream_is_502(proxy: Proxy) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        proxy.use(CredProxyRoute("down", f"http://127.0.0.1:{port}", "Authorization", "Bearer ${TOKEN}"))
        status, _, reply = proxy.request("GET", "/down/x")
    assert status == 502 and b"cannot connect" in reply


def test_logs_a_line_per_request_and_never_a_header_value(proxy: Proxy) -> None:
    LOG.clear()
    proxy.request("POST", "/api/v1/messages", body=b"{}", headers={"Authorization": "Bearer client-value"})
    proxy.request("GET", "/nope")
    proxy.raw(b"CONNECT x:443 HTTP/1.1\r\n\r\n")
    expected = {"POST api 200", "GET - 404", "CONNECT - 405"}
    deadline = time.monotonic() + 5
    while not expected <= {line.rsplit(" ", 1)[0] for line in LOG}:  # logged once the reply is out
        assert time.monotonic() < deadline, LOG
        time.sleep(0.01)
    assert all(re.fullmatch(r"\S+ \S+ \d{3} \d+\.\dms", line) for line in LOG), LOG
    assert not any(SECRET in line or "client-value" in line for line in LOG)


def test_config_takes_secrets_file_over_environment(tmp_path: Path) -> None:
    routes = tmp_path / "routes.json"
    routes.write_text('{"routes": [{"name": "a", "upstream": "http://127.0.0.1:9", "header": "Authorization",'
                      ' "value": "Bearer ${T} ${U}"}]}')
    secrets = tmp_path / "secrets.json"
    secrets.write_text('{"T": "from-file"}')
    config = load_config(routes, secrets, {"T": "from-env", "U": "env-only"})
    assert config.routes["a"].credential_line == b"Authorization: Bearer from-file env-only\r\n"
    config = load_config(routes, None, {"T": "from-env", "U": "env-only"})
    assert config.routes["a"].credential_line == b"Authorization: Bearer from-env env-only\r\n"
