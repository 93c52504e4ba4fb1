"""Probes run from inside the agent container with its own Node.js: raw TCP, exact bytes."""

from __future__ import annotations

import subprocess

from .conftest import docker

# A raw TCP client in the agent's own Node.js: send exactly these bytes, print what comes back.
RAW = r"""
const net = require('net');
const [host, port, payload] = process.argv.slice(1);
const s = net.connect({host, port: +port, timeout: 5000}, () => { process.stderr.write('CONNECTED'); s.write(payload.replace(/\\r\\n/g, '\r\n')); });
let out = '';
s.on('data', d => { out += d; });
s.on('end', () => { console.log(out); process.exit(0); });
s.on('timeout', () => { console.log(out || 'TIMEOUT'); process.exit(0); });
s.on('error', e => { console.log('ERR ' + e.code); process.exit(0); });
"""


def raw(agent: str, host: str, port: int, request: str) -> str:
    return _run_raw(agent, host, port, request).stdout


def unreachable(agent: str, host: str, port: int) -> bool:
    """No TCP connection at all: refused, unresolvable, unroutable or timed out."""
    return "CONNECTED" not in _run_raw(agent, host, port, "GET / HTTP/1.0\r\n\r\n").stderr


def _run_raw(agent: str, host: str, port: int, request: str) -> "subprocess.CompletedProcess[str]":
    return docker("exec", agent, "node", "-e", RAW, host, str(port), request.replace("\r\n", "\\r\\n"))


def get(agent: str, host: str, port: int, path: str, *headers: str) -> str:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", *headers, "Connection: close", "", ""]
    return raw(agent, host, port, "\r\n".join(lines))
