"""The CLI through main([...]): help everywhere, one-line errors and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from claude_bottle.cli import COMMANDS, main


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_top_level_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)


@pytest.mark.parametrize(("argv", "manifest", "expected"), [
    (["info", "claude"], "{", "line 1 column 2: not valid JSON"),
    (["info", "nobody"], json.dumps({"bottles": {}, "agents": {}}), "no agent named 'nobody'"),
    (["start", "claude", "--format=json"], json.dumps({"bottles": {"b": {}}, "agents": {"claude": {"bottle": "b"}}}),
     "--format=json only goes with --dry-run"),
    (["info", "claude"], json.dumps({"bottles": {"b": {"runtime": "runsc"}}, "agents": {}}), "runtime is auto-detected"),
    (["resume", "not an identity"], None, "is not a bottle identity"),
    (["dashboard", "--format=json"], None, "--format=json only goes with --once"),
])
def test_user_mistakes_are_one_line_and_exit_1(argv: list[str], manifest: str | None, expected: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CLAUDE_BOTTLE_HOME", str(tmp_path / "home"))
    if manifest is not None:
        (tmp_path / "m.json").write_text(manifest)
        argv = [*argv, "--manifest", str(tmp_path / "m.json")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert expected in err
    assert err.startswith("claude-bottle: error: ") and err.count("\n") == 1


def test_info_shows_the_resolved_bottle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    m = tmp_path / "m.json"
    m.write_text(json.dumps({"bottles": {"b": {"egress": {"allow": ["api.github.com"]}}},
                             "agents": {"claude": {"bottle": "b", "model": "opus"}}}))
    assert main(["info", "claude", "--manifest", str(m)]) == 0
    out = capsys.readouterr().out
    assert "api.github.com" in out and "opus" in out and "git remotes: none" in out


def test_dashboard_once_on_an_empty_queue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CLAUDE_BOTTLE_HOME", str(tmp_path))
    assert main(["dashboard", "--once", "--format=json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_cleanup_state_forgets_only_stopped_bottles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from claude_bottle.backend import ActiveBottle
    from claude_bottle.backend.docker.backend import DockerBottleBackend, DockerBottleCleanupPlan
    from claude_bottle.bottle_state import BottleMetadata, state_dir, write_metadata

    monkeypatch.setenv("CLAUDE_BOTTLE_HOME", str(tmp_path))
    for ident in ("a-aaaaa", "b-bbbbb"):
        write_metadata(BottleMetadata(identity=ident, agent_name=ident[0], cwd="/", copy_cwd=False,
                                      started_at="2026-01-01T00:00:00+00:00", session_id="s", manifest=None))
    def nothing_left(self: DockerBottleBackend) -> DockerBottleCleanupPlan:
        return DockerBottleCleanupPlan((), ())

    def b_runs(self: DockerBottleBackend) -> list[ActiveBottle]:
        return [ActiveBottle(identity="b-bbbbb", agent_name="b", status="Up", created="")]

    monkeypatch.setattr(DockerBottleBackend, "prepare_cleanup", nothing_left)
    monkeypatch.setattr(DockerBottleBackend, "list_active", b_runs)
    assert main(["cleanup", "-y"]) == 0
    assert state_dir("a-aaaaa").is_dir()  # never without --state
    assert main(["cleanup", "-y", "--state"]) == 0
    assert not state_dir("a-aaaaa").exists() and state_dir("b-bbbbb").is_dir()
    assert "deleted the state of 1 bottle(s)" in capsys.readouterr().out
