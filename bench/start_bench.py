"""Warm `start claude -y -- --version` against a bare `docker run --rm <image> claude --version`.

Not a test: run `python3 bench/start_bench.py` with a daemon, the images built, and
pipelock's image (or the test double via $CLAUDE_BOTTLE_PIPELOCK_IMAGE). Prints the
medians side by side and their ratio.
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
        manifest.write_text(json.dumps({"bottles": {"b": {"ca_bundle": "/etc/ssl/certs/ca-certificates.crt"}},
                                        "agents": {"claude": {"bottle": "b"}}}))
        env = dict(os.environ, CLAUDE_BOTTLE_HOME=str(Path(tmp) / "home"), CLAUDE_BOTTLE_MANIFEST=str(manifest))
        env.setdefault("CLAUDE_BOTTLE_PIPELOCK_IMAGE", "claude-bottle-test/pipelock-double:latest")
        start = [sys.executable, str(ROOT / "cli.py"), "start", "claude", "-y", "--", "--version"]
        timed(start, env, str(work))  # warm the image cache
        plan = json.loads(subprocess.run([*start[:4], "--dry-run", "--format=json"], env=env, cwd=str(work),
                                         capture_output=True, text=True, check=True).stdout)
        bare = ["docker", "run", "--rm", plan["image"], "claude", "--version"]
        bare_true = ["docker", "run", "--rm", plan["image"], "true"]
        rows: dict[str, list[float]] = {"start -y -- --version": [], "docker run --rm claude --version": [],
                                        "docker run --rm true": []}
        for _ in range(RUNS):  # interleaved, so machine noise hits all three alike
            rows["start -y -- --version"].append(timed(start, env, str(work)))
            rows["docker run --rm claude --version"].append(timed(bare, env, str(work)))
            rows["docker run --rm true"].append(timed(bare_true, env, str(work)))
    base = statistics.median(rows["docker run --rm claude --version"])
    print(f"{'command':<36} {'median s':>9} {'min s':>7}  ratio to bare claude --version")
    for name, times in rows.items():
        med = statistics.median(times)
        print(f"{name:<36} {med:>9.2f} {min(times):>7.2f}  {med / base:.2f}x")


if __name__ == "__main__":
    main()
