"""Fuzzing the cred-proxy routes loader: any text, any JSON value, near-valid routes.

Every input gives routes or one BottleError line (invariant 6); routes that load are
sane and survive a render / parse round trip.
"""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from claude_bottle.cred_proxy import (
    FORBIDDEN_HEADERS, ROUTE_NAME_RE, SECRET_REF_RE, CredProxyRoute, parse_routes_file, render_routes_file,
    routes_from_json,
)
from claude_bottle.git_gate import git_remotes_from_json
from tests.unit.test_fuzz_common import (
    ANY_CHAR, bug_settings, fuzz_settings, json_lists, json_values, leaf, near_object, parse, sometimes_wrong,
)

WHERE = "routes.json"

route_names: SearchStrategy[str] = leaf(
    ("anthropic", "gh", "a", "a" * 63, "x_1-y"), ("_x", "A", "a/b", "a" * 64, "-a", ""),
    st.from_regex(ROUTE_NAME_RE, fullmatch=True),
)
headers: SearchStrategy[str] = leaf(
    ("Authorization", "authorization", "x-api-key", "X-Api-Key", "X-Custom"),
    ("Host", "content-length", "Transfer-Encoding", "bad header", "", "é", "X:Y", "X\r\nY"),
)
header_values: SearchStrategy[str] = leaf(
    ("Bearer ${TOKEN}", "${A}${B}", "token ${GH_TOKEN}", "\t${X}"),
    ("literal-secret", "${", "${1X}", "${X", "$X", "\x00${X}", "é ${X}", "${X}\r\n", "${X} ${"),
)
roles: SearchStrategy[str] = st.sampled_from(("anthropic-base-url", "anthropic-base-url", "other", ""))


@st.composite
def _upstream_parts(draw: st.DrawFn) -> str:
    """A URL put together from parts that are each sometimes wrong."""
    scheme = draw(st.sampled_from(("https://", "https://", "http://", "HTTPS://", "ftp://", "", "//", "http:/")))
    userinfo = draw(st.sampled_from(("", "", "", "", "user@", "u:p@", "@")))
    host = draw(st.sampled_from(("api.example.com", "localhost", "127.0.0.1", "[::1]", "", "a b", "é.com",
                                 "host%41", "[", "]", "[x]")))
    port = draw(st.sampled_from(("", "", "", ":443", ":0", ":65536", ":x", ":")))
    path = draw(st.sampled_from(("", "/", "/v1", "/v1/", "/../x", "/./x", "/a%2e%2e", "?q=1", "#f", "/a?b",
                                 "/ b", "/\x00")))
    return scheme + userinfo + host + port + path


upstreams: SearchStrategy[str] = leaf(
    ("https://api.example.com", "http://localhost:8080/v1", "https://127.0.0.1/"), ("https://", "api.example.com"),
    _upstream_parts(), _upstream_parts(),
)

route_objects: SearchStrategy[dict[str, object]] = near_object(
    {"name": sometimes_wrong(route_names), "upstream": sometimes_wrong(upstreams),
     "header": sometimes_wrong(headers), "value": sometimes_wrong(header_values)},
    {"role": sometimes_wrong(roles)},
)
route_lists: SearchStrategy[list[object]] = json_lists(sometimes_wrong(route_objects))
routes_file_objects: SearchStrategy[object] = sometimes_wrong(near_object({"routes": sometimes_wrong(route_lists)}))


@st.composite
def _dumped(draw: st.DrawFn, values: SearchStrategy[object]) -> str:
    return json.dumps(draw(values), ensure_ascii=draw(st.booleans()), indent=draw(st.sampled_from((None, 2))))


@st.composite
def _mangled(draw: st.DrawFn, texts: SearchStrategy[str]) -> str:
    """Text with one edit: cut short, a random piece inserted, or a BOM in front."""
    text = draw(texts)
    at = draw(st.integers(0, len(text)))
    edit = draw(st.integers(0, 3))
    if edit == 0:
        return text[:at]
    if edit == 1:
        return text[:at] + draw(st.text(ANY_CHAR, max_size=4)) + text[at:]
    if edit == 2:
        return "\ufeff" + text
    return text


routes_texts: SearchStrategy[str] = st.one_of(
    _dumped(routes_file_objects),
    _mangled(_dumped(routes_file_objects)),
    _dumped(json_values),
    st.text(ANY_CHAR, max_size=60),
    st.sampled_from(("", "NaN", "[]", "{}", '{"routes": null}', '{"routes": [], "routes": []}',
                     '{"routes": [{"name": "a", "name": "b"}]}', '{"routes": [NaN, Infinity]}', "1" * 5000,
                     "[" * 2000, '{"routes": ' * 2000)),
)


def assert_sane(routes: tuple[CredProxyRoute, ...]) -> None:
    """What a loaded routes list promises: unique names, one role at most, only ${NAME} secrets."""
    assert len({r.name for r in routes}) == len(routes)
    assert sum(r.role is not None for r in routes) <= 1
    for r in routes:
        assert ROUTE_NAME_RE.fullmatch(r.name) and not r.name.startswith("_")
        assert r.header.lower() not in FORBIDDEN_HEADERS
        assert SECRET_REF_RE.search(r.value)
    assert parse_routes_file(render_routes_file(routes), where=WHERE) == routes


@fuzz_settings(400)
@given(routes_texts)
def test_any_text_as_a_routes_file(text: str) -> None:
    routes = parse(lambda: parse_routes_file(text, where=WHERE))
    if isinstance(routes, tuple):
        assert_sane(routes)


@fuzz_settings(300)
@given(json_values)
def test_any_json_value_as_routes(obj: object) -> None:
    routes = parse(lambda: routes_from_json(obj, where="bottles.dev.cred_proxy.routes"))
    if isinstance(routes, tuple):
        assert_sane(routes)


@fuzz_settings(500)
@given(route_lists)
def test_near_valid_routes(obj: list[object]) -> None:
    routes = parse(lambda: routes_from_json(obj, where="bottles.dev.cred_proxy.routes"))
    if isinstance(routes, tuple):
        assert_sane(routes)


# --- bugs found by the tests above, not fixed yet ----------------------------------------


@bug_settings()
@given(st.integers(1_000, 50_000), st.sampled_from(("[", '{"routes": ', '{"a": [')))
@example(1_000, "[")
def test_bug_routes_file_nested_too_deeply(depth: int, opener: str) -> None:
    parse(lambda: parse_routes_file(opener * depth, where=WHERE), tolerate_known_bugs=False)


@bug_settings()
@given(st.sampled_from(("[", "]", "[x]", "[::1", "a]", "[1.2.3.4]")), st.sampled_from(("http://", "https://")))
@example("[", "http://")
def test_bug_upstream_with_a_broken_ip_literal(host: str, scheme: str) -> None:
    route = {"name": "a", "upstream": f"{scheme}{host}/", "header": "Authorization", "value": "Bearer ${T}"}
    parse(lambda: routes_from_json([route], where="routes"), tolerate_known_bugs=False)


@bug_settings()
@given(st.text(ANY_CHAR, max_size=5), st.sampled_from(("\n", "\r")), st.sampled_from(("file", "route", "remote")))
@example("x", "\n", "file")
@example("x", "\n", "route")
@example("x", "\n", "remote")
def test_bug_unknown_key_with_a_line_break(key: str, line_break: str, place: str) -> None:
    bad = key + line_break
    if place == "file":
        parse(lambda: parse_routes_file(json.dumps({bad: 1}), where=WHERE), tolerate_known_bugs=False)
    elif place == "route":
        parse(lambda: routes_from_json([{bad: 1}], where="routes"), tolerate_known_bugs=False)
    else:
        parse(lambda: git_remotes_from_json([{bad: 1}], where="git.remotes", base_dir=Path("/")),
              tolerate_known_bugs=False)
