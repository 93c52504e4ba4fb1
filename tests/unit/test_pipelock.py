from __future__ import annotations

import json
from typing import Any, cast

import pytest

from claude_bottle.errors import BottleError
from claude_bottle.pipelock import (
    EMPTY_ALLOWLIST_PLACEHOLDER,
    PIPELOCK_IMAGE_DEFAULT,
    allowlist_from_config,
    egress_pattern_problem,
    pipelock_block_message,
    pipelock_command,
    pipelock_config,
    pipelock_health_url,
    pipelock_healthcheck_command,
    pipelock_image,
    render_pipelock_config,
)

# DESIGN.md, "pipelock facts": the only keys pipelock is given (its parser
# rejects unknown keys, and so does the test double).
KNOWN_KEYS: dict[str, object] = {
    "version": None,
    "mode": None,
    "api_allowlist": None,
    "fetch_proxy": {"listen": None, "timeout_seconds": None, "monitoring": {"max_requests_per_minute": None}},
    "forward_proxy": {
        "enabled": None,
        "max_tunnel_seconds": None,
        "idle_timeout_seconds": None,
        "sni_verification": None,
    },
    "logging": {"format": None, "output": None, "include_allowed": None, "include_blocked": None},
    "sentry": {"enabled": None},
}


def unknown_keys(config: object, known: object, where: str = "") -> list[str]:
    if not isinstance(known, dict):
        return []
    assert isinstance(config, dict)
    known_keys = cast("dict[str, object]", known)
    found: list[str] = []
    for key, value in cast("dict[str, object]", config).items():
        path = f"{where}.{key}" if where else key
        if key not in known_keys:
            found.append(path)
        else:
            found += unknown_keys(value, known_keys[key], path)
    return found


def test_image_default_is_a_pinned_release() -> None:
    assert pipelock_image({}) == PIPELOCK_IMAGE_DEFAULT
    repository, _, tag = PIPELOCK_IMAGE_DEFAULT.rpartition(":")
    assert repository == "ghcr.io/luckypipewrench/pipelock"
    assert tag.split(".")[0] == "2" and len(tag.split(".")) == 3


def test_image_is_overridden_by_environment() -> None:
    assert pipelock_image({"CLAUDE_BOTTLE_PIPELOCK_IMAGE": "local/pipelock:dev"}) == "local/pipelock:dev"
    assert pipelock_image({"CLAUDE_BOTTLE_PIPELOCK_IMAGE": "  "}) == PIPELOCK_IMAGE_DEFAULT


def test_command_and_health() -> None:
    assert pipelock_command() == ("run", "--config", "/config/pipelock.yaml", "--listen", "0.0.0.0:8888")
    assert pipelock_health_url("pipelock") == "http://pipelock:8888/health"
    assert pipelock_healthcheck_command() == ("/pipelock", "healthcheck", "--addr", "127.0.0.1:8888")


def test_block_messages() -> None:
    assert pipelock_block_message("evil.com") == "CONNECT blocked: domain not in allowlist: evil.com"
    assert pipelock_block_message("evil.com", connect=False) == "blocked: domain not in allowlist: evil.com"


def test_config_uses_only_known_keys() -> None:
    assert unknown_keys(pipelock_config(["example.com"]), KNOWN_KEYS) == []


def test_config_is_strict_with_forward_proxy_and_long_tunnels() -> None:
    config = cast("dict[str, Any]", pipelock_config(["example.com"]))
    assert config["mode"] == "strict"
    assert config["sentry"] == {"enabled": False}
    forward = config["forward_proxy"]
    assert forward["enabled"] is True
    assert forward["max_tunnel_seconds"] >= 3600
    assert forward["idle_timeout_seconds"] >= 3600
    logging = config["logging"]
    assert logging == {"format": "json", "output": "stdout", "include_allowed": True, "include_blocked": True}
    assert config["fetch_proxy"]["monitoring"]["max_requests_per_minute"] > 60


def test_empty_allowlist_becomes_the_invalid_placeholder() -> None:
    assert pipelock_config([])["api_allowlist"] == [EMPTY_ALLOWLIST_PLACEHOLDER] == ["none.invalid"]


def test_allowlist_is_sorted_lowercased_and_deduplicated() -> None:
    config = pipelock_config(["b.example.com", "*.A.example.com", "b.example.com", "B.Example.com", "1.2.3.4"])
    assert config["api_allowlist"] == ["*.a.example.com", "1.2.3.4", "b.example.com"]


def test_invalid_pattern_is_refused() -> None:
    with pytest.raises(BottleError, match=r"egress pattern 'https://x\.com' has a scheme"):
        pipelock_config(["ok.com", "https://x.com"])
    with pytest.raises(BottleError, match="list of host names"):
        pipelock_config(cast("list[str]", "example.com"))


@pytest.mark.parametrize(
    "allow",
    [[], ["example.com"], ["*.npmjs.org", "api.github.com", "10.0.0.1"], ["localhost"]],
)
def test_render_round_trips(allow: list[str]) -> None:
    text = render_pipelock_config(allow)
    assert text.endswith("\n")
    assert json.loads(text) == pipelock_config(allow)
    assert allowlist_from_config(text) == tuple(sorted(allow))


def test_round_trip_drops_placeholder_among_hosts() -> None:
    text = json.dumps({"mode": "strict", "api_allowlist": ["none.invalid", "a.com"]})
    assert allowlist_from_config(text) == ("a.com",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version: 1\nmode: strict\n", "not valid JSON"),
        ("[]", "not a JSON object"),
        ('{"mode": "balanced", "api_allowlist": ["a.com"]}', "mode 'balanced', expected 'strict'"),
        ('{"mode": "strict"}', "no api_allowlist list"),
        ('{"mode": "strict", "api_allowlist": "a.com"}', "no api_allowlist list"),
        ('{"mode": "strict", "api_allowlist": ["a.com/x"]}', "entry 'a.com/x' has a path"),
        ('{"mode": "strict", "api_allowlist": [3]}', "entry 3 must be a string"),
    ],
)
def test_allowlist_from_bad_config(text: str, message: str) -> None:
    with pytest.raises(BottleError, match=message) as info:
        allowlist_from_config(text)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "pattern",
    [
        "example.com",
        "api.github.com",
        "*.npmjs.org",
        "*.co.uk",
        "registry.npmjs.org",
        "localhost",
        "cred-proxy",
        "xn--bcher-kva.example",
        "a1-b2.example.com",
        "Example.COM",
        "8.8.8.8",
        "10.0.0.1",
        "a" * 63 + ".com",
        ".".join(["a" * 63] * 3 + ["a" * 61]),
    ],
)
def test_good_egress_patterns(pattern: str) -> None:
    assert egress_pattern_problem(pattern) is None


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        (None, "must be a string, not NoneType"),
        (42, "must be a string, not int"),
        ("", "is empty"),
        ("exa mple.com", "contains whitespace"),
        (" example.com", "contains whitespace"),
        ("https://example.com", "has a scheme"),
        ("example.com/path", "has a path"),
        ("example.com:443", "has a port"),
        ("::1", "is an IPv6 address"),
        ("[2001:db8::1]", "is an IPv6 address"),
        ("*", "wildcard that is not the whole first label"),
        ("*example.com", "wildcard that is not the whole first label"),
        ("api.*.example.com", "wildcard that is not the whole first label"),
        ("*.*.example.com", "wildcard that is not the whole first label"),
        ("*.com", "wildcard over a single label"),
        ("*.", "empty label"),
        (".example.com", "empty label"),
        ("example.com.", "empty label"),
        ("example..com", "empty label"),
        ("-example.com", "invalid label '-example'"),
        ("example-.com", "invalid label 'example-'"),
        ("exa_mple.com", "invalid label 'exa_mple'"),
        ("bücher.example", "non-ASCII"),
        ("exampl\u212a.com", "non-ASCII"),  # KELVIN SIGN, which lower() turns into k
        ("a" * 64 + ".com", "invalid label"),
        ("a." * 126 + "com", "longer than 253 characters"),
        ("256.1.1.1", "neither a host name nor an IPv4 address"),
        ("1.2.3", "neither a host name nor an IPv4 address"),
        ("*.1.2.3.4", "neither a host name nor an IPv4 address"),
        ("example.123", "neither a host name nor an IPv4 address"),
    ],
)
def test_bad_egress_patterns(pattern: object, problem: str) -> None:
    found = egress_pattern_problem(pattern)
    assert found is not None and problem in found
