"""Transcripts come out of the agent container: hostile input, unpacked by hand."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from claude_bottle.backend.docker import transcript
from claude_bottle.backend.docker.transcript import save_transcript_tar
from claude_bottle.errors import BottleError


def tar_of(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def special(name: str, kind: bytes, target: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def test_regular_files_are_kept(tmp_path: Path) -> None:
    dest = save_transcript_tar(tar_of(file("./-work-x/s1.jsonl", b'{"a":1}\n')), tmp_path / "transcript")
    assert (dest / "-work-x" / "s1.jsonl").read_bytes() == b'{"a":1}\n'


def test_links_devices_and_escapes_never_reach_the_host(tmp_path: Path) -> None:
    stream = tar_of(
        special("-w/evil-link", tarfile.SYMTYPE, "/etc/shadow"),
        special("-w/hard", tarfile.LNKTYPE, "/etc/passwd"),
        special("-w/fifo", tarfile.FIFOTYPE),
        file("../../outside.jsonl", b"x"),
        file("/abs.jsonl", b"x"),
        file("-w/ok.jsonl", b"ok"),
    )
    dest = save_transcript_tar(stream, tmp_path / "state" / "transcript")
    found = sorted(str(p.relative_to(dest)) for p in dest.rglob("*"))
    assert found == ["-w", "-w/ok.jsonl"]
    assert not (tmp_path / "outside.jsonl").exists() and not (tmp_path / "state" / "outside.jsonl").exists()


def test_oversized_transcript_is_refused_and_the_old_one_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dest = save_transcript_tar(tar_of(file("-w/s.jsonl", b"old")), tmp_path / "transcript")
    monkeypatch.setattr(transcript, "MAX_FILE", 10)
    with pytest.raises(BottleError, match="larger than"):
        save_transcript_tar(tar_of(file("-w/s.jsonl", b"x" * 11)), dest)
    assert (dest / "-w" / "s.jsonl").read_bytes() == b"old"
    assert not (tmp_path / "transcript.new").exists()


def test_garbage_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(BottleError, match="not readable") as exc:
        save_transcript_tar(b"definitely not a tar" * 100, tmp_path / "t")
    assert "\n" not in str(exc.value)
