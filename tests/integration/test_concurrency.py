"""Concurrency against the real daemon: eight bottles started at once from one directory,
the dashboard's decision path deciding proposals from several bottles while new ones
arrive, and two dashboards (two processes) on the same pending proposals."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from claude_bottle.audit import read_audit
from claude_bottle.bottle_state import queue_dir
from claude_bottle.dashboard import decisions
from claude_bottle.pipelock import read_live_allowlist
from claude_bottle.supervise.checks import iso_utc, utc_now
from claude_bottle.supervise.layout import archive_dir, response_path
from claude_bottle.supervise.queue import write_proposal
from claude_bottle.supervise.records import Proposal, new_proposal_id

from .conftest import (DENIED, ROOT, ROUTES, TOKEN, Env, agent_ready, basic_manifest, docker, identities, labelled,
                       wait_for)
from .steps import docker_shim, launcher
from .test_supervise_bottle import call_tool, result_text, via_cred_proxy, via_pipelock

pytestmark = pytest.mark.integration

ROLES = ("", "-pipelock", "-cred-proxy", "-supervise")  # container name suffixes: agent first


def _start_many(env: Env, n: int) -> tuple[list[subprocess.Popen[str]], list[str]]:
    """n launchers at once from the same folder; returns them and the n identities, once
    every agent runs claude."""
    procs = [launcher(env) for _ in range(n)]
    try:
        wait_for(lambda: any(p.poll() is not None for p in procs) or len(identities(env)) == n, timeout=300,
                 what=f"{n} identities")
        ids = identities(env)
        wait_for(lambda: any(p.poll() is not None for p in procs) or all(agent_ready(i) for i in ids), timeout=600,
                 what=f"{n} agents running claude")
        exited = [(p.returncode, p.communicate()[1][-1500:]) for p in procs if p.poll() is not None]
        assert not exited, f"launchers exited early: {exited}"
    except BaseException:
        _stop_all(procs)
        raise
    return procs, ids


def _stop_all(procs: list[subprocess.Popen[str]]) -> list[tuple[int, str]]:
    """SIGTERM every launcher at once; (exit code, stderr) of each."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    def wait(p: subprocess.Popen[str]) -> tuple[int, str]:
        _, err = p.communicate(timeout=300)
        return p.returncode, err
    with ThreadPoolExecutor(len(procs)) as pool:
        return list(pool.map(wait, procs))


def _members(network: str) -> set[str]:
    out = docker("network", "inspect", "--format", "{{range .Containers}}{{.Name}} {{end}}", network).stdout
    return set(out.split())


def _subnet(network: str) -> str:
    return docker("network", "inspect", "--format", "{{range .IPAM.Config}}{{.Subnet}}{{end}}", network).stdout.strip()


def test_eight_bottles_started_at_once_from_one_directory(env: Env) -> None:
    env.vars["CB_TEST_TOKEN"] = TOKEN
    env.write_manifest(basic_manifest(routes=ROUTES))
    t0 = time.monotonic()
    procs, ids = _start_many(env, 8)
    up = time.monotonic() - t0
    calls: dict[str, subprocess.Popen[str]] = {}
    try:
        assert len(ids) == len(set(ids)) == 8 and all(i.startswith("claude-") for i in ids)
        subnets: list[str] = []
        for identity in ids:
            base = f"claude-bottle-{identity}"
            containers, networks = labelled(identity)
            assert sorted(containers) == sorted(base + r for r in ROLES)
            assert sorted(networks) == [f"{base}-egress", f"{base}-internal"]
            # each bottle's networks hold its own containers only: the agent never meets another bottle
            assert _members(f"{base}-internal") == {base + r for r in ROLES}
            assert _members(f"{base}-egress") == {f"{base}-pipelock", f"{base}-cred-proxy"}
            subnets += [_subnet(n) for n in networks]
        assert len(set(subnets)) == 16, subnets
        listed = env.cli("list").stdout.split("resumable:")[0]
        assert all(i in listed for i in ids), listed

        # every bottle works, and through its own sidecars: a proposal from each agent
        # lands in that bottle's queue, and each agent hears the answer meant for it
        def probe(identity: str) -> tuple[str, str]:
            return via_pipelock(identity, DENIED), via_cred_proxy(identity, "/_health")
        with ThreadPoolExecutor(4) as pool:
            answers = dict(zip(ids, pool.map(probe, ids)))
        assert all(a == ("403", "200") for a in answers.values()), answers
        calls.update({i: call_tool(i, "pipelock-block", {"hosts": [f"{i}.example.com"], "reason": f"for {i}"})
                      for i in ids})
        wait_for(lambda: len(decisions.pending()) == 8, timeout=120, what="eight proposals")
        for item in decisions.pending():
            assert item.proposal is not None and item.proposal.identity == item.identity
            assert item.proposal.hosts == (f"{item.identity}.example.com",)
            decisions.reject(item, f"not for you, {item.identity}")
        for identity, call in calls.items():
            text = result_text(call)
            assert f"not for you, {identity}" in text, text
    finally:
        try:
            for call in calls.values():
                if call.poll() is None:
                    call.kill()
                call.communicate()
        finally:
            results = _stop_all(procs)
    for identity in ids:
        assert labelled(identity) == ([], [])
    for code, err in results:
        assert code == 143 and "claude-bottle: removed bottle" in err and "Traceback" not in err, err[-2000:]
    print(f"eight bottles up in {up:.1f} s")


# --- the dashboard's decision path under load --------------------------------------------

def test_the_dashboard_decides_across_bottles_while_new_proposals_arrive(env: Env) -> None:
    env.write_manifest(basic_manifest())
    procs, ids = _start_many(env, 3)
    per_bottle = 4
    calls: dict[str, subprocess.Popen[str]] = {}  # host -> the agent's MCP call
    decided: dict[str, str] = {}  # host -> approve | reject
    errors: list[BaseException] = []
    try:
        def decide() -> None:
            try:
                deadline = time.monotonic() + 240
                while len(decided) < len(ids) * per_bottle and time.monotonic() < deadline:
                    for item in decisions.pending():
                        assert item.proposal is not None and item.proposal.hosts is not None
                        [host] = item.proposal.hosts
                        if int(host.split(".")[0].removeprefix("h")) % 2 == 0:
                            decisions.approve(item)
                            decided[host] = "approve"
                        else:
                            decisions.reject(item, f"no {host}")
                            decided[host] = "reject"
                    time.sleep(0.05)
            except BaseException as e:
                errors.append(e)
        decider = threading.Thread(target=decide)
        decider.start()
        # proposals keep arriving from every bottle while the decider works through them
        for k in range(per_bottle):
            for identity in ids:
                host = f"h{k}.{identity}.test"
                calls[host] = call_tool(identity, "pipelock-block", {"hosts": [host], "reason": f"need {host}"})
            time.sleep(0.5)
        decider.join(timeout=300)
        assert not errors, errors
        assert len(decided) == len(calls)
        for host, call in calls.items():
            text = result_text(call).lower()
            assert decided[host] in text and (decided[host] == "approve" or f"no {host}" in text), text
        for identity in ids:
            approved = tuple(h for h in calls if h.split(".")[1] == identity and decided[h] == "approve")
            assert sorted(read_live_allowlist(identity)) == sorted(approved)  # its own hosts, no other bottle's
        audit = read_audit(env.home / "audit.jsonl")
        assert sorted((e.identity, e.action, e.diff.count("\n+h")) for e in audit) == \
            sorted((h.split(".")[1], decided[h], int(decided[h] == "approve")) for h in calls)
        assert decisions.pending() == []
    finally:
        try:
            for call in calls.values():
                if call.poll() is None:
                    call.kill()
                call.communicate()
        finally:
            results = _stop_all(procs)
    assert all(code == 143 for code, _ in results)


# --- two dashboards ------------------------------------------------------------------------

# A dashboard process: for each round, wait for the id of the proposal to decide, then
# approve it (or, when told, another proposal), and print what happened as one JSON line.
DASHBOARD = r"""
import json, sys, time
from pathlib import Path
from claude_bottle.dashboard import decisions
from claude_bottle.errors import BottleError
go, name = Path(sys.argv[1]), sys.argv[2]
for line in sys.stdin:
    flag = go / line.strip()
    while not flag.exists():
        time.sleep(0.002)
    wanted = flag.read_text().strip()
    items = [i for i in decisions.pending() if i.id == wanted]
    if not items:
        outcome = {"id": wanted, "outcome": "gone"}
    else:
        try:
            outcome = {"id": wanted, "outcome": "applied", "status": decisions.approve(items[0]).status}
        except BottleError as e:
            outcome = {"id": wanted, "outcome": "refused", "error": str(e)}
    print(json.dumps({"dashboard": name, **outcome}), flush=True)
"""


class Dashboard:
    def __init__(self, env: Env, go: Path, name: str, path: str) -> None:
        self.name = name
        self.proc = subprocess.Popen([sys.executable, "-c", DASHBOARD, str(go), name], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**env.vars, "PYTHONPATH": str(ROOT), "PATH": path})

    def arm(self, flag: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(flag + "\n")
        self.proc.stdin.flush()

    def result(self) -> dict[str, str]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"dashboard {self.name} died: {self.proc.communicate()[1][-2000:]}"
        return json.loads(line)

    def close(self) -> None:
        """End of input: the process finishes its loop and exits."""
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            for pipe in (self.proc.stdout, self.proc.stderr):
                if pipe is not None:
                    pipe.close()


def _close_all(boards: list[Dashboard], procs: list[subprocess.Popen[str]]) -> None:
    """Close every dashboard and stop every bottle, even if one of them fails to."""
    try:
        if boards:
            try:
                boards[0].close()
            finally:
                _close_all(boards[1:], [])
    finally:
        if procs:
            _stop_all(procs)


def _queue_proposal(identity: str, host: str) -> str:
    proposal = Proposal(id=new_proposal_id(), identity=identity, tool="pipelock-block", reason=f"need {host}",
                        created_at=iso_utc(utc_now()), hosts=(host,))
    write_proposal(queue_dir(identity), proposal)
    return proposal.id


def _go(go: Path, flag: str, proposal_id: str) -> None:
    tmp = go / f".{flag}.tmp"
    tmp.write_text(proposal_id)
    tmp.rename(go / flag)  # both dashboards see it whole, at the same moment


def _hups(calls: list[list[str]]) -> int:
    return sum(c[:3] == ["kill", "--signal", "HUP"] for c in calls)


def test_two_dashboards_never_apply_one_proposal_twice(env: Env, tmp_path: Path) -> None:
    env.write_manifest(basic_manifest())
    procs, [identity] = _start_many(env, 1)
    go = tmp_path / "go"
    go.mkdir()
    shims = [docker_shim(tmp_path / f"shim-{n}") for n in "ab"]  # logs every docker call of each dashboard
    boards = [Dashboard(env, go, n, s.path) for n, s in zip("ab", shims)]
    rounds = 10
    outcomes: list[tuple[dict[str, str], dict[str, str]]] = []
    try:
        for r in range(rounds):
            proposal_id = _queue_proposal(identity, f"h{r}.example.com")
            for board in boards:
                board.arm(f"round-{r}")
            _go(go, f"round-{r}", proposal_id)
            a, b = (board.result() for board in boards)
            outcomes.append((a, b))
    finally:
        _close_all(boards, procs)
    for r, (a, b) in enumerate(outcomes):
        applied = [o for o in (a, b) if o["outcome"] == "applied"]
        assert len(applied) == 1, f"round {r}: {a} {b}"
        [other] = [o for o in (a, b) if o is not applied[0]]
        assert other["outcome"] == "gone" or "already decided or being decided" in other.get("error", ""), other
    contended = sum(1 for a, b in outcomes if "refused" in (a["outcome"], b["outcome"]))
    hups = sum(_hups(s.calls()) for s in shims)
    assert hups == rounds  # one reload per proposal: none applied twice
    audit = read_audit(env.home / "audit.jsonl")
    assert len(audit) == rounds and all(e.action == "approve" for e in audit)
    folder = queue_dir(identity)
    responses = [p for f in (folder, archive_dir(folder)) for p in f.glob("*.response.json")]
    assert len(responses) == rounds
    wins = sum(a["outcome"] == "applied" for a, _ in outcomes)
    print(f"{rounds} rounds, {contended} refused while the other dashboard held the claim; "
          f"wins: a {wins}, b {rounds - wins}")


def test_two_dashboards_approving_two_proposals_of_one_bottle_lose_neither(env: Env, tmp_path: Path) -> None:
    env.write_manifest(basic_manifest())
    procs, [identity] = _start_many(env, 1)
    go = tmp_path / "go"
    go.mkdir()
    # a slow daemon (a loaded machine): each copy into a container takes a second longer
    shims = [docker_shim(tmp_path / f"shim-{n}", delay=[(["cp", "-"], 1.0)]) for n in "ab"]
    boards = [Dashboard(env, go, n, s.path) for n, s in zip("ab", shims)]
    try:
        ids = [_queue_proposal(identity, host) for host in ("one.example.com", "two.example.com")]
        for board, proposal_id, flag in zip(boards, ids, ("first", "second")):
            board.arm(flag)
        for proposal_id, flag in zip(ids, ("first", "second")):
            _go(go, flag, proposal_id)
        results = [board.result() for board in boards]
        live = read_live_allowlist(identity)
    finally:
        _close_all(boards, procs)
    assert [r["outcome"] for r in results] == ["applied", "applied"], results
    assert len(read_audit(env.home / "audit.jsonl")) == 2
    assert all(response_path(queue_dir(identity), i).exists() for i in ids)
    assert set(live) == {"one.example.com", "two.example.com"}, f"both approved, yet the live allowlist is {live}"
