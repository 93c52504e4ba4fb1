"""Declaring git remotes: what the manifest accepts, and one precise line for each fault."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from claude_bottle.errors import BottleError
from claude_bottle.git_gate import GitRemote, check_remote_files, git_remotes_from_json, secret_names
from claude_bottle.git_gate.keys import private_key_problem
from claude_bottle.git_gate.urls import parse_remote_url, url_spellings

WHERE = "/home/me/claude-bottle.json: bottles.dev.git.remotes"
SSH = {"name": "origin", "url": "git@github.com:me/repo.git", "identity_file": "~/.ssh/id"}
HTTPS = {"name": "gh", "url": "https://github.com/me/repo.git", "token": "${GH_TOKEN}"}


def parse(obj: object, base_dir: Path = Path("/home/me")) -> tuple[GitRemote, ...]:
    return git_remotes_from_json(obj, where=WHERE, base_dir=base_dir)


def test_full_ssh_and_https_remotes() -> None:
    remotes = parse([
        dict(SSH, push=["refs/heads/agent/*"], force=True),
        dict(HTTPS, push=["refs/heads/agent/*", "refs/tags/v*"]),
        {"name": "public", "url": "https://example.org/pub.git"},
    ])
    assert remotes[0] == GitRemote(
        name="origin", url="git@github.com:me/repo.git", push=("refs/heads/agent/*",), force=True,
        identity_file=Path.home() / ".ssh" / "id", token=None,
    )
    assert remotes[1].token == "${GH_TOKEN}" and remotes[1].identity_file is None and not remotes[1].force
    assert remotes[2].push == () and remotes[2].token is None
    assert secret_names(remotes) == ("GH_TOKEN",)


def test_identity_file_is_relative_to_the_manifest_folder(tmp_path: Path) -> None:
    (remote,) = parse([dict(SSH, identity_file="keys/deploy")], base_dir=tmp_path)
    assert remote.identity_file == tmp_path / "keys" / "deploy"


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"name": "x"}, f"{WHERE}: must be a list of remotes, not an object"),
        (["origin"], f"{WHERE}[0]: must be an object with name, url, push, …, not a string"),
        ([dict(SSH, branch="main")], f"{WHERE}[0]: unknown key 'branch' (known: name, url, push, force, identity_file, token)"),
        ([{"url": SSH["url"]}], f"{WHERE}[0].name: is required"),
        ([{"name": "origin"}], f"{WHERE}[0].url: is required"),
        ([dict(SSH, name=3)], f"{WHERE}[0].name: must be a string, not a number"),
        ([dict(SSH, name="")], f"{WHERE}[0].name: must not be empty"),
        ([dict(SSH, name="my remote")], f"{WHERE}[0].name: 'my remote' is not a valid remote name (letters, digits, '-' and '_', starting with a letter or digit, at most 63)"),
        ([dict(SSH, name="origin.git")], f"{WHERE}[0].name: 'origin.git' is not a valid remote name (letters, digits, '-' and '_', starting with a letter or digit, at most 63)"),
        ([SSH, dict(HTTPS, name="origin")], f"{WHERE}[1].name: duplicate name 'origin' (also {WHERE}[0])"),
        ([SSH, dict(SSH, name="again")], f"{WHERE}[1].url: 'git@github.com:me/repo.git' is the same repository as {WHERE}[0]"),
        ([SSH, dict(SSH, name="again", url="git@github.com:me/repo")], f"{WHERE}[1].url: 'git@github.com:me/repo' is the same repository as {WHERE}[0]"),
        ([dict(SSH, url="/srv/git/repo.git")], f"{WHERE}[0].url: '/srv/git/repo.git': must be an ssh url (git@host:path, ssh://git@host/path) or an https url"),
        ([dict(SSH, url="file:///srv/repo.git")], f"{WHERE}[0].url: 'file:///srv/repo.git': scheme file:// is not supported: use ssh (git@host:path, ssh://…) or https"),
        ([dict(HTTPS, url="http://example.org/r.git")], f"{WHERE}[0].url: 'http://example.org/r.git': scheme http:// is not supported: use ssh (git@host:path, ssh://…) or https"),
        ([dict(SSH, url="ext::sh -c touch% /tmp/pwned")], f"{WHERE}[0].url: 'ext::sh -c touch% /tmp/pwned': must not contain spaces or control characters"),
        ([dict(SSH, url="github.com:me/repo.git")], f"{WHERE}[0].url: 'github.com:me/repo.git': an ssh url needs a user, e.g. git@host:path"),
        ([dict(SSH, url="ssh://github.com/me/repo.git")], f"{WHERE}[0].url: 'ssh://github.com/me/repo.git': an ssh url needs a user, e.g. ssh://git@host/path"),
        ([dict(SSH, url="git@-oProxyCommand=x:repo")], f"{WHERE}[0].url: 'git@-oProxyCommand=x:repo': host '-oProxyCommand=x' is not a valid host name"),
        ([dict(SSH, url="git@host:-repo")], f"{WHERE}[0].url: 'git@host:-repo': path '-repo' may hold only letters, digits and . _ ~ / @ + % = -"),
        ([dict(HTTPS, url="https://me:secret@github.com/me/repo.git")], f"{WHERE}[0].url: 'https://me:secret@github.com/me/repo.git': must not contain a password: give the token as `token` (\"${{ENV_NAME}}\")"),
        ([dict(HTTPS, url="https://github.com/")], f"{WHERE}[0].url: 'https://github.com/': must name a repository path"),
        ([dict(HTTPS, url="https://github.com/r.git?x=1")], f"{WHERE}[0].url: 'https://github.com/r.git?x=1': must not have a query or fragment"),
        ([dict(HTTPS, url="https://github.com:99999/r.git")], f"{WHERE}[0].url: 'https://github.com:99999/r.git': not a valid url (Port out of range 0-65535)"),
        ([dict(SSH, push="refs/heads/agent/*")], f"{WHERE}[0].push: must be a list of ref patterns such as \"refs/heads/agent/*\", not a string"),
        ([dict(SSH, push=["agent/*"])], f"{WHERE}[0].push[0]: 'agent/*': must be a full ref name or glob starting with refs/, e.g. \"refs/heads/agent/*\""),
        ([dict(SSH, push=["refs/heads/a b"])], f"{WHERE}[0].push[0]: 'refs/heads/a b': contains a character git forbids in ref names (space, control, ~ ^ : ? [ \\)"),
        ([dict(SSH, push=["refs/heads/agent/**"])], f"{WHERE}[0].push[0]: 'refs/heads/agent/**': '**' is not needed: '*' already matches across '/'"),
        ([dict(SSH, push=["refs/heads/../x"])], f"{WHERE}[0].push[0]: 'refs/heads/../x': is not a valid ref name ('..', '@{{' or a trailing '.')"),
        ([dict(SSH, push=["refs/heads/x.lock"])], f"{WHERE}[0].push[0]: 'refs/heads/x.lock': has a component starting with '.' or ending with '.lock'"),
        ([dict(SSH, push=["refs/heads//x"])], f"{WHERE}[0].push[0]: 'refs/heads//x': has an empty path component"),
        ([dict(SSH, push=[7])], f"{WHERE}[0].push[0]: must be a string, not a number"),
        ([dict(SSH, force="yes")], f"{WHERE}[0].force: must be true or false, not a string"),
        ([dict(HTTPS, identity_file="~/.ssh/id")], f"{WHERE}[0].identity_file: only for ssh urls; an https remote takes a token (\"${{ENV_NAME}}\")"),
        ([dict(SSH, token="${GH_TOKEN}")], f"{WHERE}[0].token: only for https urls; an ssh remote takes an identity_file"),
        ([dict(HTTPS, token="ghp_literal")], f"{WHERE}[0].token: must be a reference \"${{ENV_NAME}}\" to a host environment variable, not a literal"),
        ([dict(HTTPS, token="Bearer ${GH_TOKEN}")], f"{WHERE}[0].token: must be a reference \"${{ENV_NAME}}\" to a host environment variable, not a literal"),
        ([{"name": "origin", "url": "git@github.com:me/repo.git"}], f"{WHERE}[0].identity_file: is required for an ssh url (the private key the gate pushes and fetches with)"),
        ([dict(SSH, identity_file=None)], f"{WHERE}[0].identity_file: must be a string, not null"),
    ],
)
def test_bad_declarations_are_one_line_errors(obj: object, message: str) -> None:
    with pytest.raises(BottleError) as err:
        parse(obj)
    assert str(err.value) == message
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("url", "scheme", "user", "host", "port", "path"),
    [
        ("git@github.com:me/repo.git", "ssh", "git", "github.com", None, "me/repo.git"),
        ("git@upstream:/srv/git/repo.git", "ssh", "git", "upstream", None, "/srv/git/repo.git"),
        ("ssh://git@host:2222/srv/r.git", "ssh", "git", "host", 2222, "/srv/r.git"),
        ("git@[::1]:r.git", "ssh", "git", "[::1]", None, "r.git"),
        ("https://github.com/me/repo.git", "https", None, "github.com", None, "/me/repo.git"),
        ("https://oauth2@gitlab.example:8443/g/r.git", "https", "oauth2", "gitlab.example", 8443, "/g/r.git"),
    ],
)
def test_urls_parse(url: str, scheme: str, user: str | None, host: str, port: int | None, path: str) -> None:
    parsed = parse_remote_url(url)
    assert not isinstance(parsed, str)
    assert (parsed.scheme, parsed.user, parsed.host, parsed.port, parsed.path) == (scheme, user, host, port, path)


def test_https_user_is_dropped_from_the_contacted_url() -> None:
    parsed = parse_remote_url("https://oauth2@gitlab.example:8443/g/r.git")
    assert not isinstance(parsed, str)
    assert parsed.without_user() == "https://gitlab.example:8443/g/r.git"


@pytest.mark.parametrize(
    ("url", "spellings"),
    [
        ("git@github.com:me/repo.git", ("git@github.com:me/repo.git", "git@github.com:me/repo")),
        ("git@h:/srv/r.git", ("git@h:/srv/r.git", "git@h:/srv/r", "ssh://git@h/srv/r.git", "ssh://git@h/srv/r")),
        ("ssh://git@h/srv/r", ("ssh://git@h/srv/r", "ssh://git@h/srv/r.git", "git@h:/srv/r", "git@h:/srv/r.git")),
        ("ssh://git@h:2222/srv/r.git", ("ssh://git@h:2222/srv/r.git", "ssh://git@h:2222/srv/r")),
        ("https://github.com/me/repo/", ("https://github.com/me/repo/",)),
    ],
)
def test_url_spellings(url: str, spellings: tuple[str, ...]) -> None:
    assert url_spellings(url) == spellings


def _keygen(path: Path, passphrase: str = "") -> Path:
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen is not installed")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", "", "-f", str(path)], check=True)
    return path


def test_check_remote_files_accepts_a_usable_key(tmp_path: Path) -> None:
    key = _keygen(tmp_path / "id")
    check_remote_files(parse([dict(SSH, identity_file=str(key))]))
    check_remote_files(parse([HTTPS]))


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        ("missing", "no such file"),
        ("dir", "is a directory, not a private key"),
        ("public", "is a public key; give the private key (the file without .pub)"),
        ("passphrase", "is protected by a passphrase; the gate runs unattended and needs a key without one"),
        ("garbage", "is not a private key in OpenSSH or PEM format"),
    ],
)
def test_check_remote_files_names_the_unusable_key(tmp_path: Path, make: str, problem: str) -> None:
    path = tmp_path / "key"
    if make == "dir":
        path.mkdir()
    elif make == "public":
        path.write_bytes(_keygen(tmp_path / "real").with_suffix(".pub").read_bytes())
    elif make == "passphrase":
        path = _keygen(path, passphrase="correct horse")
    elif make == "garbage":
        path.write_text("hello\n")
    remotes = parse([dict(SSH, identity_file=str(path))])
    with pytest.raises(BottleError) as err:
        check_remote_files(remotes)
    assert str(err.value) == f"git remote origin: identity_file {path}: {problem}"


def test_encrypted_pem_key_is_refused() -> None:
    pem = b"-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n"
    assert private_key_problem(pem) == "is protected by a passphrase; the gate runs unattended and needs a key without one"
