"""`info <agent>`: the resolved agent and bottle configuration, and declared git remotes."""

from __future__ import annotations

import argparse

from ..manifest import load_manifest
from ._common import add_manifest_option

HELP = "show an agent's resolved configuration and its bottle"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:  # pyright: ignore[reportPrivateUsage]
    p = sub.add_parser("info", help=HELP, description=HELP)
    p.add_argument("agent")
    add_manifest_option(p)


def run(args: argparse.Namespace) -> int:
    return info(agent=args.agent, manifest=args.manifest)


def info(*, agent: str, manifest: str | None) -> int:
    m = load_manifest(manifest)
    a = m.agent(agent)
    b = m.bottle_for(a)
    rows = [
        ("manifest", m.source),
        ("agent", a.name),
        ("bottle", b.name),
        ("prompt", str(a.prompt) if a.prompt else "none"),
        ("skills", ", ".join(str(s) for s in a.skills) or "none"),
        ("model", a.model or "default"),
        ("permissions", "skipped (the bottle is the boundary)" if a.skip_permissions else "asked"),
        ("image", str(b.dockerfile) if b.dockerfile else "default (debian:bookworm-slim + Claude Code)"),
        ("ca bundle", str(b.ca_bundle) if b.ca_bundle else "none"),
        ("allowed hosts", ", ".join(b.hosts()) or "none"),
        ("env", ", ".join(f"{k}={v}" for k, v in b.env) or "none"),
        ("secrets", ", ".join(f"${{{n}}}" for n in b.secret_names()) or "none"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    print("routes:" if b.routes else "routes: none")
    for r in b.routes:
        role = f"  role {r.role}" if r.role else ""
        print(f"  {r.name:<12} -> {r.upstream}  header {r.header}{role}")
    print("git remotes:" if b.remotes else "git remotes: none")
    for g in b.remotes:
        cred = f"identity_file {g.identity_file}" if g.identity_file else ("token " + g.token if g.token else "no credential")
        print(f"  {g.name:<12} {g.url}  push {', '.join(g.push) or 'nothing'}"
              f"{'  force allowed' if g.force else ''}  ({cred})")
    return 0
