"""The remaining figures, measured in one run (not a test):

- approve of a capability change -> resumed agent ready, minus the image build itself
  (target <= 3 s);
- sidecar memory (RSS) of cred-proxy, git-gate and supervise (target < 30 MB each);
- cold start: `start` with no image cache against `docker build` of the same Dockerfiles
  (only with --cold: it deletes the agent and sidecar images first).

Usage: python3 bench/figures.py [--cold]   (needs the daemon, images, and a pipelock image
or $CLAUDE_BOTTLE_PIPELOCK_IMAGE; the test rig's double is used when present)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from claude_bottle.backend.docker import images  # noqa: E402
from claude_bottle.capability import apply_capability_change  # noqa: E402

CA = "/etc/ssl/certs/ca-certificates.crt"


def docker(*args: str) -> str:
    return subprocess.run(("docker", *args), capture_output=True, text=True, check=True).stdout


def agent_ready(identity: str) -> bool:
    out = subprocess.run(["docker", "exec", f"claude-bottle-{identity}", "sh", "-c",
                          "cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '"], capture_output=True, text=True).stdout
    return "claude" in out and ("--session-id" in out or "--resume" in out)


def wait(pred: Callable[[], bool], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise SystemExit("timed out")


def held(env: dict[str, str], cwd: str, *args: str) -> "subprocess.Popen[str]":
    """A launcher whose `claude -p` holds on stdin (it got a line, waits for the rest)."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), *args, "-y", "--", "-p"], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=open("/tmp/figures-launcher.log", "a"), text=True, env=env,
                            cwd=cwd)
    assert proc.stdin
    proc.stdin.write("hold\n")
    proc.stdin.flush()
    return proc


def setup(tmp: Path, remotes: bool = False) -> tuple[dict[str, str], str]:
    work = tmp / "work"
    work.mkdir()
    os.chown(work, 1000, 1000)
    route = {"name": "anthropic", "role": "anthropic-base-url", "upstream": "https://api.anthropic.com",
             "header": "Authorization", "value": "Bearer ${BENCH_TOKEN}"}
    bottle: dict[str, object] = {"ca_bundle": CA, "cred_proxy": {"routes": [route]}}
    if remotes:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / "key")], check=True)
        bottle["git"] = {"remotes": [{"name": "origin", "url": "git@upstream.invalid:r.git",
                                      "push": ["refs/heads/agent/*"], "identity_file": str(tmp / "key")}]}
    manifest = tmp / "manifest.json"
    manifest.write_text(json.dumps({"bottles": {"b": bottle}, "agents": {"claude": {"bottle": "b"}}}))
    env = dict(os.environ, CLAUDE_BOTTLE_HOME=str(tmp / "home"), CLAUDE_BOTTLE_MANIFEST=str(manifest),
               BENCH_TOKEN="not-a-real-token", HOME=str(tmp))
    env.setdefault("CLAUDE_BOTTLE_PIPELOCK_IMAGE", "claude-bottle-test/pipelock-double:latest")
    return env, str(work)


def capability_figure() -> None:
    with tempfile.TemporaryDirectory() as t:
        env, cwd = setup(Path(t))
        os.environ["CLAUDE_BOTTLE_HOME"] = env["CLAUDE_BOTTLE_HOME"]
        first = held(env, cwd, "start", "claude")
        state = Path(env["CLAUDE_BOTTLE_HOME"]) / "state"
        wait(lambda: state.is_dir() and any(state.iterdir()))
        identity = next(state.iterdir()).name
        wait(lambda: agent_ready(identity))
        base = docker("inspect", "--format", "{{.Config.Image}}", f"claude-bottle-{identity}").strip()
        dockerfile = f"FROM {base}\nLABEL bench.capability=\"{time.time()}\"\n"
        t0 = time.monotonic()
        apply_capability_change(identity, dockerfile)
        stopped = time.monotonic() - t0
        first.wait(60)
        t1 = time.monotonic()
        second = held(env, cwd, "resume", identity)
        wait(lambda: agent_ready(identity))
        resumed = time.monotonic() - t1
        second.terminate()
        second.wait(60)
        # the build alone, measured the same way (a new label: a real, if small, build)
        ctx = Path(t) / "ctx"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text(f"FROM {base}\nLABEL bench.capability=\"{time.time()}\"\n")
        t2 = time.monotonic()
        docker("build", "-q", "-t", "claude-bottle-bench:build", str(ctx))
        build = time.monotonic() - t2
        docker("rmi", "claude-bottle-bench:build")
    total = stopped + resumed - build
    print(f"approve -> stopped with state kept     {stopped:6.2f} s")
    print(f"resume -> agent ready (incl. build)    {resumed:6.2f} s")
    print(f"the build alone                        {build:6.2f} s")
    print(f"approve -> resumed, minus the build    {total:6.2f} s  (target <= 3 s: {'PASS' if total <= 3 else 'FAIL'})")


def rss_figure() -> None:
    with tempfile.TemporaryDirectory() as t:
        env, cwd = setup(Path(t), remotes=True)
        proc = held(env, cwd, "start", "claude")
        state = Path(env["CLAUDE_BOTTLE_HOME"]) / "state"
        wait(lambda: state.is_dir() and any(state.iterdir()))
        identity = next(state.iterdir()).name
        wait(lambda: agent_ready(identity))
        for role in ("cred-proxy", "git-gate", "supervise"):  # the python process itself (docker-init aside)
            rows = docker("top", f"claude-bottle-{identity}-{role}", "-o", "pid,rss,args").splitlines()[1:]
            kb = sum(int(r.split()[1]) for r in rows if "python3" in r and "docker-init" not in r)
            print(f"{role:<12} RSS {kb / 1024:6.1f} MB  (target < 30 MB: {'PASS' if kb < 30 * 1024 else 'FAIL'})")
        proc.terminate()
        proc.wait(60)


def forget_images() -> None:
    """Every agent and sidecar image, and whatever was built on them, so nothing is cached."""
    tags = docker("images", "--format", "{{.Repository}}:{{.Tag}}").split()
    ours = [t for t in tags if t.split(":")[0] in ("claude-bottle-agent", "claude-bottle-sidecar", "bench-0", "bench-1")]
    if ours:
        subprocess.run(["docker", "rmi", "-f", *ours], capture_output=True)
    subprocess.run(["docker", "image", "prune", "-f"], capture_output=True)


def cold_figure() -> None:
    agent = images.default_agent_image(Path(CA))
    side = images.sidecar_image(Path(CA))
    forget_images()
    with tempfile.TemporaryDirectory() as t:
        for img in (agent, side):  # plain docker build of the same contexts, in parallel as start does
            images.stage_context(img, Path(t) / img.tag.replace(":", "-"))
        t0 = time.monotonic()
        procs = [subprocess.Popen(["docker", "build", "-q", "-t", f"bench-{i}", str(Path(t) / img.tag.replace(":", "-"))],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i, img in enumerate((agent, side))]
        for p in procs:
            p.wait()
        built = time.monotonic() - t0
    forget_images()
    with tempfile.TemporaryDirectory() as t:
        env, cwd = setup(Path(t))
        t0 = time.monotonic()
        subprocess.run([sys.executable, str(ROOT / "cli.py"), "start", "claude", "-y", "--", "--version"], env=env, cwd=cwd,
                       capture_output=True, check=True)
        cold = time.monotonic() - t0
    print(f"cold start (no image cache)            {cold:6.1f} s")
    print(f"docker build of the same Dockerfiles   {built:6.1f} s  (start is {cold / built:.2f}x)")


if __name__ == "__main__":
    capability_figure()
    rss_figure()
    if "--cold" in sys.argv:
        cold_figure()
