"""cred-proxy routes: validation, the routes file, secrets, and the agent's environment."""

from __future__ import annotations

import json
from typing import Any

import pytest

from claude_bottle.cred_proxy import (
    PLACEHOLDER_TOKEN,
    ROLE_ANTHROPIC_BASE_URL,
    CredProxyRoute,
    agent_env_for_routes,
    parse_routes_file,
    render_routes_file,
    render_value,
    resolve_secrets,
    routes_from_json,
    secret_names,
)
from claude_bottle.cred_proxy import MissingSecretError
from claude_bottle.errors import BottleError

WHERE = "/home/me/claude-bottle.json: bottles.dev.cred_proxy.routes"


def route(**overrides: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "name": "github", "upstream": "https://api.github.com",
        "header": "Authorization", "value": "token ${GH_TOKEN}",
    }
    obj.update(overrides)
    return {k: v for k, v in obj.items() if v is not ...}


ANTHROPIC = route(name="anthropic", upstream="https://api.anthropic.com", value="Bearer ${CLAUDE_CODE_OAUTH_TOKEN}",
                  role=ROLE_ANTHROPIC_BASE_URL)

BAD_ROUTES: list[tuple[object, str]] = [
    ({"name": "x"}, f"{WHERE}: must be a list of route objects, not an object"),
    (["github"], f"{WHERE}[0]: must be an object, not a string"),
    ([route(extra=1)], f"{WHERE}[0]: unknown key 'extra'"),
    ([route(name=...)], f"{WHERE}[0]: missing key 'name'"),
    ([route(value=...)], f"{WHERE}[0]: missing key 'value'"),
    ([route(name=7)], f"{WHERE}[0].name: must be a non-empty string, not a number"),
    ([route(header="")], f"{WHERE}[0].header: must be a non-empty string"),
    ([route(name="GitHub")], f"{WHERE}[0].name: 'GitHub' must match [a-z0-9][a-z0-9_-]{{0,62}}"),
    ([route(name="_health")], f"{WHERE}[0].name: '_health': names starting with '_' are reserved"),
    ([route(name="a/b")], f"{WHERE}[0].name: 'a/b' must match"),
    ([route(name="x" * 64)], f"{WHERE}[0].name: '{'x' * 64}' must match"),
    ([route(), ANTHROPIC, route()], f"{WHERE}[2].name: duplicate route name 'github' (also {WHERE}[0])"),
    ([route(upstream="ftp://example.com")], f"{WHERE}[0].upstream: must be an absolute http:// or https:// URL"),
    ([route(upstream="/relative/path")], f"{WHERE}[0].upstream: must be an absolute http:// or https:// URL"),
    ([route(upstream="https://h.example/?a=1")], f"{WHERE}[0].upstream: must not have a query"),
    ([route(upstream="https://h.example/#top")], f"{WHERE}[0].upstream: must not have a fragment"),
    ([route(upstream="https://me:pw@h.example")], f"{WHERE}[0].upstream: must not contain userinfo"),
    ([route(upstream="https://")], f"{WHERE}[0].upstream: must name a host"),
    ([route(upstream="https://h.example:99999")], f"{WHERE}[0].upstream: has an invalid port"),
    ([route(upstream="https://h.example/a b")], f"{WHERE}[0].upstream: must not contain spaces"),
    ([route(upstream="https://h.example/a/../b")], f"{WHERE}[0].upstream: must not contain . or .. path segments"),
    ([route(header="X Token")], f"{WHERE}[0].header: 'X Token' is not a valid HTTP header name"),
    ([route(header="Host")], f"{WHERE}[0].header: 'Host' is managed by the proxy"),
    ([route(header="content-length")], f"{WHERE}[0].header: 'content-length' is managed by the proxy"),
    ([route(header="Transfer-Encoding")], f"{WHERE}[0].header: 'Transfer-Encoding' is managed by the proxy"),
    ([route(header="CONNECTION")], f"{WHERE}[0].header: 'CONNECTION' is managed by the proxy"),
    ([route(value="token ghp_abc123")], f"{WHERE}[0].value: must reference a secret as ${{NAME}}"),
    ([route(value="Bearer ${lower-case}")], f"{WHERE}[0].value: has a malformed reference"),
    ([route(value="Bearer ${1ABC}")], f"{WHERE}[0].value: has a malformed reference"),
    ([route(value="Bearer ${TOKEN")], f"{WHERE}[0].value: has a malformed reference"),
    ([route(value="Bearer ${T}\r\nX-Evil: 1")], f"{WHERE}[0].value: must contain only printable ASCII"),
    ([route(value=["${T}"])], f"{WHERE}[0].value: must be a non-empty string, not a list"),
    ([route(role="anthropic")], f"{WHERE}[0].role: 'anthropic': must be 'anthropic-base-url' or absent"),
    ([route(role=True)], f"{WHERE}[0].role: a boolean: must be 'anthropic-base-url' or absent"),
    ([ANTHROPIC, route(name="second", role=ROLE_ANTHROPIC_BASE_URL)],
     f"{WHERE}[1].role: only one route may have role 'anthropic-base-url' ({WHERE}[0] already does)"),
    ([route(role=ROLE_ANTHROPIC_BASE_URL, header="X-Token")],
     f"{WHERE}[0].header: a 'anthropic-base-url' route must use header Authorization or x-api-key"),
]


@pytest.mark.parametrize(("obj", "expected"), BAD_ROUTES)
def test_bad_routes_are_one_line_errors_naming_where_and_key(obj: object, expected: str) -> None:
    with pytest.raises(BottleError) as e:
        routes_from_json(obj, where=WHERE)
    assert expected in str(e.value)
    assert "\n" not in str(e.value)


def test_a_literal_secret_is_refused_with_the_reason() -> None:
    with pytest.raises(BottleError, match="never write a literal secret in a routes file"):
        routes_from_json([route(value="Bearer sk-ant-oat01-literal")], where=WHERE)


def test_good_routes_become_frozen_dataclasses() -> None:
    routes = routes_from_json([ANTHROPIC, route(upstream="https://ghe.example/api/v3/")], where=WHERE)
    assert routes == (
        CredProxyRoute("anthropic", "https://api.anthropic.com", "Authorization",
                       "Bearer ${CLAUDE_CODE_OAUTH_TOKEN}", ROLE_ANTHROPIC_BASE_URL),
        CredProxyRoute("github", "https://ghe.example/api/v3/", "Authorization", "token ${GH_TOKEN}"),
    )
    assert routes_from_json([route(role=None)], where=WHERE)[0].role is None
    assert routes_from_json([], where=WHERE) == ()


BAD_FILES: list[tuple[str, str]] = [
    ('{"routes": [', "routes.json: not valid JSON: Expecting value at line 1 column 13"),
    ("[]", "routes.json: must be a JSON object with key 'routes', not a list"),
    ('{"routes": [], "extra": 1}', "routes.json: unknown key 'extra' (known: routes)"),
    ("{}", "routes.json: missing key 'routes'"),
    ('{"routes": [], "routes": []}', "routes.json: duplicate key 'routes'"),
    ('{"routes": [{"name": "a", "upstream": "https://a", "header": "X", "value": "v"}]}',
     "routes.json: routes[0].value: must reference a secret"),
]


@pytest.mark.parametrize(("text", "expected"), BAD_FILES)
def test_bad_routes_files(text: str, expected: str) -> None:
    with pytest.raises(BottleError) as e:
        parse_routes_file(text, where="routes.json")
    assert expected in str(e.value)


def test_routes_file_round_trips() -> None:
    routes = routes_from_json([ANTHROPIC, route(), route(name="plain", upstream="http://10.0.0.1:8080/v1",
                                                         header="x-api-key", value="${A}${B}")], where=WHERE)
    text = render_routes_file(routes)
    assert text.endswith("}\n")
    assert parse_routes_file(text, where="routes.json") == routes
    assert render_routes_file(parse_routes_file(text, where="routes.json")) == text
    assert "role" not in json.loads(text)["routes"][1]


def test_secret_names_are_sorted_and_unique() -> None:
    routes = routes_from_json([
        route(name="a", value="${ZED} ${ALPHA} ${ZED}"),
        route(name="b", value="token ${ALPHA}"),
        route(name="c", value="${_under}"),
    ], where=WHERE)
    assert secret_names(routes) == ("ALPHA", "ZED", "_under")
    assert secret_names(()) == ()


def test_resolve_secrets_returns_the_named_values() -> None:
    env = {"A": "value-a", "B": "value-b", "UNRELATED": "x"}
    assert resolve_secrets(("A", "B"), env, where="bottle dev") == {"A": "value-a", "B": "value-b"}


@pytest.mark.parametrize(("env", "expected"), [
    ({"B": "value-b"}, "bottle dev: environment variable A is not set (referenced as ${A})"),
    ({"A": "value-a"}, "bottle dev: environment variable B is not set"),
    ({"A": "", "B": "value-b"}, "bottle dev: environment variable A is empty"),
    ({"A": "line1\nline2-secret", "B": "value-b"}, "bottle dev: environment variable A contains a line break"),
])
def test_resolve_secrets_names_the_first_bad_variable_never_a_value(env: dict[str, str], expected: str) -> None:
    with pytest.raises(BottleError) as e:
        resolve_secrets(("A", "B"), env, where="bottle dev")
    assert str(e.value).startswith(expected)
    for value in env.values():
        if value:
            assert value not in str(e.value)


def test_render_value() -> None:
    assert render_value("Bearer ${T}", {"T": "abc"}) == "Bearer abc"
    assert render_value("${A}:${B}", {"A": "1", "B": "2"}) == "1:2"
    with pytest.raises(MissingSecretError) as e:
        render_value("${A} ${B}", {"A": "1"})
    assert e.value.name == "B"
    with pytest.raises(MissingSecretError):
        render_value("${A}", {"A": "bad\r\nvalue"})


@pytest.mark.parametrize(("header", "variable"), [
    ("Authorization", "CLAUDE_CODE_OAUTH_TOKEN"),
    ("authorization", "CLAUDE_CODE_OAUTH_TOKEN"),
    ("x-api-key", "ANTHROPIC_API_KEY"),
    ("X-Api-Key", "ANTHROPIC_API_KEY"),
])
def test_agent_env_points_claude_at_the_proxy_with_a_placeholder(header: str, variable: str) -> None:
    routes = routes_from_json([route(), {**ANTHROPIC, "header": header}], where=WHERE)
    env = agent_env_for_routes(routes, "http://cred-proxy:8080")
    assert env == {"ANTHROPIC_BASE_URL": "http://cred-proxy:8080/anthropic", variable: PLACEHOLDER_TOKEN}
    assert agent_env_for_routes(routes, "http://cred-proxy:8080/") == env


def test_agent_env_is_empty_without_an_anthropic_route() -> None:
    assert agent_env_for_routes(routes_from_json([route()], where=WHERE), "http://cred-proxy:8080") == {}
