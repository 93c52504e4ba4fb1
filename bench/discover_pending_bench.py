"""How long discover_pending takes over a large queue: 10,000 proposals in 500 folders.

    python3 bench/discover_pending_bench.py [--runs 7] [--limit-ms 300]

Builds the queue in a temporary folder (a mix of the three tools, plus one decided
proposal per folder), times several full scans, cold (nothing remembered: every file
read, parsed and checked, as on the dashboard's first look) and warm (as on each refresh
after), and prints the medians with PASS, or FAIL (exit status 1) if either is over.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from claude_bottle.supervise.discover import forget_seen  # noqa: E402
from claude_bottle.supervise.queue import (  # noqa: E402
    Proposal, discover_pending, make_response, new_proposal_id, proposal_path, response_path,
)
from claude_bottle.supervise.checks import iso_utc, utc_now  # noqa: E402

IDENTITIES = 500
PER_IDENTITY = 20
ROUTES = '{"routes": [{"name": "github", "upstream": "https://api.github.com", ' \
         '"header": "Authorization", "value": "token ${GH_TOKEN}"}]}\n'
DOCKERFILE = "FROM debian:bookworm-slim\nRUN apt-get update && apt-get install -y ripgrep\n"


def build_queue(root: Path) -> int:
    """Write PER_IDENTITY pending proposals per folder, plus one decided one each.

    Files are written plainly (the layout write_proposal uses, without its fsync, which
    would only make building slow). Returns how many are pending.
    """
    pending = 0
    for i in range(IDENTITIES):
        identity = f"agent{i % 7}-{i:05d}"
        folder = root / identity
        folder.mkdir()
        for j in range(PER_IDENTITY + 1):
            kind = j % 3
            proposal = Proposal(
                id=new_proposal_id(), identity=identity,
                tool=("cred-proxy-block", "pipelock-block", "capability-block")[kind],
                reason=f"request {j}: the build needs it", created_at=iso_utc(utc_now()),
                routes=ROUTES if kind == 0 else None,
                hosts=("pypi.org", "*.pythonhosted.org") if kind == 1 else None,
                dockerfile=DOCKERFILE if kind == 2 else None,
            )
            _write(proposal_path(folder, proposal.id), proposal.to_json())
            if j == PER_IDENTITY:
                _write(response_path(folder, proposal.id), make_response(proposal.id, "reject", "no", "").to_json())
            else:
                pending += 1
    return pending


def _write(path: Path, obj: dict[str, object]) -> None:
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=2) + "\n")


def _time_scans(root: Path, runs: int, expected: int, *, cold: bool) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU milliseconds of each run."""
    wall: list[float] = []
    cpu: list[float] = []
    for _ in range(runs):
        if cold:
            forget_seen()
        start, start_cpu = time.perf_counter(), time.process_time()
        items = discover_pending(root)
        wall.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - start_cpu) * 1000)
        if len(items) != expected or any(item.error for item in items):
            raise SystemExit(f"FAIL: found {len(items)} items, expected {expected} valid ones")
    return wall, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--limit-ms", type=float, default=300.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="discover-bench-") as tmp:
        root = Path(tmp)
        expected = build_queue(root)
        cold = _time_scans(root, args.runs, expected, cold=True)
        warm = _time_scans(root, args.runs, expected, cold=False)
    verdicts: list[bool] = []
    print(f"discover_pending over {IDENTITIES * (PER_IDENTITY + 1)} proposals ({expected} pending) "
          f"in {IDENTITIES} folders, {args.runs} runs each, limit {args.limit_ms:.0f} ms "
          f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs):")
    for label, (wall, cpu) in (("cold (every file read and checked)", cold),
                               ("warm (unchanged files remembered)", warm)):
        median = statistics.median(wall)
        verdicts.append(median < args.limit_ms)
        print(f"  {label}: median {median:.0f} ms (min {min(wall):.0f}, max {max(wall):.0f}; "
              f"CPU median {statistics.median(cpu):.0f} ms)")
    verdict = "PASS" if all(verdicts) else "FAIL"
    print(verdict)
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
