from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path

import pytest

from claude_bottle.bottle_state import (BottleMetadata, bottle_identity, check_identity, list_states,
                                        metadata_path, read_metadata, write_metadata)
from claude_bottle.errors import BottleError


@pytest.fixture(autouse=True)
def home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("CLAUDE_BOTTLE_HOME", str(tmp_path))
    return tmp_path


def meta(identity: str = "impl-ab12c") -> BottleMetadata:
    return BottleMetadata(identity=identity, agent_name="impl", cwd="/src", copy_cwd=False,
                          started_at="2026-11-27T01:00:00+00:00", session_id="s-1", manifest=None)


def test_identity_is_agent_plus_five_base36() -> None:
    ids = {bottle_identity("impl") for _ in range(200)}
    assert all(re.fullmatch(r"impl-[0-9a-z]{5}", i) for i in ids)
    assert len(ids) > 190


@pytest.mark.parametrize("bad", ["", "impl", "../etc-abcde", "impl-ABCDE", "impl-abcd", "impl-abcde/x", "a b-abcde"])
def test_bad_identities_never_become_paths(bad: str) -> None:
    with pytest.raises(BottleError, match="is not a bottle identity"):
        check_identity(bad)


def test_metadata_round_trip_and_atomic(home: Path) -> None:
    write_metadata(meta())
    assert read_metadata("impl-ab12c") == meta()
    assert metadata_path("impl-ab12c") == home / "state" / "impl-ab12c" / "metadata.json"
    assert [p.name for p in metadata_path("impl-ab12c").parent.iterdir()] == ["metadata.json"]


def test_unknown_and_corrupt_metadata_are_one_line_errors(home: Path) -> None:
    with pytest.raises(BottleError, match="no bottle state for 'impl-zzzzz'"):
        read_metadata("impl-zzzzz")
    p = metadata_path("impl-ab12c")
    p.parent.mkdir(parents=True)
    p.write_text("{not json")
    with pytest.raises(BottleError, match="line 1 column 2: not valid JSON"):
        read_metadata("impl-ab12c")
    p.write_text(json.dumps({"identity": "impl-ab12c"}))
    with pytest.raises(BottleError, match="'agent_name' is missing"):
        read_metadata("impl-ab12c")


def test_failed_write_keeps_the_old_file(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_metadata(meta())

    def full_disk(*_: object) -> None:
        raise OSError(28, "No space left on device")

    changed = dataclasses.replace(meta(), cwd="/elsewhere")
    with monkeypatch.context() as m, pytest.raises(BottleError, match="cannot write .*metadata.json: No space left"):
        m.setattr(os, "fsync", full_disk)
        write_metadata(changed)
    assert read_metadata("impl-ab12c") == meta()
    assert [p.name for p in metadata_path("impl-ab12c").parent.iterdir()] == ["metadata.json"]


def test_list_states_skips_unreadable(home: Path) -> None:
    write_metadata(meta("impl-aaaaa"))
    write_metadata(meta("impl-bbbbb"))
    (home / "state" / "impl-ccccc").mkdir()
    (home / "state" / "impl-ccccc" / "metadata.json").write_text("garbage")
    assert [m.identity for m in list_states()] == ["impl-aaaaa", "impl-bbbbb"]
