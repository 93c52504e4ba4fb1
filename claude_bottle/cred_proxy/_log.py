"""cred-proxy's log on stderr: request lines in batches, everything else at once."""

from __future__ import annotations

import os
import threading
import time
from collections import deque

LOG_FLUSH_SECONDS = 0.05

_pending_log: deque[str] = deque()
_log_flusher = threading.Thread(target=lambda: _flush_log_forever(), name="cred-proxy-log", daemon=True)


def flush_log() -> None:
    lines: list[str] = []
    while _pending_log:
        lines.append(_pending_log.popleft())
    if lines:
        os.write(2, "".join(lines).encode("utf-8", "replace"))


def _flush_log_forever() -> None:
    while True:
        time.sleep(LOG_FLUSH_SECONDS)
        flush_log()


def log_request(line: str) -> None:
    """Queue one request's log line: a write per request would cost a syscall and a GIL
    handoff on the hot path, so a background thread writes them in batches."""
    _pending_log.append(f"cred-proxy: {line}\n")


def log(line: str) -> None:
    flush_log()
    os.write(2, f"cred-proxy: {line}\n".encode("utf-8", "replace"))


def start_log_flusher() -> None:
    """Start the thread that writes queued request lines, unless it is running."""
    if not _log_flusher.is_alive():
        _log_flusher.start()
