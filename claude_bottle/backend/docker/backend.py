"""The Docker backend: the only place that runs `docker`."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Generator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...bottle_state import BottleMetadata, now_iso, queue_dir, write_metadata
from ...errors import BottleError
from .. import ActiveBottle, BottleBackend, BottleCleanupPlan, BottlePlan, BottleSpec, RunningBottle
from . import commands, images, provision
from .plan import LABEL_IDENTITY, LABEL_ROLE, DockerBottlePlan, ImageBuild, SidecarPlan
from .prepare import build_plan
from .transcript import snapshot_transcript

READY_TIMEOUT = 60.0


@dataclass(frozen=True)
class DockerResult:
    returncode: int
    stdout: str
    stderr: str


def docker(
    *args: str,
    input: bytes | None = None,
    check: bool = True,
    timeout: float | None = None,
) -> DockerResult:
    """Run `docker ARGS...` and capture its output.

    With check (the default) a non-zero exit raises BottleError naming the command
    and showing stderr; a missing binary or an unreachable daemon is one line.
    """
    try:
        proc = subprocess.run(("docker", *args), input=input, capture_output=True, timeout=timeout)
    except FileNotFoundError:
        raise BottleError("docker is not installed: no `docker` command on PATH") from None
    except subprocess.TimeoutExpired:
        raise BottleError(f"`docker {' '.join(args[:2])}` did not finish within {timeout:g} s") from None
    stdout = proc.stdout.decode(errors="replace")
    stderr = proc.stderr.decode(errors="replace")
    if check and proc.returncode != 0:
        raise BottleError(_failure_message(args, proc.returncode, stderr))
    return DockerResult(proc.returncode, stdout, stderr)


def docker_bytes(*args: str) -> bytes:
    """Like docker(), for commands whose stdout is binary (a tar stream)."""
    try:
        proc = subprocess.run(("docker", *args), capture_output=True)
    except FileNotFoundError:
        raise BottleError("docker is not installed: no `docker` command on PATH") from None
    if proc.returncode != 0:
        raise BottleError(_failure_message(args, proc.returncode, proc.stderr.decode(errors="replace")))
    return proc.stdout


def docker_attached(*args: str, container: str) -> int:
    """Run docker with this terminal as its stdin/stdout (the agent's session), until
    it ends or `container` goes away. Under gVisor a `docker exec` client is not told
    when its container is removed (as an approved capability change does), so a
    `docker wait` beside it says when to stop waiting."""
    try:
        session = subprocess.Popen(("docker", *args))
    except FileNotFoundError:
        raise BottleError("docker is not installed: no `docker` command on PATH") from None
    gone = subprocess.Popen(("docker", "wait", container), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                return session.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                if gone.poll() is None:
                    continue
            try:
                return session.wait(timeout=2)  # the normal case: it notices by itself
            except subprocess.TimeoutExpired:
                session.terminate()
                session.wait()
                return 137
    finally:
        # Interrupted (^C, SIGTERM) or done: no docker client may outlive us, holding our
        # terminal or pipes open while it waits for a container that is about to go.
        for proc in (session, gone):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _failure_message(args: tuple[str, ...], code: int, stderr: str) -> str:
    detail = " ".join(stderr.split()) or "(no output)"
    if "Cannot connect to the Docker daemon" in stderr or "Is the docker daemon running" in stderr:
        return "the Docker daemon is not reachable: start dockerd (or check DOCKER_HOST) and try again"
    shown = " ".join(args[:3]) + (" …" if len(args) > 3 else "")
    return f"`docker {shown}` failed (exit {code}): {detail[-600:]}"


def docker_json_lines(*args: str) -> list[dict[str, Any]]:
    """Run a `docker ... --format '{{json .}}'` listing and parse one object a line."""
    out = docker(*args, "--format", "{{json .}}").stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def container_read_file(container: str, path: str, *, limit: int = 1 << 20) -> bytes:
    """One regular file out of a container (via `docker cp … -`, a tar stream)."""
    stream = docker_bytes("cp", f"{container}:{path}", "-")
    try:
        with tarfile.open(fileobj=io.BytesIO(stream)) as tar:
            member = tar.next()
            if member is None or not member.isfile() or member.size > limit:
                raise BottleError(f"{container}:{path} is not a regular file under {limit} bytes")
            data = tar.extractfile(member)
            return data.read() if data else b""
    except tarfile.TarError as e:
        raise BottleError(f"cannot read {container}:{path}: {e}") from None


def container_write_files(container: str, files: Mapping[str, tuple[bytes, int]], *, owner: tuple[int, int]) -> None:
    docker(*commands.copy_in_args(container), input=provision.tar_files(files, owner=owner))


def container_signal(container: str, signal_name: str) -> None:
    docker("kill", "--signal", signal_name, container)


def replace_and_reload(container: str, new: Mapping[str, tuple[bytes, int]], old: Mapping[str, tuple[bytes, int]],
                       *, owner: tuple[int, int]) -> None:
    """Copy `new` files into a sidecar and SIGHUP it; if the signal fails, put `old` back.
    A sidecar that also reloads on file change (pipelock) may already run the new files
    when even the copy back fails, and the error says so."""
    container_write_files(container, new, owner=owner)
    try:
        container_signal(container, "HUP")
    except BottleError as e:
        try:
            container_write_files(container, old, owner=owner)
        except BottleError as undo:
            raise BottleError(f"reload failed ({e}) and the old files could not be put back ({undo}): "
                              f"the new ones may be live in {container}; stop the bottle or fix them") from None
        raise


def container_running(container: str) -> bool:
    out = docker("inspect", "--format", "{{.State.Running}}", container, check=False)
    return out.returncode == 0 and out.stdout.strip() == "true"


def parse_labels(labels: str) -> dict[str, str]:
    """`docker ps` prints labels as `k=v,k=v`."""
    pairs = (item.split("=", 1) for item in labels.split(",") if "=" in item)
    return {k: v for k, v in pairs}


def detect_runtime() -> str:
    """gVisor when the daemon has runsc registered, else runc. Also proves the daemon answers."""
    out = docker("info", "--format", "{{json .Runtimes}}").stdout.strip()
    try:
        runtimes: object = json.loads(out) if out else {}
    except json.JSONDecodeError:
        runtimes = {}
    return "runsc" if isinstance(runtimes, dict) and "runsc" in runtimes else "runc"


@dataclass(frozen=True)
class DockerBottleCleanupPlan(BottleCleanupPlan):
    containers: tuple[str, ...]
    networks: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not self.containers and not self.networks

    def print(self) -> None:
        if self.empty:
            print("nothing to clean up: no claude-bottle containers or networks")
            return
        for c in self.containers:
            print(f"  container  {c}")
        for n in self.networks:
            print(f"  network    {n}")


class DockerRunningBottle(RunningBottle):
    def __init__(self, plan: DockerBottlePlan) -> None:
        self.plan = plan
        self.identity = plan.identity
        self.attached = False

    def attach(self) -> int:
        self.attached = True
        tty = sys.stdin.isatty() and sys.stdout.isatty()
        return docker_attached(*commands.agent_exec_args(self.plan, tty=tty), container=self.plan.agent_container)


class DockerBottleBackend(BottleBackend):
    # --- prepare: resolve everything, create nothing --------------------------

    def prepare(self, spec: BottleSpec) -> DockerBottlePlan:
        return build_plan(spec, runtime=detect_runtime(), environ=os.environ)

    # --- launch ----------------------------------------------------------------

    @contextmanager
    def launch(self, plan: BottlePlan) -> Generator[DockerRunningBottle]:
        assert isinstance(plan, DockerBottlePlan)
        if not plan.resuming:
            write_metadata(BottleMetadata(
                identity=plan.identity, agent_name=plan.agent.name, cwd=plan.cwd,
                copy_cwd=plan.spec.copy_cwd, started_at=now_iso(), session_id=plan.session_id,
                manifest=None if plan.spec.manifest.source.startswith("<") else plan.spec.manifest.source,
            ))
        queue_dir(plan.identity).mkdir(parents=True, exist_ok=True)
        running = DockerRunningBottle(plan)
        created = False
        try:
            self._create(plan)
            created = True
            yield running
        finally:
            with _signals_deferred():
                if running.attached:
                    try:
                        snapshot_transcript(plan.identity, docker_bytes)
                    except BottleError as e:
                        print(f"claude-bottle: transcript not saved: {e}", file=sys.stderr)
                try:
                    removed = self._teardown(plan, look_for_strays=not created)
                except BottleError as e:
                    print(f"claude-bottle: bottle {plan.identity} was not fully removed ({e}); "
                          "`./cli.py cleanup` removes what is left", file=sys.stderr)
                    raise
                print(f"claude-bottle: removed bottle {plan.identity} ({removed})", file=sys.stderr)

    def _create(self, plan: DockerBottlePlan) -> None:
        with ThreadPoolExecutor(max_workers=6) as pool:
            first = [pool.submit(self.ensure_images, plan)]
            first += [pool.submit(docker, *commands.network_create_args(plan, role)) for role in ("internal", "egress")]
            _all_results(first)
            second = [pool.submit(self._start_sidecar, plan, sc) for sc in plan.sidecars]
            second.append(pool.submit(self._start_agent, plan))
            _all_results(second)
        self._wait_ready(plan)

    def ensure_images(self, plan: DockerBottlePlan) -> None:
        """Build whichever of the plan's images is missing (staged ones) or always (a bottle's own)."""
        builds = [plan.agent_image, plan.sidecar_image]
        staged = [b for b in builds if b.context is None]
        present: set[str] = set()
        if staged:
            found = docker("image", "inspect", "--format", "{{index .RepoTags 0}}", *(b.tag for b in staged), check=False)
            present = set(found.stdout.split())
        missing = [b for b in builds if b.tag not in present]
        if any(b.context is None for b in missing):
            print("claude-bottle: building images (the first build downloads packages and takes a few minutes)…",
                  file=sys.stderr)
        with ThreadPoolExecutor(max_workers=2) as pool:
            _all_results([pool.submit(self._build, b) for b in missing])

    def _build(self, image: ImageBuild) -> None:
        if image.context is not None:
            docker(*commands.build_args(image, image.context))
            return
        with tempfile.TemporaryDirectory(prefix="claude-bottle-build-") as tmp:
            context = images.stage_context(image, Path(tmp))
            docker(*commands.build_args(image, context))

    def _start_sidecar(self, plan: DockerBottlePlan, sc: SidecarPlan) -> None:
        for host, _ in sc.mounts:
            Path(host).mkdir(parents=True, exist_ok=True)
        if not sc.files and not sc.egress:  # nothing to copy in, no second network: one call
            docker("run", "-d", *commands.sidecar_create_args(plan, sc)[1:])
            return
        docker(*commands.sidecar_create_args(plan, sc))
        if sc.files:
            docker(*commands.copy_in_args(sc.container), input=provision.tar_files(sc.files, owner=sc.file_owner))
        if sc.egress:
            docker(*commands.network_connect_args(plan, sc))
        docker("start", sc.container)

    def _start_agent(self, plan: DockerBottlePlan) -> None:
        docker(*commands.agent_run_args(plan))
        tar = provision.agent_tar(
            agent=plan.agent, owner=plan.user, files=plan.agent_files,
            copy_cwd=plan.spec.cwd if plan.spec.copy_cwd else None,
            transcript=plan.spec.transcript_dir,
        )
        docker(*commands.provision_args(plan), input=tar)

    def _wait_ready(self, plan: DockerBottlePlan) -> None:
        """Poll health over the egress network from the host; log lines for internal-only sidecars."""
        deadline = time.monotonic() + READY_TIMEOUT
        http = [s for s in plan.sidecars if s.health_path]
        addresses = _egress_addresses(plan, [s.container for s in http]) if http else {}
        pending = list(plan.sidecars)
        while pending:
            still: list[SidecarPlan] = []
            for sc in pending:
                if sc.health_path and _http_ok(addresses[sc.container], sc.port, sc.health_path):
                    continue
                if sc.ready_log:
                    logs = docker("logs", sc.container, check=False)
                    if sc.ready_log in logs.stdout + logs.stderr:
                        continue
                still.append(sc)
            pending = still
            if not pending:
                return
            if time.monotonic() > deadline:
                _raise_not_ready(pending[0])
            for sc in pending:
                state = docker("inspect", "--format", "{{.State.Status}}", sc.container, check=False).stdout.strip()
                if state in ("exited", "dead"):
                    _raise_not_ready(sc)
            time.sleep(0.05)

    def _teardown(self, plan: DockerBottlePlan, *, look_for_strays: bool) -> str:
        """Remove the plan's containers and networks. After an interrupted or failed
        creation, also anything else labelled with the identity (a docker call that
        was still finishing when we gave up)."""
        self._remove(plan.containers, plan.networks)
        left = self._leftovers(plan.identity) if look_for_strays else DockerBottleCleanupPlan((), ())
        if left.empty:
            return f"{len(plan.containers)} containers, 2 networks"
        self._remove(left.containers, left.networks)
        return f"{len(left.containers)} late containers removed by label"

    def _remove(self, containers: tuple[str, ...], networks: tuple[str, ...]) -> None:
        """Remove containers, then networks; tolerant of things already gone (a
        concurrent teardown) and of strangers attached to our networks, strict about
        anything else (an unreachable daemon must not read as "removed")."""
        if containers:
            result = _unless_interrupted(commands.remove_containers_args(containers))
            _raise_unless_gone(result, ("rm", "-f"), "No such container")
        if not networks or _unless_interrupted(commands.remove_networks_args(networks)).returncode == 0:
            return
        existing, result = networks, DockerResult(1, "", "")
        for _ in range(3):
            still: list[str] = []
            for n in networks:
                probe = docker("network", "inspect", n, check=False)
                _raise_unless_gone(probe, ("network", "inspect"), "No such network", "not found")
                if probe.returncode == 0:
                    still.append(n)
            existing = tuple(still)
            if not existing:
                return
            _disconnect_strangers(existing)
            result = docker(*commands.remove_networks_args(existing), check=False)
        raise BottleError(f"could not remove networks {', '.join(existing)}: {' '.join(result.stderr.split())}")

    # --- listing and cleanup -----------------------------------------------------

    def list_active(self) -> list[ActiveBottle]:
        rows = docker_json_lines("ps", "--filter", f"label={LABEL_ROLE}=agent")
        active: list[ActiveBottle] = []
        for row in rows:
            identity = parse_labels(str(row.get("Labels", ""))).get(LABEL_IDENTITY, "")
            active.append(ActiveBottle(identity=identity, agent_name=identity.rsplit("-", 1)[0],
                                       status=str(row.get("Status", "")), created=str(row.get("CreatedAt", ""))))
        return sorted(active, key=lambda a: a.created)

    def _leftovers(self, identity: str | None = None) -> DockerBottleCleanupPlan:
        label = f"label={LABEL_IDENTITY}" + (f"={identity}" if identity else "")
        containers = docker_json_lines("ps", "-a", "--filter", label)
        networks = docker_json_lines("network", "ls", "--filter", label)
        return DockerBottleCleanupPlan(
            containers=tuple(sorted(str(c["Names"]) for c in containers)),
            networks=tuple(sorted(str(n["Name"]) for n in networks)),
        )

    def stop_bottle(self, identity: str) -> None:
        """Snapshot the transcript, then remove every container and network of `identity`;
        its state stays. Used when an approved capability change rebuilds the bottle."""
        snapshot_transcript(identity, docker_bytes)
        left = self._leftovers(identity)
        self._remove(left.containers, left.networks)

    def prepare_cleanup(self) -> DockerBottleCleanupPlan:
        return self._leftovers()

    def cleanup(self, plan: BottleCleanupPlan) -> None:
        assert isinstance(plan, DockerBottleCleanupPlan)
        # Containers first: a network cannot be removed while something is attached.
        self._remove(plan.containers, plan.networks)


def _all_results(futures: list[Future[Any]]) -> None:
    """Wait for every future (so nothing is still being created), then raise the first error."""
    errors = [f.exception() for f in futures]
    for e in errors:
        if e is not None:
            raise e


def _egress_addresses(plan: DockerBottlePlan, containers: list[str]) -> dict[str, str]:
    fmt = "{{.Name}} {{(index .NetworkSettings.Networks \"" + plan.egress_network + "\").IPAddress}}"
    out = docker("inspect", "--format", fmt, *containers).stdout
    pairs = (line.split() for line in out.splitlines() if len(line.split()) == 2)
    return {name.lstrip("/"): ip for name, ip in pairs}


def _unless_interrupted(args: tuple[str, ...]) -> DockerResult:
    """Teardown's docker calls share our process group, so a second ^C at the terminal
    kills them too (exit 130) — ours is deferred — and the daemon may still be finishing
    the removal they asked for: run them again until they get a real answer."""
    result = docker(*args, check=False)
    for _ in range(20):
        if "already in progress" in result.stderr:
            time.sleep(0.25)  # the interrupted call's removal is still running in the daemon
        elif result.returncode not in (130, 143, -2, -15):
            break
        result = docker(*args, check=False)
    return result


def _raise_unless_gone(result: DockerResult, args: tuple[str, ...], *gone: str) -> None:
    """A failed call is fine only when every error line says the object is gone."""
    if result.returncode == 0:
        return
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    if not errors or any(not any(g in line for g in gone) for line in errors):
        raise BottleError(_failure_message(args, result.returncode, result.stderr))


def _disconnect_strangers(networks: tuple[str, ...]) -> None:
    """Something we did not create joined a bottle network (an operator's debug
    container, a test upstream): detach it so the network can go."""
    for net in networks:
        out = docker("network", "inspect", "--format", "{{range .Containers}}{{.Name}} {{end}}", net, check=False)
        for name in out.stdout.split():
            docker("network", "disconnect", "-f", net, name, check=False)


def _http_ok(host: str, port: int, path: str) -> bool:
    """One plain GET over a socket: cheaper than importing an HTTP client for a probe."""
    try:
        with socket.create_connection((host, port), timeout=1) as s:
            s.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            status = s.recv(64).split(b" ", 2)
        return len(status) > 1 and status[1].startswith(b"2")
    except OSError:
        return False


def _raise_not_ready(sc: SidecarPlan) -> None:
    logs = docker("logs", "--tail", "5", sc.container, check=False)
    tail = " | ".join((logs.stdout + logs.stderr).strip().splitlines()[-3:]) or "no output"
    raise BottleError(f"sidecar {sc.role} ({sc.image}) did not become ready: {tail}")


@contextmanager
def _signals_deferred() -> Generator[None]:
    """Teardown must finish even if the user presses ^C again or a SIGTERM arrives."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    handler: Callable[[int, Any], None] = lambda signum, _frame: got.append(signum)
    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if got:
        raise KeyboardInterrupt
