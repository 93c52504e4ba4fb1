"""The curses dashboard: list and detail views of pending proposals, keys to decide.

The screen lives in one context manager; what is drawn is a pure function of
(lines, cols, view); keys dispatch through a dict. Proposal content is only ever
shown — never run — and a failure (docker, a bad file) lands in the status line.
"""

from __future__ import annotations

import curses
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable, Generator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from ..audit import render_diff
from ..backend import get_bottle_backend
from ..cred_proxy.apply import read_live_routes
from ..errors import BottleError
from ..pipelock import read_live_allowlist, render_allowlist
from ..supervise.discover import PendingItem
from . import decisions

HELP = "a approve  m modify+approve  r reject  e edit routes  p edit allowlist  enter details  q quit"


@dataclass(frozen=True)
class View:
    items: tuple[PendingItem, ...] = ()
    selected: int = 0
    detail: bool = False
    scroll: int = 0
    status: str = "ready"
    detail_lines: tuple[str, ...] = field(default=())


def item_line(item: PendingItem) -> str:
    p = item.proposal
    if p is None:
        return f"INVALID  {item.path}: {item.error}"
    return f"{p.created_at[:19].replace('T', ' ')}  {p.identity:<18} {p.tool:<17} {' '.join(p.reason.split())}"


def layout(lines: int, cols: int, view: View) -> list[tuple[str, bool]]:
    """Rows to draw (text, highlighted), exactly `lines` of them, each cut to `cols`."""
    rows: list[tuple[str, bool]] = [(f"claude-bottle dashboard: {len(view.items)} pending", True)]
    body = max(lines - 3, 0)
    if view.detail and view.items:
        shown = view.detail_lines[view.scroll:view.scroll + body]
        rows += [(line, False) for line in shown]
    elif not view.items:
        rows.append(("no pending proposals; waiting for agents to ask", False))
    else:
        top = max(0, view.selected - body + 1)
        for i, item in enumerate(view.items[top:top + body], start=top):
            rows.append((("> " if i == view.selected else "  ") + item_line(item), i == view.selected))
    rows += [("", False)] * (lines - 2 - len(rows))
    rows += [(HELP, False), (view.status, True)]
    return [(text.replace("\t", "    ")[:max(cols - 1, 0)], hl) for text, hl in rows[:lines]]


def detail_lines(item: PendingItem) -> tuple[str, ...]:
    p = item.proposal
    if p is None:
        return (f"invalid proposal file {item.path}", f"  {item.error}", "", "It is listed only; nothing in it is acted on.")
    out = [f"tool:      {p.tool}", f"bottle:    {p.identity}", f"proposal:  {p.id}", f"asked at:  {p.created_at}",
           "reason:", *(f"  {line}" for line in p.reason.splitlines()), "", "proposed:"]
    try:
        live = decisions.live_content(p)  # read once: a pipelock-block's proposal is built on it
    except BottleError as e:
        if p.tool != "pipelock-block":
            out += [f"  {line}" for line in p.content.splitlines()] or ["  (empty)"]
        return (*out, "", f"(live file unavailable: {e})")
    proposed = decisions.proposed_content(p, live=live)
    out += [f"  {line}" for line in proposed.splitlines()] or ["  (empty)"]
    out += ["", "diff against the live file:"]
    out += [f"  {line}" for line in render_diff(live, proposed, before_label="live", after_label="proposed").splitlines()]
    return tuple(out)


class Dashboard:
    def __init__(self, screen: curses.window) -> None:
        self.screen = screen
        self.view = View()
        self.keys: dict[int, Callable[[], None]] = {
            ord("q"): self.quit, ord("j"): self.down, curses.KEY_DOWN: self.down, ord("k"): self.up,
            curses.KEY_UP: self.up, 10: self.toggle_detail, 13: self.toggle_detail, curses.KEY_ENTER: self.toggle_detail,
            ord("a"): self.approve, ord("m"): self.modify, ord("r"): self.reject, ord("e"): self.edit_routes,
            ord("p"): self.edit_allowlist, curses.KEY_NPAGE: self.page_down, curses.KEY_PPAGE: self.page_up,
            27: self.back, curses.KEY_RESIZE: lambda: None,
        }
        self.running = True

    # --- loop ------------------------------------------------------------------

    def run(self) -> None:
        self.refresh_items()
        while self.running:
            self.draw()
            self.screen.timeout(1000)
            key = self.screen.getch()
            if key == -1:
                self.refresh_items()
                continue
            handler = self.keys.get(key)
            if handler is None:
                continue
            try:
                handler()
            except BottleError as e:
                self.set_status(f"error: {e}")

    def draw(self) -> None:
        # A resize can slip past curses (e.g. before its SIGWINCH handler existed): ask the tty.
        try:
            size = os.get_terminal_size(sys.__stdout__.fileno() if sys.__stdout__ else 1)
            if curses.is_term_resized(size.lines, size.columns):
                curses.resizeterm(size.lines, size.columns)
        except OSError:
            pass
        lines, cols = self.screen.getmaxyx()
        self.screen.erase()
        for y, (text, hl) in enumerate(layout(lines, cols, self.view)):
            try:
                self.screen.addstr(y, 0, text, curses.A_REVERSE if hl else curses.A_NORMAL)
            except curses.error:
                pass  # the bottom-right cell cannot be written; a tiny window is fine
        self.screen.refresh()

    def refresh_items(self) -> None:
        try:
            items = tuple(decisions.pending())
        except BottleError as e:
            self.set_status(f"error: {e}")
            return
        current = self.current()
        selected_id = current.id if current else None
        index = next((i for i, it in enumerate(items) if it.id == selected_id), min(self.view.selected, max(len(items) - 1, 0)))
        detail = self.view.detail and bool(items) and selected_id == (items[index].id if items else None)
        self.view = replace(self.view, items=items, selected=index, detail=detail)

    def set_status(self, text: str) -> None:
        self.view = replace(self.view, status=" ".join(text.split()))

    def current(self) -> PendingItem | None:
        items = self.view.items
        return items[self.view.selected] if 0 <= self.view.selected < len(items) else None

    # --- keys ------------------------------------------------------------------

    def quit(self) -> None:
        self.running = False

    def down(self) -> None:
        if self.view.detail:
            self.view = replace(self.view, scroll=min(self.view.scroll + 1, max(len(self.view.detail_lines) - 1, 0)))
        else:
            self.view = replace(self.view, selected=min(self.view.selected + 1, max(len(self.view.items) - 1, 0)))

    def up(self) -> None:
        if self.view.detail:
            self.view = replace(self.view, scroll=max(self.view.scroll - 1, 0))
        else:
            self.view = replace(self.view, selected=max(self.view.selected - 1, 0))

    def page_down(self) -> None:
        for _ in range(max(self.screen.getmaxyx()[0] - 4, 1)):
            self.down()

    def page_up(self) -> None:
        for _ in range(max(self.screen.getmaxyx()[0] - 4, 1)):
            self.up()

    def back(self) -> None:
        self.view = replace(self.view, detail=False, scroll=0)

    def toggle_detail(self) -> None:
        item = self.current()
        if item is None:
            return
        if self.view.detail:
            self.back()
        else:
            self.set_status("reading the live file…")
            self.draw()
            self.view = replace(self.view, detail=True, scroll=0, detail_lines=detail_lines(item), status="ready")

    def _decided(self, result: decisions.Decided) -> None:
        self.view = replace(self.view, detail=False, scroll=0)
        self.set_status(result.status)
        self.refresh_items()

    def approve(self) -> None:
        item = self.current()
        if item is not None:
            self.set_status("applying…")
            self.draw()
            self._decided(decisions.approve(item))

    def modify(self) -> None:
        item = self.current()
        if item is None or item.proposal is None:
            return
        edited = self.edit_text(decisions.proposed_content(item.proposal), suffix=_suffix(item.proposal.tool))
        if edited is None:
            self.set_status("not approved: the edit was empty")
            return
        self._decided(decisions.approve(item, edited=edited))

    def reject(self) -> None:
        item = self.current()
        if item is None:
            return
        reason = self.prompt("reason for rejecting (enter to send, esc to cancel): ")
        if reason is None or not reason.strip():
            self.set_status("not rejected")
            return
        self._decided(decisions.reject(item, reason))

    def edit_routes(self) -> None:
        identity = self.pick_bottle()
        if identity:
            edited = self.edit_text(read_live_routes(identity), suffix=".json")
            if edited is not None:
                self.set_status(decisions.operator_edit_routes(identity, edited).status)

    def edit_allowlist(self) -> None:
        identity = self.pick_bottle()
        if identity:
            edited = self.edit_text(render_allowlist(read_live_allowlist(identity)), suffix=".txt")
            if edited is not None:
                self.set_status(decisions.operator_edit_allowlist(identity, edited).status)

    # --- helpers ---------------------------------------------------------------

    def pick_bottle(self) -> str | None:
        running = [a.identity for a in get_bottle_backend().list_active()]
        if not running:
            self.set_status("no running bottle")
            return None
        if len(running) == 1:
            return running[0]
        choices = "  ".join(f"{i + 1}) {ident}" for i, ident in enumerate(running[:9]))
        answer = self.prompt(f"which bottle? {choices}: ")
        if answer and answer.strip().isdigit() and 1 <= int(answer) <= len(running[:9]):
            return running[int(answer) - 1]
        self.set_status("no bottle picked")
        return None

    def prompt(self, question: str) -> str | None:
        """A one-line input in the status bar; None on escape."""
        text = ""
        self.screen.timeout(-1)
        while True:
            self.set_status(question + text)
            self.draw()
            key = self.screen.get_wch()
            if key in ("\n", "\r", curses.KEY_ENTER):
                return text
            if key == "\x1b":
                return None
            if key in (curses.KEY_BACKSPACE, "\x7f", "\b"):
                text = text[:-1]
            elif isinstance(key, str) and key.isprintable():
                text += key

    def edit_text(self, text: str, *, suffix: str) -> str | None:
        """Open `text` in $EDITOR; None when the result is empty."""
        editor = shlex.split(os.environ.get("EDITOR") or os.environ.get("VISUAL") or "vi")
        with tempfile.NamedTemporaryFile("w", suffix=suffix, prefix="claude-bottle-", delete=False) as f:
            f.write(text)
            path = f.name
        try:
            curses.def_prog_mode()
            curses.endwin()
            try:
                subprocess.run([*editor, path], check=False)
            except OSError as e:
                raise BottleError(f"cannot run $EDITOR ({editor[0]}): {e.strerror or e}") from None
            finally:
                curses.reset_prog_mode()
                self.screen.refresh()
            with open(path) as f:
                edited = f.read()
        finally:
            os.unlink(path)
        return edited if edited.strip() else None


def _suffix(tool: str) -> str:
    return {"cred-proxy-block": ".json", "pipelock-block": ".txt"}.get(tool, ".Dockerfile")


@contextmanager
def curses_screen() -> Generator[curses.window]:
    screen = curses.initscr()
    try:
        curses.noecho()
        curses.cbreak()
        screen.keypad(True)
        try:
            curses.curs_set(0)
        except curses.error:
            pass
        yield screen
    finally:
        screen.keypad(False)
        curses.nocbreak()
        curses.echo()
        curses.endwin()


def run_dashboard() -> int:
    with curses_screen() as screen:
        Dashboard(screen).run()
    return 0
