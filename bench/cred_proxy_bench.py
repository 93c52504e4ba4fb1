"""cred-proxy benchmark: the same requests direct to an upstream and through the proxy.

Run `python3 bench/cred_proxy_bench.py`. It starts a loopback upstream and the proxy, each
as its own process (the proxy exactly as in the sidecar), then measures side by side:
small-GET latency (median, p99) with one keep-alive client, requests/second with 8
concurrent keep-alive clients, and time to the first SSE event of a streamed reply.
Exits 1 when a target is missed. Loopback only.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SMALL_BODY = b'{"ok": true, "model": "bench"}'
SSE_FIRST_DELAY = 0.02  # the upstream "thinks" this long before its first event
SSE_EVENTS = 5


class _UpstreamHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    # Buffered, so that a small reply leaves in one segment as from a production server
    # (the SSE handler flushes each event itself).
    wbufsize = 64 * 1024

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.endswith("/sse"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()
            time.sleep(SSE_FIRST_DELAY)
            for i in range(SSE_EVENTS):
                event = f"event: delta\ndata: {{\"i\": {i}}}\n\n".encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                self.wfile.flush()
                time.sleep(0.002)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(SMALL_BODY)))
        self.end_headers()
        self.wfile.write(SMALL_BODY)


class _UpstreamServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 drops SYNs when 8 clients connect at once: 1 s stalls


def serve_upstream() -> None:
    server = _UpstreamServer(("127.0.0.1", 0), _UpstreamHandler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


def _start(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT, env=env)


def _proxy_port(proc: subprocess.Popen[str]) -> int:
    assert proc.stderr is not None
    line = proc.stderr.readline()
    if "listening on" not in line:
        raise SystemExit(f"proxy did not start: {line.strip()}")
    # Drain the per-request log lines so the proxy never blocks on a full pipe.
    threading.Thread(target=lambda: proc.stderr and proc.stderr.read(), daemon=True).start()
    return int(line.split("listening on ")[1].split()[0].rsplit(":", 1)[1])


def _get(conn: http.client.HTTPConnection, path: str) -> None:
    conn.request("GET", path)
    resp = conn.getresponse()
    resp.read()
    if resp.status != 200:
        raise SystemExit(f"GET {path}: {resp.status}")


def latency(port: int, path: str, n: int) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port)
    for _ in range(50):
        _get(conn, path)
    samples: list[float] = []
    for _ in range(n):
        t0 = time.perf_counter()
        _get(conn, path)
        samples.append(time.perf_counter() - t0)
    conn.close()
    return samples


def throughput(port: int, path: str, clients: int, seconds: float) -> float:
    """Requests/second over `seconds`, timed from when every client has connected."""
    counts = [0] * clients
    window = [0.0, 0.0]

    def start_clock() -> None:
        window[0] = time.perf_counter()
        window[1] = window[0] + seconds

    barrier = threading.Barrier(clients, action=start_clock)

    def client(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port)
        _get(conn, path)
        barrier.wait()
        while time.perf_counter() < window[1]:
            _get(conn, path)
            counts[i] += 1
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - window[0])


def first_event(port: int, path: str, n: int) -> list[float]:
    samples: list[float] = []
    conn = http.client.HTTPConnection("127.0.0.1", port)
    for _ in range(n):
        t0 = time.perf_counter()
        conn.request("GET", path)
        resp = conn.getresponse()
        line = resp.readline()
        samples.append(time.perf_counter() - t0)
        if not line.startswith(b"event:"):
            raise SystemExit(f"GET {path}: unexpected first line {line!r}")
        resp.read()
    conn.close()
    return samples


def _alternate(run: Callable[[int, str], list[float]], direct: int, proxied: int, rounds: int) -> tuple[list[float], list[float]]:
    """Interleave direct and proxied runs so that machine noise hits both alike."""
    d: list[float] = []
    p: list[float] = []
    for _ in range(rounds):
        d += run(direct, "/small")
        p += run(proxied, "/bench/small")
    return d, p


def _p99(samples: list[float]) -> float:
    return sorted(samples)[int(len(samples) * 0.99)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--serve-upstream", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--requests", type=int, default=4000, help="latency samples per side")
    parser.add_argument("--seconds", type=float, default=4.0, help="throughput run length per side")
    parser.add_argument("--rounds", type=int, default=10, help="alternating direct/proxied throughput runs")
    args = parser.parse_args()
    if args.serve_upstream:
        serve_upstream()
        return 0

    load_before = os.getloadavg()[0]
    upstream = _start([__file__, "--serve-upstream"])
    assert upstream.stdout is not None
    up_port = int(upstream.stdout.readline())
    with tempfile.TemporaryDirectory() as tmp:
        routes = Path(tmp, "routes.json")
        routes.write_text(json.dumps({"routes": [{
            "name": "bench", "upstream": f"http://127.0.0.1:{up_port}", "header": "Authorization",
            "value": "Bearer ${BENCH_TOKEN}"}]}))
        env = dict(os.environ, BENCH_TOKEN="bench-token", PYTHONPATH=str(ROOT))
        proxy = _start(["-m", "claude_bottle.cred_proxy", "--routes", str(routes),
                        "--listen", "127.0.0.1:0"], env)
        try:
            px_port = _proxy_port(proxy)
            rounds = 4
            lat_d, lat_p = _alternate(lambda port, path: latency(port, path, args.requests // rounds),
                                      up_port, px_port, rounds)
            # Short alternating runs and their medians: other work on the machine comes and
            # goes, and it should hit both sides alike.
            rps_runs_d: list[float] = []
            rps_runs_p: list[float] = []
            for _ in range(args.rounds):
                rps_runs_d.append(throughput(up_port, "/small", 8, args.seconds / args.rounds))
                rps_runs_p.append(throughput(px_port, "/bench/small", 8, args.seconds / args.rounds))
            rps_d, rps_p = statistics.median(rps_runs_d), statistics.median(rps_runs_p)
            sse_d: list[float] = []
            sse_p: list[float] = []
            for _ in range(10):
                sse_d += first_event(up_port, "/sse", 2)
                sse_p += first_event(px_port, "/bench/sse", 2)
        finally:
            proxy.terminate()
            upstream.terminate()
            proxy.wait()
            upstream.wait()

    ms = 1000.0
    med_d, med_p = statistics.median(lat_d) * ms, statistics.median(lat_p) * ms
    p99_d, p99_p = _p99(lat_d) * ms, _p99(lat_p) * ms
    fe_d, fe_p = statistics.median(sse_d) * ms, statistics.median(sse_p) * ms
    checks = [
        ("median added latency < 1 ms", med_p - med_d < 1.0),
        ("proxied throughput >= 70% of direct", rps_p >= 0.7 * rps_d),
        ("first SSE event within 5 ms of direct", fe_p - fe_d < 5.0),
    ]
    print(f"{os.cpu_count()} CPUs, load average {load_before:.1f} before and {os.getloadavg()[0]:.1f} after")
    print(f"{'':28}{'direct':>10}{'proxied':>10}{'ratio':>8}{'added':>10}")
    print(f"{'GET latency median (ms)':28}{med_d:10.3f}{med_p:10.3f}{med_p / med_d:8.2f}{med_p - med_d:10.3f}")
    print(f"{'GET latency p99 (ms)':28}{p99_d:10.3f}{p99_p:10.3f}{p99_p / p99_d:8.2f}{p99_p - p99_d:10.3f}")
    print(f"{'req/s, 8 clients (median)':28}{rps_d:10.0f}{rps_p:10.0f}{rps_p / rps_d:8.2f}")
    print(f"{'first SSE event (ms)':28}{fe_d:10.3f}{fe_p:10.3f}{fe_p / fe_d:8.2f}{fe_p - fe_d:10.3f}")
    print()
    for label, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {label}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
