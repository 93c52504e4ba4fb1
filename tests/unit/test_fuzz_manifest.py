"""Fuzzing the manifest loader: any JSON value, near-valid manifests, any bytes in a file.

Every input gives a Manifest or one BottleError line (invariant 6); a Manifest that
loads only refers to bottles it defines and only allows valid egress patterns.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, example, given
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from claude_bottle.git_gate.remotes import REMOTE_NAME_RE
from claude_bottle.manifest import NAME_RE, Manifest, load_manifest_file
from claude_bottle.pipelock import egress_pattern_problem
from tests.unit.test_fuzz_common import (
    ANY_CHAR, bug_settings, fuzz_settings, json_lists, json_values, leaf, near_object, odd_text, parse,
    sometimes_wrong, weighted,
)
from tests.unit.test_fuzz_routes import route_lists

SOURCE = "fuzz-manifest.json"
BASE_DIR = Path("/nonexistent/claude-bottle-fuzz")  # resolve() does not need it to exist

# A few names used again and again, so agents often name a bottle that exists.
_NAMES = ("default", "dev", "a", "x-1")
names: SearchStrategy[str] = weighted(
    (8, st.sampled_from(_NAMES)), (1, st.from_regex(NAME_RE, fullmatch=True)), (1, odd_text(12)),
)

hosts: SearchStrategy[str] = leaf(
    ("example.com", "*.example.com", "api.github.com", "1.2.3.4", "xn--e1afmkfd.xn--p1ai", "localhost",
     "a-b.c0"),
    ("256.1.1.1", "1.2.3", "::1", "[::1]", "a..b", "-a.com", "a-.com", ".com", "com.", "*", "*.", "*.*.a",
     "a.*.com", "http://a.com", "a.com/x", "a.com:443", "é.com", "x" * 64 + ".com", "a." * 130 + "com", "a b",
     "", "123", "*.1.2.3.4", "[::1]:80", "1.2.3.4.5"),
    st.lists(st.from_regex(r"[a-z0-9*-]{0,8}", fullmatch=True), min_size=1, max_size=4).map(".".join),
)

# Path fields: ordinary, relative, ~-expanded, and odd ones.
paths: SearchStrategy[str] = leaf(
    ("Dockerfile", "./prompt.md", "../x", "/etc/passwd", "~/x", "~", "skills/", "a b", "é", "~root/x", ".",
     "/", "//x", "a/../../.."),
    ("", " ", "~nosuch-fuzz-user/x", "a\x00b", "\ud800"),  # the last three trip known bugs
)

remote_urls: SearchStrategy[str] = leaf(
    ("git@github.com:me/repo.git", "ssh://git@host:2222/srv/repo.git", "https://github.com/me/repo.git",
     "https://github.com/me/repo", "git@host:/abs/repo", "https://[::1]/r"),
    ("http://github.com/me/repo", "host:repo", "git@[::1]:repo", "ssh://host/repo", "https://u:p@h/r",
     "https://h/r?x", "https://h:0/r", "https://h:99999/r", "https://[::1/r", "https://h/",
     "git@h:-oProxyCommand=x", "file:///etc/passwd", "git@h:re po", "", "ssh://git@h:x/r", "https://h/r#f",
     "git@h:r\x00"),
)
push_patterns: SearchStrategy[str] = leaf(
    ("refs/heads/agent/*", "refs/heads/main", "refs/tags/v*", "refs/heads/*/*"),
    ("refs/", "refs/**", "refs/heads/a..b", "refs/heads/x.lock", "refs/heads/.x", "refs/heads//x",
     "refs/heads/x/", "main", "refs/heads/a b", "refs/heads/@{x}", "refs/heads/x."),
)
remote_objects: SearchStrategy[dict[str, object]] = near_object(
    {
        "name": sometimes_wrong(leaf(("origin", "gh", "Repo_1"), ("", "-x", "a/b"),
                                     st.from_regex(REMOTE_NAME_RE, fullmatch=True))),
        "url": sometimes_wrong(remote_urls),
    },
    {
        "push": sometimes_wrong(json_lists(push_patterns)), "force": sometimes_wrong(st.booleans()),
        "identity_file": sometimes_wrong(paths),
        "token": sometimes_wrong(leaf(("${GH_TOKEN}",), ("literal", "${", "$GH", "${A}${B}"))),
    },
)

env_objects: SearchStrategy[dict[str, object]] = st.dictionaries(
    leaf(("FOO", "PATH", "_", "LANG"), ("HOME", "HTTP_PROXY", "1X", "A-B", "", "no_proxy")),
    sometimes_wrong(leaf(("x", "", "a\nb", "$X"), ("${SECRET}",))),
    max_size=3,
)

bottle_objects: SearchStrategy[dict[str, object]] = near_object({}, {
    "egress": sometimes_wrong(near_object({}, {"allow": sometimes_wrong(json_lists(hosts))})),
    "cred_proxy": sometimes_wrong(near_object({}, {"routes": sometimes_wrong(route_lists)})),
    "git": sometimes_wrong(near_object({}, {"remotes": sometimes_wrong(json_lists(sometimes_wrong(remote_objects),
                                                                                  max_size=3))})),
    "env": sometimes_wrong(env_objects),
    "dockerfile": sometimes_wrong(paths),
    "ca_bundle": sometimes_wrong(paths),
})

agent_objects: SearchStrategy[dict[str, object]] = near_object({"bottle": sometimes_wrong(names)}, {
    "prompt": sometimes_wrong(paths),
    "skills": sometimes_wrong(json_lists(paths)),
    "model": sometimes_wrong(leaf(("opus", "sonnet"), ("", " "))),
    "skip_permissions": sometimes_wrong(st.booleans()),
})

manifests: SearchStrategy[object] = sometimes_wrong(near_object({
    "bottles": sometimes_wrong(st.dictionaries(names, sometimes_wrong(bottle_objects), min_size=1, max_size=2)),
}, {
    "agents": sometimes_wrong(st.dictionaries(names, sometimes_wrong(agent_objects), min_size=1, max_size=3)),
}))


@st.composite
def manifest_bytes(draw: st.DrawFn) -> bytes:
    """A manifest file: a dumped near-valid manifest (maybe cut, spliced or not UTF-8) or any bytes."""
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.binary(max_size=200))
    if kind == 1:
        return draw(st.sampled_from((
            b"", b"\xef\xbb\xbf{}", b"\xff\xfe{\x00}\x00", b"{} {}", b"NaN", b'{"bottles": {}, "bottles": {}}',
            b"[" * 1500, b"1" * 5000, b'{"agents": {"a": {"bottle": "a"}}}', b"\x00",
        )))
    text = json.dumps(draw(manifests if kind == 2 else json_values), ensure_ascii=draw(st.booleans()))
    data = text.encode("utf-8", "surrogatepass")  # a lone surrogate makes bytes that are not UTF-8
    at = draw(st.integers(0, len(data)))
    edit = draw(st.integers(0, 3))
    if edit == 0:
        return data[:at]
    if edit == 1:
        return data[:at] + draw(st.binary(max_size=4)) + data[at:]
    return data


def assert_sane(manifest: Manifest) -> None:
    for name, agent in manifest.agents.items():
        assert agent.name == name and agent.bottle in manifest.bottles
        assert manifest.agent(name) is agent
    for name, bottle in manifest.bottles.items():
        assert bottle.name == name
        assert all(egress_pattern_problem(h) is None for h in bottle.egress.allow)
        assert len({r.name for r in bottle.routes}) == len(bottle.routes)
        bottle.secret_names()


@fuzz_settings(300)
@given(json_values)
def test_any_json_value_as_a_manifest(obj: object) -> None:
    manifest = parse(lambda: Manifest.from_json(obj, source=SOURCE, base_dir=BASE_DIR))
    if isinstance(manifest, Manifest):
        assert_sane(manifest)


@fuzz_settings(500)
@given(manifests)
def test_near_valid_manifests(obj: object) -> None:
    manifest = parse(lambda: Manifest.from_json(obj, source=SOURCE, base_dir=BASE_DIR))
    if isinstance(manifest, Manifest):
        assert_sane(manifest)


# data_too_large: a dumped manifest can hold a huge string, which is the point.
@fuzz_settings(200, health_checks=(HealthCheck.data_too_large,))
@given(manifest_bytes())
def test_any_bytes_in_a_manifest_file(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "claude-bottle.json"
        path.write_bytes(data)
        manifest = parse(lambda: load_manifest_file(path))
    if isinstance(manifest, Manifest):
        assert_sane(manifest)


# --- bugs found by the tests above, not fixed yet ----------------------------------------

_PATH_FIELDS = ("dockerfile", "ca_bundle", "prompt", "skills", "identity_file")


def manifest_with_path(field: str, value: str) -> dict[str, object]:
    """The smallest manifest that puts `value` in one of its path fields."""
    if field in ("dockerfile", "ca_bundle"):
        return {"bottles": {"b": {field: value}}}
    if field == "identity_file":
        remote = {"name": "r", "url": "git@host:repo", "identity_file": value}
        return {"bottles": {"b": {"git": {"remotes": [remote]}}}}
    agent = {"bottle": "b", field: [value] if field == "skills" else value}
    return {"bottles": {"b": {}}, "agents": {"a": agent}}


@bug_settings()
@given(st.sampled_from(_PATH_FIELDS), st.from_regex(r"[a-z]{1,8}", fullmatch=True))
@example("dockerfile", "nosuch")
def test_bug_path_naming_an_unknown_user(field: str, user: str) -> None:
    obj = manifest_with_path(field, f"~{user}-no-such-user/x")
    parse(lambda: Manifest.from_json(obj, source=SOURCE, base_dir=BASE_DIR), tolerate_known_bugs=False)


@bug_settings()
@given(st.sampled_from(_PATH_FIELDS), st.text(ANY_CHAR, max_size=5), st.sampled_from(("\x00", "\ud800", "\udfff")))
@example("dockerfile", "a", "\x00")
@example("prompt", "a", "\ud800")
def test_bug_path_with_a_nul_or_a_lone_surrogate(field: str, text: str, bad: str) -> None:
    obj = manifest_with_path(field, text + bad)
    parse(lambda: Manifest.from_json(obj, source=SOURCE, base_dir=BASE_DIR), tolerate_known_bugs=False)


@bug_settings()
@given(st.integers(1_000, 50_000), st.sampled_from((b"[", b'{"bottles": ', b'{"a": [')))
@example(1_000, b"[")
def test_bug_manifest_file_nested_too_deeply(depth: int, opener: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "claude-bottle.json"
        path.write_bytes(opener * depth)
        parse(lambda: load_manifest_file(path), tolerate_known_bugs=False)


@bug_settings()
@given(st.integers(4_301, 20_000), st.sampled_from(("%s", "[%s]", '{"bottles": %s}')))
@example(4_301, "%s")
def test_bug_manifest_file_with_a_huge_integer(digits: int, template: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "claude-bottle.json"
        path.write_text(template % ("1" * digits))
        parse(lambda: load_manifest_file(path), tolerate_known_bugs=False)
