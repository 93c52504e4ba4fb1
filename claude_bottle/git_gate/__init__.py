"""git gate: the sidecar that holds the git credentials.

The gate keeps its own clone of each declared remote and serves it to the agent over
git's smart HTTP on the internal network (`http://<gate>:9418/<name>.git`). A fetch
first refreshes the clone from the real remote. A push is checked in the clone's
pre-receive hook (ref matches a push pattern; no deletion or non-fast-forward unless
`force: true`) and then pushed to the real remote with the gate's credentials, so the
agent sees the real remote's answer or a refusal naming the rule it broke. The agent's
`~/.gitconfig` rewrites the declared urls to the gate (`url.<gate>.insteadOf`); its
repository's own `.git/config` is left alone.

Credentials: an ssh remote takes `identity_file` (required, no passphrase); an https
remote may take `token` ("${ENV_NAME}"), sent as `Authorization: Basic` with the url's
user or `x-access-token` as the user name; a public https remote needs none.

Host keys for ssh remotes: the lines of the host user's `~/.ssh/known_hosts` and
`/etc/ssh/ssh_known_hosts` that name a declared host are copied into the gate, and the
gate's ssh runs with `StrictHostKeyChecking=accept-new`: a host known on the host must
present that key (a mismatch fails the fetch or push), a host the user has never
contacted is learnt on first contact and pinned for the gate's lifetime.

Modules: `remotes`, `urls`, `keys` (declaration and validation), `refs` (push rules),
`launch` and `known_hosts` (what the launcher copies and runs); inside the sidecar
`upstream` (config, credentials), `clones`, `server`, `hook` and `__main__`.
"""

from __future__ import annotations

from .launch import (
    CONFIG_PATH,
    GATE_HEALTH_PATH,
    GATE_PORT,
    GATE_USER,
    agent_git_config,
    gate_command,
    gate_config_json,
    gate_files,
)
from .refs import pattern_matches, push_pattern_problem
from .remotes import GitRemote, check_remote_files, git_remotes_from_json, secret_names

__all__ = [
    "CONFIG_PATH",
    "GATE_HEALTH_PATH",
    "GATE_PORT",
    "GATE_USER",
    "GitRemote",
    "agent_git_config",
    "check_remote_files",
    "gate_command",
    "gate_config_json",
    "gate_files",
    "git_remotes_from_json",
    "pattern_matches",
    "push_pattern_problem",
    "secret_names",
]
