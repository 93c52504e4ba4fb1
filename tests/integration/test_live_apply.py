"""Live changes to a running bottle: routes via docker cp + SIGHUP, allowlist likewise."""

from __future__ import annotations

import pytest

from claude_bottle.backend.docker.backend import container_write_files
from claude_bottle.cred_proxy.apply import ROUTES_PATH, apply_routes_change, cred_proxy_container, read_live_routes
from claude_bottle.errors import BottleError
from claude_bottle.pipelock import apply_allowlist_change, read_live_allowlist

from .conftest import ALLOWED, DENIED, FAKE, Env, Upstreams, docker
from .probe import raw

pytestmark = pytest.mark.integration

NEW_ROUTES = f"""{{"routes": [
  {{"name": "anthropic", "role": "anthropic-base-url", "upstream": "http://{FAKE}:8000",
    "header": "Authorization", "value": "Bearer ${{CB_TEST_TOKEN}}"}},
  {{"name": "denied", "upstream": "http://{DENIED}:8000", "header": "X-Api-Key", "value": "${{CB_TEST_TOKEN2}}"}}
]}}"""


def via_cred_proxy(identity: str, path: str) -> str:
    answer = raw(f"claude-bottle-{identity}", "cred-proxy", 8080,
                 f"GET {path} HTTP/1.1\r\nHost: cred-proxy\r\nConnection: close\r\n\r\n")
    return answer.split()[1] if answer.startswith("HTTP/") else answer


def via_pipelock(identity: str, host: str) -> str:
    answer = raw(f"claude-bottle-{identity}", "pipelock", 8888,
                 f"GET http://{host}:8000/_health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
    return answer.split()[1] if answer.startswith("HTTP/") else answer


def test_routes_change_applies_live_and_a_bad_one_changes_nothing(
        bottle: tuple[Env, str], upstreams: Upstreams, monkeypatch: pytest.MonkeyPatch) -> None:
    _, identity = bottle
    started = docker("inspect", "--format", "{{.State.StartedAt}}", cred_proxy_container(identity)).stdout
    assert via_cred_proxy(identity, "/denied/_health") == "404"
    with pytest.raises(BottleError, match="CB_TEST_TOKEN2"):
        apply_routes_change(identity, NEW_ROUTES, environ={})
    monkeypatch.setenv("CB_TEST_TOKEN2", "second-secret")
    before, after = apply_routes_change(identity, NEW_ROUTES)
    assert '"denied"' in after and '"denied"' not in before
    assert read_live_routes(identity) == after
    assert via_cred_proxy(identity, "/denied/v1/models") == "200"
    seen = [r for r in upstreams.requests(DENIED) if r["path"] == "/v1/models"]
    assert seen[-1]["headers"]["x-api-key"] == "second-secret"
    # no restart happened
    assert docker("inspect", "--format", "{{.State.StartedAt}}", cred_proxy_container(identity)).stdout == started
    # invalid proposals never reach the sidecar
    for bad in ("{not json", '{"routes": [{"name": "x", "upstream": "http://a", "header": "A", "value": "literal"}]}'):
        with pytest.raises(BottleError):
            apply_routes_change(identity, bad)
        assert read_live_routes(identity) == after


def test_invalid_routes_file_sighup_keeps_the_old_routes(bottle: tuple[Env, str]) -> None:
    """The sidecar's own defence: a broken file copied in behind our back is refused on reload."""
    _, identity = bottle
    container = cred_proxy_container(identity)
    container_write_files(container, {ROUTES_PATH: (b"{broken", 0o644)}, owner=(65534, 65534))
    docker("kill", "--signal", "HUP", container)
    assert via_cred_proxy(identity, "/anthropic/_health") == "200"
    assert docker("inspect", "--format", "{{.State.Running}}", container).stdout.strip() == "true"


def test_allowlist_change_applies_live(bottle: tuple[Env, str]) -> None:
    _, identity = bottle
    assert read_live_allowlist(identity) == (ALLOWED,)
    assert via_pipelock(identity, DENIED) == "403"
    before, after = apply_allowlist_change(identity, [ALLOWED, DENIED])
    assert before == f"{ALLOWED}\n" and after == f"{ALLOWED}\n{DENIED}\n"
    assert via_pipelock(identity, DENIED) == "200"
    with pytest.raises(BottleError, match="https://x"):
        apply_allowlist_change(identity, ["https://x"])
    assert read_live_allowlist(identity) == (ALLOWED, DENIED)
