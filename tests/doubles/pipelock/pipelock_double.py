#!/usr/bin/env python3
"""TEST DOUBLE standing in for pipelock (github.com/luckyPipewrench/pipelock).

No container registry is reachable where the tests run, so this stdlib script is
installed as `/pipelock` in a Debian image and started exactly like the real one:

    /pipelock run --config /config/pipelock.yaml --listen 0.0.0.0:8888

It implements the behaviour claude-bottle relies on (DESIGN.md, "pipelock facts"):
- the config is JSON (the subset of YAML claude-bottle writes); unknown keys,
  wrong types and invalid values stop it with exit status 1. Only the keys in
  DESIGN's list are known: the double is stricter than pipelock on purpose;
- strict mode enforces `api_allowlist` (exact hosts, or `*.example.com` which
  also matches the apex; case-insensitive) and refuses an empty list; balanced
  and audit modes let every host through;
- CONNECT tunnels (when `forward_proxy.enabled`) and absolute-URI plain HTTP
  requests (`GET http://host/...`); a host outside the allowlist gets 403 with
  `CONNECT blocked: domain not in allowlist: <host>` or, for plain HTTP,
  `blocked: domain not in allowlist: <host>` (each followed by a newline);
- tunnels close after `idle_timeout_seconds` without traffic or after
  `max_tunnel_seconds` in all (older pipelock releases bound the whole tunnel);
  with `sni_verification`, a TLS ClientHello whose SNI is not the CONNECT host
  closes the tunnel; per-host `max_requests_per_minute` answers 429;
- JSON log lines on stdout, e.g. {"level":"warn","event":"blocked",
  "scanner":"allowlist","target":"host:port",...}; allowed requests and tunnels
  are logged when `include_allowed`;
- reload on SIGHUP and when the file's content changes (polled twice a second).
  A reload that weakens security (mode away from strict, turning the forward
  proxy on or off, switching SNI verification off) or does not parse is refused
  and the old config stays: {"event":"config_reload","status":"rejected",...};
- `GET /health` on the listen port answers 200 with {"status": "healthy", ...};
  `/pipelock healthcheck [--addr 127.0.0.1:8888]` exits 0 when it does (the real
  image runs the same command as its Docker HEALTHCHECK); `/pipelock check
  --config FILE` validates a config.
Not implemented: DLP, SSRF and entropy scanning, TLS interception, the /fetch
endpoint, metrics. Plain HTTP to an `https://` URL is answered 502.
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import json
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from dataclasses import dataclass
from typing import Any, cast

VERSION = "0.0.0-test-double"
MODE_RANK = {"audit": 0, "balanced": 1, "strict": 2}
BUFSIZE = 65536
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
}


class ConfigError(Exception):
    pass


@dataclass(frozen=True)
class Config:
    mode: str = "balanced"
    allowlist: tuple[str, ...] = ()
    listen: str = "127.0.0.1:8888"
    timeout_seconds: int = 30
    max_requests_per_minute: int = 60
    forward_enabled: bool = False
    max_tunnel_seconds: int = 300
    idle_timeout_seconds: int = 120
    sni_verification: bool = True
    log_format: str = "json"
    include_allowed: bool = True
    include_blocked: bool = True


# Each known key maps to a nested schema or to the kind of value it takes.
SCHEMA: dict[str, object] = {
    "version": "version",
    "mode": ("strict", "balanced", "audit"),
    "api_allowlist": "hosts",
    "fetch_proxy": {
        "listen": "address",
        "timeout_seconds": "positive",
        "monitoring": {"max_requests_per_minute": "positive"},
    },
    "forward_proxy": {
        "enabled": "bool",
        "max_tunnel_seconds": "positive",
        "idle_timeout_seconds": "positive",
        "sni_verification": "bool",
    },
    "logging": {
        "format": ("json", "text"),
        "output": ("stdout",),
        "include_allowed": "bool",
        "include_blocked": "bool",
    },
    "sentry": {"enabled": "bool"},
}


def parse_config(text: str) -> Config:
    try:
        data: object = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"not JSON (the double reads only JSON-shaped YAML): {exc}") from None
    _check(data, SCHEMA, "")
    doc = cast("dict[str, Any]", data)
    fetch = cast("dict[str, Any]", doc.get("fetch_proxy", {}))
    forward = cast("dict[str, Any]", doc.get("forward_proxy", {}))
    logging = cast("dict[str, Any]", doc.get("logging", {}))
    defaults = Config()
    config = Config(
        mode=doc.get("mode", defaults.mode),
        allowlist=tuple(h.lower() for h in doc.get("api_allowlist", [])),
        listen=fetch.get("listen", defaults.listen),
        timeout_seconds=fetch.get("timeout_seconds", defaults.timeout_seconds),
        max_requests_per_minute=cast("dict[str, Any]", fetch.get("monitoring", {})).get(
            "max_requests_per_minute", defaults.max_requests_per_minute
        ),
        forward_enabled=forward.get("enabled", defaults.forward_enabled),
        max_tunnel_seconds=forward.get("max_tunnel_seconds", defaults.max_tunnel_seconds),
        idle_timeout_seconds=forward.get("idle_timeout_seconds", defaults.idle_timeout_seconds),
        sni_verification=forward.get("sni_verification", defaults.sni_verification),
        log_format=logging.get("format", defaults.log_format),
        include_allowed=logging.get("include_allowed", defaults.include_allowed),
        include_blocked=logging.get("include_blocked", defaults.include_blocked),
    )
    if config.mode == "strict" and not config.allowlist:
        raise ConfigError("strict mode requires a non-empty api_allowlist")
    return config


def _check(value: object, schema: object, where: str) -> None:
    name = where or "config"
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a mapping")
        known = cast("dict[str, object]", schema)
        for key, sub in cast("dict[object, object]", value).items():
            path = f"{where}.{key}" if where else str(key)
            if key not in known:
                raise ConfigError(f"unknown field {path!r}")
            _check(sub, known[str(key)], path)
    elif isinstance(schema, tuple):
        if value not in cast("tuple[str, ...]", schema):
            raise ConfigError(f"{name}: {value!r} is not one of {', '.join(cast('tuple[str, ...]', schema))}")
    elif schema == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true or false")
    elif schema == "positive":
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"{name}: must be an integer > 0")
    elif schema == "version":
        if value != 1 or isinstance(value, bool):
            raise ConfigError(f"{name}: unsupported config version {value!r}")
    elif schema == "address":
        if not isinstance(value, str) or _split_address(value) is None:
            raise ConfigError(f"{name}: expected host:port")
    elif schema == "hosts":
        if not isinstance(value, list):
            raise ConfigError(f"{name}: expected a list of host patterns")
        for entry in cast("list[object]", value):
            if not isinstance(entry, str) or not entry or " " in entry or "*" in entry.removeprefix("*."):
                raise ConfigError(f"{name}: invalid host pattern {entry!r}")


def weakening(old: Config, new: Config) -> str | None:
    """Why replacing `old` by `new` on reload would weaken security, if it would."""
    if MODE_RANK[new.mode] < MODE_RANK[old.mode]:
        return f"mode change from {old.mode} to {new.mode} weakens security"
    if new.forward_enabled != old.forward_enabled:
        return "forward_proxy.enabled cannot change on reload (restart required)"
    if old.sni_verification and not new.sni_verification:
        return "disabling forward_proxy.sni_verification weakens security"
    return None


def host_allowed(host: str, allowlist: tuple[str, ...]) -> bool:
    host = host.lower().rstrip(".")
    for pattern in allowlist:
        if pattern.startswith("*."):
            apex = pattern[2:]
            if host == apex or host.endswith("." + apex):
                return True
        elif host == pattern:
            return True
    return False


def _split_address(text: str) -> tuple[str, int] | None:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host.strip("[]"), int(port)


class Runtime:
    """The live config, the log, the rate limiter and reloading."""

    def __init__(self, config: Config, config_path: str | None) -> None:
        self.config = config
        self.config_path = config_path
        self.started = time.monotonic()
        self.reload_requested = threading.Event()
        self._log_lock = threading.Lock()
        self._rate_lock = threading.Lock()
        self._hits: dict[str, deque[float]] = {}
        self._seen = _digest(config_path)

    def log(self, level: str, event: str, message: str, **fields: object) -> None:
        config = self.config
        if event == "blocked" and not config.include_blocked:
            return
        if event in ("allowed", "tunnel_open", "tunnel_close") and not config.include_allowed:
            return
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        entry: dict[str, object] = {"level": level, "component": "pipelock", "event": event, **fields}
        entry["time"] = now
        entry["message"] = message
        if config.log_format == "json":
            line = json.dumps(entry, separators=(",", ":"))
        else:
            line = f"{now} {level.upper()} {message} " + " ".join(f"{k}={v}" for k, v in fields.items())
        with self._log_lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    def rate_limited(self, host: str) -> bool:
        now = time.monotonic()
        with self._rate_lock:
            hits = self._hits.setdefault(host, deque())
            while hits and now - hits[0] > 60:
                hits.popleft()
            if len(hits) >= self.config.max_requests_per_minute:
                return True
            hits.append(now)
            return False

    def watch(self) -> None:
        """Reload on SIGHUP (which sets reload_requested) or when the file changes."""
        while True:
            signalled = self.reload_requested.wait(0.5)
            self.reload_requested.clear()
            if self.config_path is None:
                continue
            seen = _digest(self.config_path)
            if signalled or seen != self._seen:
                self._seen = seen
                self.reload("signal" if signalled else "file")

    def reload(self, trigger: str) -> None:
        assert self.config_path is not None
        try:
            with open(self.config_path, encoding="utf-8") as f:
                new = parse_config(f.read())
        except (OSError, ConfigError) as exc:
            self.log("warn", "config_reload", "config reload rejected", status="rejected", trigger=trigger, reason=str(exc))
            return
        reason = weakening(self.config, new)
        if reason is not None:
            self.log("warn", "config_reload", "config reload rejected", status="rejected", trigger=trigger, reason=reason)
            return
        self.config = new
        self.log("info", "config_reload", "config reloaded", status="success", trigger=trigger, api_allowlist=list(new.allowlist))


def _digest(path: str | None) -> str:
    if path is None:
        return ""
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return ""


def _server_name_indication(hello: bytes) -> str | None:
    """The SNI host name of a TLS ClientHello record, if one can be read."""
    try:
        if hello[0] != 0x16 or hello[5] != 0x01:
            return None
        pos = 5 + 4 + 2 + 32  # record header, handshake header, version, random
        pos += 1 + hello[pos]  # session id
        pos += 2 + int.from_bytes(hello[pos : pos + 2], "big")  # cipher suites
        pos += 1 + hello[pos]  # compression methods
        end = pos + 2 + int.from_bytes(hello[pos : pos + 2], "big")
        pos += 2
        while pos + 4 <= end:
            kind = int.from_bytes(hello[pos : pos + 2], "big")
            size = int.from_bytes(hello[pos + 2 : pos + 4], "big")
            if kind == 0:  # server_name: list length, name type, name length, name
                length = int.from_bytes(hello[pos + 7 : pos + 9], "big")
                return hello[pos + 9 : pos + 9 + length].decode("ascii")
            pos += 4 + size
    except (IndexError, UnicodeDecodeError):
        return None
    return None


class Tunnel:
    """Bytes both ways between two sockets as they come; an end of input is passed on
    as a half-close, a timeout or a refused ClientHello closes both sides."""

    def __init__(self, runtime: Runtime, client: socket.socket, upstream: socket.socket, host: str) -> None:
        self.runtime = runtime
        self.client = client
        self.upstream = upstream
        self.host = host
        self.started = time.monotonic()
        self.last_activity = self.started
        self.aborted = threading.Event()
        self.bytes = 0
        self.sni_checked = not runtime.config.sni_verification

    def run(self) -> int:
        for sock in (self.client, self.upstream):
            sock.settimeout(1.0)
        other = threading.Thread(target=self._pump, args=(self.upstream, self.client, False), daemon=True)
        other.start()
        self._pump(self.client, self.upstream, True)
        other.join()
        return self.bytes

    def _pump(self, src: socket.socket, dst: socket.socket, from_client: bool) -> None:
        try:
            while not self.aborted.is_set():
                try:
                    data = src.recv(BUFSIZE)
                except socket.timeout:
                    if self._expired():
                        self._abort()
                    continue
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                if from_client and not self.sni_checked:
                    self.sni_checked = True
                    sni = _server_name_indication(data)
                    if sni is not None and sni.lower().rstrip(".") != self.host.lower():
                        self.runtime.log(
                            "warn", "blocked", "request blocked", method="CONNECT", target=self.host,
                            scanner="sni", reason=f"SNI {sni} does not match CONNECT host {self.host}",
                        )
                        self._abort()
                        return
                self.last_activity = time.monotonic()
                self.bytes += len(data)
                dst.sendall(data)
        except OSError:
            self._abort()

    def _abort(self) -> None:
        self.aborted.set()
        for sock in (self.client, self.upstream):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _expired(self) -> bool:
        config = self.runtime.config
        now = time.monotonic()
        return (
            now - self.last_activity > config.idle_timeout_seconds
            or now - self.started > config.max_tunnel_seconds
        )


class ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    rbufsize = 0  # unbuffered: nothing read ahead of a tunnel's first bytes
    server_version = "pipelock-double"
    runtime: Runtime  # set on the class before serving
    response_started = False

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # --- CONNECT ---------------------------------------------------------

    def do_CONNECT(self) -> None:
        config = self.runtime.config
        if not config.forward_enabled:
            self._text(405, "forward proxy is not enabled")
            return
        target = self.path if ":" in self.path.lstrip("[").split("]")[-1] else f"{self.path}:443"
        address = _split_address(target)
        if address is None or not address[0]:
            self._text(400, "malformed target authority")
            return
        host, port = address
        host = host.lower()
        target = f"{host}:{port}"
        refusal = self._refusal(host)
        if refusal is not None:
            status, scanner, reason = refusal
            self.runtime.log(
                "warn", "blocked", "request blocked", method="CONNECT", url=target, target=target,
                client_ip=self.client_address[0], scanner=scanner, reason=reason,
            )
            self._text(status, f"CONNECT blocked: {reason}")
            return
        try:
            upstream = socket.create_connection((host, port), timeout=config.max_tunnel_seconds)
        except OSError as exc:
            self.runtime.log("error", "error", "request error", method="CONNECT", target=target, error=str(exc))
            self._text(502, "tunnel dial failed")
            return
        self.wfile.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        self.close_connection = True
        self.runtime.log("info", "tunnel_open", "tunnel opened", target=target, client_ip=self.client_address[0])
        started = time.monotonic()
        with upstream:
            total = Tunnel(self.runtime, self.connection, upstream, host).run()
        self.runtime.log(
            "info", "tunnel_close", "tunnel closed", target=target, total_bytes=total,
            duration_ms=int((time.monotonic() - started) * 1000),
        )

    # --- everything else: absolute-URI proxying, or pipelock's own endpoints

    def do_GET(self) -> None:
        self._plain()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    def _plain(self) -> None:
        if self.path.startswith(("http://", "https://")):
            self._forward()
        elif self.command in ("GET", "HEAD") and self.path.split("?")[0] == "/health":
            self._health()
        else:
            self._text(404, "404 page not found")

    def _health(self) -> None:
        config = self.runtime.config
        body = json.dumps({
            "status": "healthy",
            "version": VERSION,
            "mode": config.mode,
            "uptime_seconds": round(time.monotonic() - self.runtime.started, 2),
            "forward_proxy_enabled": config.forward_enabled,
            "kill_switch_active": False,
            "test_double": True,
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _forward(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        host = (url.hostname or "").lower()
        try:
            port = url.port or (443 if url.scheme == "https" else 80)
        except ValueError:
            self._text(400, "malformed URL", close=True)
            return
        target = f"{host}:{port}"
        refusal = self._refusal(host) if host else (400, "parser", "missing host")
        if refusal is not None:
            status, scanner, reason = refusal
            self.runtime.log(
                "warn", "blocked", "request blocked", method=self.command, url=self.path, target=target,
                client_ip=self.client_address[0], scanner=scanner, reason=reason,
            )
            self._text(status, f"blocked: {reason}", close=True)
            return
        if url.scheme != "http":
            self.runtime.log("error", "error", "request error", method=self.command, url=self.path, error="https forwarding is not implemented by the double")
            self._text(502, "forward proxy fetch failed", close=True)
            return
        started = time.monotonic()
        try:
            upstream = socket.create_connection((host, port), timeout=self.runtime.config.timeout_seconds)
        except OSError as exc:
            self.runtime.log("error", "error", "request error", method=self.command, url=self.path, error=str(exc))
            self._text(502, "forward proxy fetch failed", close=True)
            return
        self.close_connection = True
        self.response_started = False
        with upstream:
            try:
                self._send_request(upstream, url)
                status, size = self._relay_response(upstream)
            except OSError as exc:
                self.runtime.log("error", "error", "request error", method=self.command, url=self.path, error=str(exc))
                if not self.response_started:
                    self._text(502, "forward proxy fetch failed", close=True)
                return
        self.runtime.log(
            "info", "allowed", "request allowed", method=self.command, url=self.path, target=target,
            client_ip=self.client_address[0], status_code=status, size_bytes=size,
            duration_ms=int((time.monotonic() - started) * 1000),
        )

    def _send_request(self, upstream: socket.socket, url: urllib.parse.SplitResult) -> None:
        path = url.path or "/"
        if url.query:
            path += "?" + url.query
        dropped = HOP_BY_HOP | {
            name.strip().lower() for value in self.headers.get_all("Connection", []) for name in value.split(",")
        }
        lines = [f"{self.command} {path} {self.request_version}"]
        if "Host" not in self.headers:
            lines.append(f"Host: {url.netloc}")
        lines += [f"{k}: {v}" for k, v in self.headers.items() if k.lower() not in dropped]
        lines.append("Connection: close")
        upstream.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._relay_chunked_body(upstream)
        else:
            remaining = int(self.headers.get("Content-Length", "0") or "0")
            while remaining > 0:
                data = self.rfile.read(min(remaining, BUFSIZE))
                if not data:
                    break
                upstream.sendall(data)
                remaining -= len(data)

    def _relay_chunked_body(self, upstream: socket.socket) -> None:
        while True:
            line = self.rfile.readline(65537)
            upstream.sendall(line)
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers, then the empty line
                    trailer = self.rfile.readline(65537)
                    upstream.sendall(trailer)
                    if trailer in (b"\r\n", b"\n", b""):
                        return
            remaining = size + 2  # the chunk and its CRLF
            while remaining > 0:
                data = self.rfile.read(min(remaining, BUFSIZE))
                if not data:
                    return
                upstream.sendall(data)
                remaining -= len(data)

    def _relay_response(self, upstream: socket.socket) -> tuple[int, int]:
        """Copy the response back as it arrives; the head is rewritten to close the connection."""
        buffered = b""
        while b"\r\n\r\n" not in buffered:
            data = upstream.recv(BUFSIZE)
            if not data:
                break
            buffered += data
        head, _, body = buffered.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split()[1])
        except (IndexError, ValueError):
            self._text(502, "forward proxy fetch failed")
            return 502, 0
        kept = [lines[0]] + [line for line in lines[1:] if line.split(":")[0].strip().lower() not in HOP_BY_HOP]
        kept.append("Connection: close")
        self.response_started = True
        self.wfile.write(("\r\n".join(kept) + "\r\n\r\n").encode("latin-1") + body)
        size = len(body)
        while True:
            data = upstream.recv(BUFSIZE)
            if not data:
                return status, size
            size += len(data)
            self.wfile.write(data)

    # --- helpers ---------------------------------------------------------

    def _refusal(self, host: str) -> tuple[int, str, str] | None:
        """(status, scanner, reason) when the request to `host` must be refused."""
        config = self.runtime.config
        if config.mode == "strict" and not host_allowed(host, config.allowlist):
            return 403, "allowlist", f"domain not in allowlist: {host}"
        if self.runtime.rate_limited(host):
            return 429, "ratelimit", f"rate limit exceeded for {host}"
        return None

    def _text(self, status: int, text: str, *, close: bool = False) -> None:
        body = (text + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # a client going away is not news
            super().handle_error(request, client_address)


def run(config_path: str | None, listen: str | None) -> int:
    config = Config()
    if config_path is not None:
        try:
            with open(config_path, encoding="utf-8") as f:
                config = parse_config(f.read())
        except (OSError, ConfigError) as exc:
            print(f"Error: loading config {config_path}: {exc}", file=sys.stderr)
            return 1
    address = _split_address(listen or config.listen)
    if address is None:
        print(f"Error: invalid listen address {listen!r}", file=sys.stderr)
        return 1
    runtime = Runtime(config, config_path)
    ProxyHandler.runtime = runtime
    server = Server(address, ProxyHandler)

    def stop(signum: int, frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGHUP, lambda signum, frame: runtime.reload_requested.set())
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    threading.Thread(target=runtime.watch, daemon=True).start()
    runtime.log(
        "info", "startup", "pipelock test double listening", listen=f"{address[0]}:{address[1]}",
        mode=config.mode, api_allowlist=list(config.allowlist), forward_proxy=config.forward_enabled,
    )
    server.serve_forever()
    return 0


def healthcheck(addr: str) -> int:
    try:
        with urllib.request.urlopen(f"http://{addr}/health", timeout=3) as response:
            if response.status == 200:
                return 0
            print(f"unhealthy: status {response.status}", file=sys.stderr)
    except urllib.error.HTTPError as exc:
        print(f"unhealthy: status {exc.code}", file=sys.stderr)
    except OSError as exc:
        print(f"health check failed: {exc}", file=sys.stderr)
    return 1


def check(config_path: str) -> int:
    try:
        with open(config_path, encoding="utf-8") as f:
            parse_config(f.read())
    except (OSError, ConfigError) as exc:
        print(f"Error: {config_path}: {exc}", file=sys.stderr)
        return 1
    print(f"{config_path}: config OK")
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="pipelock", description="pipelock TEST DOUBLE")
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run")
    run_parser.add_argument("--config")
    run_parser.add_argument("--listen")
    health_parser = sub.add_parser("healthcheck")
    health_parser.add_argument("--addr", default="127.0.0.1:8888")
    check_parser = sub.add_parser("check")
    check_parser.add_argument("--config", required=True)
    sub.add_parser("version")
    args = parser.parse_args(argv)
    if args.command == "run":
        return run(args.config, args.listen)
    if args.command == "healthcheck":
        return healthcheck(args.addr)
    if args.command == "check":
        return check(args.config)
    print(f"pipelock {VERSION}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
