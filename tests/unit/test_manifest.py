from __future__ import annotations

import json
from pathlib import Path

import pytest

from claude_bottle.errors import BottleError
from claude_bottle.manifest import (BUILTIN, Manifest, check_files, load_manifest, load_manifest_file,
                                    resolve_secrets)

ROUTE = {"name": "anthropic", "role": "anthropic-base-url", "upstream": "https://api.anthropic.com",
         "header": "Authorization", "value": "Bearer ${TOKEN}"}


def manifest_with(bottle: object = None, agent: object = None, **top: object) -> dict[str, object]:
    m: dict[str, object] = {
        "bottles": {"dev": {"egress": {"allow": ["api.github.com"]}} if bottle is None else bottle},
        "agents": {"impl": {"bottle": "dev"} if agent is None else agent},
    }
    m.update(top)
    return m


BAD: list[tuple[object, str]] = [
    ([], "M.json: must be a JSON object, not a list"),
    ("x", "M.json: must be a JSON object, not a string"),
    (manifest_with(extra=1), "M.json: unknown key 'extra'"),
    ({"bottles": [], "agents": {}}, "M.json: bottles: must be a JSON object, not a list"),
    ({"bottles": {}, "agents": 3}, "M.json: agents: must be a JSON object, not a number"),
    ({"bottles": {"": {}}, "agents": {}}, "M.json: bottles: '' is not a valid name"),
    ({"bottles": {"Dev Box": {}}, "agents": {}}, "M.json: bottles: 'Dev Box' is not a valid name"),
    (manifest_with(agent={"bottle": "nope"}), "M.json: agents.impl.bottle: names bottle 'nope', which is not defined"),
    (manifest_with(agent={}), "M.json: agents.impl: missing key 'bottle'"),
    (manifest_with(agent={"bottle": ""}), "M.json: agents.impl.bottle: must be a non-empty string"),
    (manifest_with(agent={"bottle": 5}), "M.json: agents.impl.bottle: must be a non-empty string, not a number"),
    (manifest_with(agent={"bottle": "dev", "colour": "red"}), "M.json: agents.impl: unknown key 'colour'"),
    (manifest_with(agent={"bottle": "dev", "skills": "skills/tdd"}), "M.json: agents.impl.skills: must be a list of strings, not a string"),
    (manifest_with(agent={"bottle": "dev", "skills": [1]}), "M.json: agents.impl.skills[0]: must be a non-empty string, not a number"),
    (manifest_with(agent={"bottle": "dev", "model": ""}), "M.json: agents.impl.model: must be a non-empty string"),
    (manifest_with(agent={"bottle": "dev", "prompt": None}), "M.json: agents.impl.prompt: must be a non-empty string, not null"),
    (manifest_with(agent={"bottle": "dev", "skip_permissions": "no"}), "M.json: agents.impl.skip_permissions: must be true or false, not a string"),
    (manifest_with(bottle={"runtime": "runsc"}), "M.json: bottles.dev.runtime: not a manifest key any more: the runtime is auto-detected"),
    (manifest_with(bottle={"image": "x"}), "M.json: bottles.dev: unknown key 'image'"),
    (manifest_with(bottle=[]), "M.json: bottles.dev: must be a JSON object, not a list"),
    (manifest_with(bottle={"egress": []}), "M.json: bottles.dev.egress: must be a JSON object, not a list"),
    (manifest_with(bottle={"egress": {"deny": []}}), "M.json: bottles.dev.egress: unknown key 'deny'"),
    (manifest_with(bottle={"egress": {"allow": "github.com"}}), "M.json: bottles.dev.egress.allow: must be a list of strings, not a string"),
    (manifest_with(bottle={"egress": {"allow": ["https://github.com"]}}), "M.json: bottles.dev.egress.allow[0]: 'https://github.com'"),
    (manifest_with(bottle={"egress": {"allow": ["github.com:443"]}}), "M.json: bottles.dev.egress.allow[0]: 'github.com:443'"),
    (manifest_with(bottle={"egress": {"allow": ["github.com/path"]}}), "M.json: bottles.dev.egress.allow[0]: 'github.com/path'"),
    (manifest_with(bottle={"egress": {"allow": ["git hub.com"]}}), "M.json: bottles.dev.egress.allow[0]: 'git hub.com'"),
    (manifest_with(bottle={"egress": {"allow": ["ok.com", "*.*.com"]}}), "M.json: bottles.dev.egress.allow[1]: '*.*.com'"),
    (manifest_with(bottle={"egress": {"allow": [""]}}), "M.json: bottles.dev.egress.allow[0]: must be a non-empty string"),
    (manifest_with(bottle={"cred_proxy": {"routes": [ROUTE, ROUTE]}}), "M.json: bottles.dev.cred_proxy.routes[1]"),
    (manifest_with(bottle={"cred_proxy": {"routes": [{**ROUTE, "value": "Bearer sk-live-123"}]}}), "M.json: bottles.dev.cred_proxy.routes[0].value"),
    (manifest_with(bottle={"cred_proxy": {"routes": [{**ROUTE, "extra": 1}]}}), "M.json: bottles.dev.cred_proxy.routes[0]"),
    (manifest_with(bottle={"cred_proxy": {"routes": [{**ROUTE, "upstream": "ftp://x"}]}}), "M.json: bottles.dev.cred_proxy.routes[0].upstream"),
    (manifest_with(bottle={"cred_proxy": {"paths": []}}), "M.json: bottles.dev.cred_proxy: unknown key 'paths'"),
    (manifest_with(bottle={"cred_proxy": {"routes": {}}}), "M.json: bottles.dev.cred_proxy.routes"),
    (manifest_with(bottle={"git": {"remotes": [{"name": "origin"}]}}), "M.json: bottles.dev.git.remotes[0]"),
    (manifest_with(bottle={"git": {"mirrors": []}}), "M.json: bottles.dev.git: unknown key 'mirrors'"),
    (manifest_with(bottle={"env": []}), "M.json: bottles.dev.env: must be a JSON object, not a list"),
    (manifest_with(bottle={"env": {"LANG": 1}}), "M.json: bottles.dev.env.LANG: must be a string, not a number"),
    (manifest_with(bottle={"env": {"1BAD": "x"}}), "M.json: bottles.dev.env: '1BAD' is not a valid environment variable name"),
    (manifest_with(bottle={"env": {"HTTPS_PROXY": "http://evil"}}), "M.json: bottles.dev.env.HTTPS_PROXY: set by claude-bottle itself"),
    (manifest_with(bottle={"env": {"TOKEN": "${GH_TOKEN}"}}), "M.json: bottles.dev.env.TOKEN: env values reach the agent verbatim"),
    (manifest_with(bottle={"dockerfile": ""}), "M.json: bottles.dev.dockerfile: must be a non-empty string"),
    (manifest_with(bottle={"ca_bundle": 7}), "M.json: bottles.dev.ca_bundle: must be a non-empty string, not a number"),
]


@pytest.mark.parametrize(("obj", "expected"), BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_manifests_name_file_entry_and_key(obj: object, expected: str) -> None:
    with pytest.raises(BottleError) as exc:
        Manifest.from_json(obj, source="M.json", base_dir=Path("/base"))
    msg = str(exc.value)
    assert expected in msg
    assert "\n" not in msg


def test_at_least_thirty_bad_manifests() -> None:
    assert len(BAD) >= 30


def test_good_manifest_resolves_paths_relative_to_its_folder(tmp_path: Path) -> None:
    obj = manifest_with(
        bottle={"egress": {"allow": ["*.npmjs.org", "api.github.com", "api.github.com"]},
                "cred_proxy": {"routes": [ROUTE]}, "env": {"LANG": "C.UTF-8"},
                "dockerfile": "bottles/dev.Dockerfile", "ca_bundle": "~/corp-ca.pem"},
        agent={"bottle": "dev", "prompt": "prompts/impl.md", "skills": ["skills/tdd"], "model": "opus"},
    )
    m = Manifest.from_json(obj, source="M.json", base_dir=tmp_path)
    agent = m.agent("impl")
    bottle = m.bottle_for(agent)
    assert agent.prompt == tmp_path / "prompts/impl.md"
    assert agent.skills == (tmp_path / "skills/tdd",)
    assert bottle.dockerfile == tmp_path / "bottles/dev.Dockerfile"
    assert bottle.ca_bundle == Path("~/corp-ca.pem").expanduser()
    assert bottle.hosts() == ("*.npmjs.org", "api.github.com")
    assert bottle.secret_names() == ("TOKEN",)
    assert bottle.env == (("LANG", "C.UTF-8"),)


def test_unknown_agent_lists_known_ones() -> None:
    m = Manifest.from_json(manifest_with(), source="M.json", base_dir=Path("/"))
    with pytest.raises(BottleError, match=r"M.json: no agent named 'x' \(agents: impl\)"):
        m.agent("x")


def test_non_json_file_names_line_and_column(tmp_path: Path) -> None:
    p = tmp_path / "m.json"
    p.write_text('{\n  "bottles": {,\n}')
    with pytest.raises(BottleError, match=rf"{p}: line 2 column 15: not valid JSON"):
        load_manifest_file(p)


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(BottleError, match="manifest not found"):
        load_manifest_file(tmp_path / "nope.json")
    with pytest.raises(BottleError, match="is a directory"):
        load_manifest_file(tmp_path)
    p = tmp_path / "bin.json"
    p.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(BottleError, match="cannot read manifest"):
        load_manifest_file(p)


def test_lookup_order(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    explicit = tmp_path / "explicit.json"
    explicit.write_text(json.dumps(manifest_with()))
    env_file = tmp_path / "env.json"
    env_file.write_text(json.dumps(manifest_with(agent={"bottle": "dev", "model": "opus"})))
    assert load_manifest(None, environ={"HOME": str(home)}).source == BUILTIN
    (home / "claude-bottle.json").write_text(json.dumps(manifest_with()))
    assert load_manifest(None, environ={"HOME": str(home)}).source == str(home / "claude-bottle.json")
    assert load_manifest(None, environ={"HOME": str(home), "CLAUDE_BOTTLE_MANIFEST": str(env_file)}).source == str(env_file)
    assert load_manifest(str(explicit), environ={"CLAUDE_BOTTLE_MANIFEST": str(env_file)}).source == str(explicit)


def test_builtin_default_has_claude_behind_the_credential_proxy() -> None:
    m = load_manifest(None, environ={"HOME": "/nonexistent"})
    bottle = m.bottle_for(m.agent("claude"))
    assert bottle.hosts() == ()
    assert [r.role for r in bottle.routes] == ["anthropic-base-url"]
    assert bottle.secret_names() == ("CLAUDE_CODE_OAUTH_TOKEN",)


def test_missing_secret_is_named_before_anything_is_created() -> None:
    m = load_manifest(None, environ={"HOME": "/nonexistent"})
    bottle = m.bottle_for(m.agent("claude"))
    with pytest.raises(BottleError, match=r"needs \$\{CLAUDE_CODE_OAUTH_TOKEN\}, which is not set"):
        resolve_secrets(bottle, {}, source=m.source)
    assert resolve_secrets(bottle, {"CLAUDE_CODE_OAUTH_TOKEN": "t"}, source=m.source) == {"CLAUDE_CODE_OAUTH_TOKEN": "t"}


def test_check_files_names_the_missing_prompt(tmp_path: Path) -> None:
    obj = manifest_with(agent={"bottle": "dev", "prompt": "missing.md", "skills": ["nodir"]})
    m = Manifest.from_json(obj, source="M.json", base_dir=tmp_path)
    agent = m.agent("impl")
    with pytest.raises(BottleError, match=r"M.json: agents.impl.prompt: .*missing.md does not exist"):
        check_files(agent, m.bottle_for(agent), source="M.json")
    (tmp_path / "missing.md").write_text("hi")
    with pytest.raises(BottleError, match=r"M.json: agents.impl.skills\[0\]: .*nodir is not a directory"):
        check_files(agent, m.bottle_for(agent), source="M.json")
