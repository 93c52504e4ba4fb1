"""Warm `start claude -y -- --version` against (a) the floor — the same networks and
containers made by plain docker commands (bench/floor.py) — and (b) a bare
`docker run --rm <agent image> claude --version`.

Not a test: run `python3 bench/start_bench.py` with a daemon, the images built, and
pipelock's image (or the test double via $CLAUDE_BOTTLE_PIPELOCK_IMAGE). Runs are
interleaved so that machine noise hits all rows alike; prints medians and ratios.
Target: start ≤ 1.25× the floor.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = int(os.environ.get("BENCH_RUNS", "5"))


def timed(cmd: list[str], env: dict[str, str], cwd: str) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return elapsed


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "work"
        work.mkdir()
        os.chown(work, 1000, 1000)
        manifest = Path(tmp) / "manifest.json"
        # The default manifest's shape: one anthropic route through cred-proxy.
        route = {"name": "anthropic", "role": "anthropic-base-url", "upstream": "https://api.anthropic.com",
                 "header": "Authorization", "value": "Bearer ${BENCH_TOKEN}"}
        manifest.write_text(json.dumps({"bottles": {"b": {"ca_bundle": "/etc/ssl/certs/ca-certificates.crt",
                                                          "cred_proxy": {"routes": [route]}}},
                                        "agents": {"claude": {"bottle": "b"}}}))
        env = dict(os.environ, CLAUDE_BOTTLE_HOME=str(Path(tmp) / "home"), CLAUDE_BOTTLE_MANIFEST=str(manifest),
                   BENCH_TOKEN="not-a-real-token")
        env.setdefault("CLAUDE_BOTTLE_PIPELOCK_IMAGE", "claude-bottle-test/pipelock-double:latest")
        start = [sys.executable, str(ROOT / "cli.py"), "start", "claude", "-y", "--", "--version"]
        timed(start, env, str(work))  # warm the image cache
        plan = json.loads(subprocess.run([*start[:4], "--dry-run", "--format=json"], env=env, cwd=str(work),
                                         capture_output=True, text=True, check=True).stdout)
        plan_file = Path(tmp) / "plan.json"
        plan_file.write_text(json.dumps(plan))
        queue = Path(tmp) / "floor-queue"
        queue.mkdir()
        floor = [sys.executable, str(ROOT / "bench" / "floor.py"), str(plan_file), env["CLAUDE_BOTTLE_PIPELOCK_IMAGE"],
                 str(queue)]
        bare = ["docker", "run", "--rm", plan["image"], "claude", "--version"]
        rows: dict[str, list[float]] = {"start claude -y -- --version": [], "floor (plain docker, same bottle)": [],
                                        "docker run --rm <image> claude --version": []}
        for _ in range(RUNS):
            rows["start claude -y -- --version"].append(timed(start, env, str(work)))
            rows["floor (plain docker, same bottle)"].append(timed(floor, env, str(work)))
            rows["docker run --rm <image> claude --version"].append(timed(bare, env, str(work)))
    floor_med = statistics.median(rows["floor (plain docker, same bottle)"])
    bare_med = statistics.median(rows["docker run --rm <image> claude --version"])
    print(f"{'command':<44} {'median s':>9} {'min s':>7}  {'vs floor':>8}  {'vs bare':>8}")
    for name, times in rows.items():
        med = statistics.median(times)
        print(f"{name:<44} {med:>9.2f} {min(times):>7.2f}  {med / floor_med:>7.2f}x  {med / bare_med:>7.2f}x")
    ratio = statistics.median(rows["start claude -y -- --version"]) / floor_med
    print(f"start / floor = {ratio:.2f}  (target <= 1.25: {'PASS' if ratio <= 1.25 else 'FAIL'})")


if __name__ == "__main__":
    main()
