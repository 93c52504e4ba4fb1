"""The Docker backend with the docker() wrapper faked: plans, argument lists, cleanup."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from claude_bottle.backend import BottleSpec, get_bottle_backend
from claude_bottle.backend.docker import backend as backend_mod
from claude_bottle.backend.docker import commands
from claude_bottle.backend.docker.backend import DockerBottleBackend, DockerBottleCleanupPlan, DockerResult
from claude_bottle.errors import BottleError
from claude_bottle.manifest import Manifest

SECRET = "sk-test-very-secret-value"


class FakeDocker:
    def __init__(self, responses: dict[str, DockerResult] | None = None) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.responses = responses or {}

    def __call__(self, *args: str, input: bytes | None = None, check: bool = True,
                 timeout: float | None = None) -> DockerResult:
        self.calls.append(args)
        for prefix, result in self.responses.items():
            if " ".join(args).startswith(prefix):
                if check and result.returncode != 0:
                    raise BottleError(f"docker {prefix} failed")
                return result
        return DockerResult(0, "", "")


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeDocker:
    f = FakeDocker({"info": DockerResult(0, '{"runc":{"path":"runc"}}', "")})
    monkeypatch.setattr(backend_mod, "docker", f)
    monkeypatch.setenv("CLAUDE_BOTTLE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GH_TOKEN_T", SECRET)
    monkeypatch.setenv("CLAUDE_BOTTLE_PIPELOCK_IMAGE", "pipelock-double:test")
    monkeypatch.delenv("CLAUDE_BOTTLE_CA_BUNDLE", raising=False)
    return f


def spec(tmp_path: Path, **bottle: object) -> BottleSpec:
    obj = {
        "bottles": {"dev": {
            "egress": {"allow": ["b.example.com", "a.example.com"]},
            "cred_proxy": {"routes": [{"name": "anthropic", "role": "anthropic-base-url",
                                       "upstream": "https://api.anthropic.com", "header": "Authorization",
                                       "value": "Bearer ${GH_TOKEN_T}"}]},
            **bottle}},
        "agents": {"impl": {"bottle": "dev", "model": "opus"}},
    }
    m = Manifest.from_json(obj, source="M.json", base_dir=tmp_path)
    return BottleSpec(manifest=m, agent_name="impl", cwd=tmp_path, claude_args=("-p", "hi"))


def test_prepare_resolves_everything_and_creates_nothing(fake: FakeDocker, tmp_path: Path) -> None:
    plan = DockerBottleBackend().prepare(spec(tmp_path))
    assert [c[0] for c in fake.calls] == ["info"]
    assert plan.identity.startswith("impl-") and len(plan.identity) == len("impl-") + 5
    assert plan.runtime == "runc"
    d = plan.to_dict()
    assert d["hosts"] == ["a.example.com", "b.example.com"]
    assert d["containers"] == {
        "agent": f"claude-bottle-{plan.identity}", "pipelock": f"claude-bottle-{plan.identity}-pipelock",
        "cred-proxy": f"claude-bottle-{plan.identity}-cred-proxy",
        "supervise": f"claude-bottle-{plan.identity}-supervise"}
    assert d["git_gate"] is None
    env = dict(plan.agent_env)
    assert env["ANTHROPIC_BASE_URL"] == "http://cred-proxy:8080/anthropic"
    assert env["HTTPS_PROXY"] == "http://pipelock:8888"
    assert "cred-proxy" in env["NO_PROXY"] and "supervise" in env["NO_PROXY"]
    assert plan.claude_argv[:2] == ("claude", "--dangerously-skip-permissions")
    assert ("--session-id", plan.session_id) == plan.claude_argv[2:4]
    assert plan.claude_argv[-4:] == ("--model", "opus", "-p", "hi")
    assert SECRET not in json.dumps(d)
    assert SECRET not in repr(plan)


def test_secret_reaches_only_the_cred_proxy_files(fake: FakeDocker, tmp_path: Path) -> None:
    plan = DockerBottleBackend().prepare(spec(tmp_path))
    carriers = [s.role for s in plan.sidecars if any(SECRET.encode() in c for c, _ in s.files.values())]
    assert carriers == ["cred-proxy"]
    assert all(SECRET not in v for _, v in plan.agent_env)
    assert not any(SECRET.encode() in c for c, _ in plan.agent_files.values())
    every_arg = [a for sc in plan.sidecars for a in commands.sidecar_create_args(plan, sc)]
    every_arg += commands.agent_run_args(plan)
    assert not any(SECRET in a for a in every_arg)


def test_argument_lists(fake: FakeDocker, tmp_path: Path) -> None:
    plan = DockerBottleBackend().prepare(spec(tmp_path))
    internal = commands.network_create_args(plan, "internal")
    assert internal[:6] == ("network", "create", "--internal", "-o",
                            "com.docker.network.bridge.inhibit_ipv4=true", "--label")
    assert internal[-1] == plan.internal_network
    run = commands.agent_run_args(plan)
    assert run[:3] == ("run", "-d", "--name")
    assert ("--network", plan.internal_network) == run[run.index("--network"):run.index("--network") + 2]
    assert run.count("--network") == 1  # the agent is on the internal network alone
    assert ("-v", f"{tmp_path}:{tmp_path}") == run[run.index("-v"):run.index("-v") + 2]
    assert "/var/run/docker.sock" not in " ".join(run)
    assert run[-3:] == (plan.agent_image.tag, "sleep", "infinity")
    exec_args = commands.agent_exec_args(plan, tty=False)
    assert exec_args[:6] == ("exec", "-i", "-u", f"{plan.user[0]}:{plan.user[1]}", "-w", str(tmp_path))
    pipelock = plan.sidecars[0]
    create = commands.sidecar_create_args(plan, pipelock)
    assert create[-6:] == ("pipelock-double:test", "run", "--config", "/config/pipelock.yaml", "--listen", "0.0.0.0:8888")
    assert commands.network_connect_args(plan, pipelock) == (
        "network", "connect", "--alias", "pipelock", plan.internal_network, pipelock.container)


def test_skip_permissions_false_allows_only_the_supervise_tools(fake: FakeDocker, tmp_path: Path) -> None:
    s = spec(tmp_path)
    m = Manifest.from_json({"bottles": {"dev": {}}, "agents": {"impl": {"bottle": "dev", "skip_permissions": False}}},
                           source="M.json", base_dir=tmp_path)
    plan = DockerBottleBackend().prepare(BottleSpec(manifest=m, agent_name="impl", cwd=s.cwd))
    assert "--dangerously-skip-permissions" not in plan.claude_argv
    allowed = plan.claude_argv[plan.claude_argv.index("--allowedTools") + 1]
    assert "mcp__supervise__pipelock-block" in allowed


def test_resume_pins_identity_and_session(fake: FakeDocker, tmp_path: Path) -> None:
    s = spec(tmp_path)
    resumed = BottleSpec(manifest=s.manifest, agent_name="impl", cwd=tmp_path, identity="impl-abcde",
                         session_id="11111111-2222-3333-4444-555555555555")
    plan = DockerBottleBackend().prepare(resumed)
    assert plan.identity == "impl-abcde" and plan.resuming
    assert ("--resume", "11111111-2222-3333-4444-555555555555") == plan.claude_argv[2:4]


def test_unreachable_daemon_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/nothing.sock")
    with pytest.raises(BottleError) as exc:
        backend_mod.detect_runtime()
    assert "not reachable" in str(exc.value) and "\n" not in str(exc.value)


def test_unknown_backend_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAUDE_BOTTLE_BACKEND", "podman")
    with pytest.raises(BottleError, match="'podman' is not a known backend"):
        get_bottle_backend()


def test_missing_working_directory(fake: FakeDocker, tmp_path: Path) -> None:
    s = spec(tmp_path)
    with pytest.raises(BottleError, match="does not exist"):
        DockerBottleBackend().prepare(BottleSpec(manifest=s.manifest, agent_name="impl", cwd=tmp_path / "gone"))


def test_cleanup_removes_containers_before_networks(fake: FakeDocker) -> None:
    DockerBottleBackend().cleanup(DockerBottleCleanupPlan(containers=("a", "b"), networks=("n",)))
    assert fake.calls == [("rm", "-f", "-v", "a", "b"), ("network", "rm", "n")]


def test_prepare_cleanup_finds_stopped_containers_and_networks(fake: FakeDocker) -> None:
    fake.responses["ps -a"] = DockerResult(0, '{"Names":"claude-bottle-x-abcde"}\n', "")
    fake.responses["network ls"] = DockerResult(0, '{"Name":"claude-bottle-x-abcde-internal"}\n', "")
    plan = DockerBottleBackend().prepare_cleanup()
    assert plan.containers == ("claude-bottle-x-abcde",) and plan.networks == ("claude-bottle-x-abcde-internal",)
    assert ("ps", "-a", "--filter", "label=claude-bottle.identity", "--format", "{{json .}}") in fake.calls



@pytest.mark.parametrize(("runtimes", "expected"), [
    ('{"runc":{"path":"runc"}}', "runc"),
    ('{"runc":{"path":"runc"},"runsc":{"path":"/usr/bin/runsc","runtimeArgs":["--network=host"]}}', "runsc"),
    ("", "runc"),
    ("not json", "runc"),
])
def test_runtime_is_detected_from_docker_info(monkeypatch: pytest.MonkeyPatch, runtimes: str, expected: str) -> None:
    monkeypatch.setattr(backend_mod, "docker", FakeDocker({"info": DockerResult(0, runtimes, "")}))
    assert backend_mod.detect_runtime() == expected
