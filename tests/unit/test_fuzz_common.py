"""What the fuzz tests share: invariant 6 as a check, JSON strategies, the known bugs.

Invariant 6: bad input anywhere gets a one-line BottleError naming what is wrong, never a
traceback. `parse` runs one parser call under a hang guard and lets through only a result
or such an error.

A bug a fuzz test found stays in KNOWN_BUGS until it is fixed. Its own test (marked
xfail, strict) keeps the failing input as an @example; the broad fuzz tests discard an
input that trips a registered bug (matched by exception, message and the claude_bottle
function it came from) so that they keep looking for new ones. Once a bug is fixed, its
test XPASSes and fails the run: drop the xfail mark and the KNOWN_BUGS entry together.
"""

from __future__ import annotations

import re
import signal
import threading
import time
import traceback
from collections.abc import Callable, Generator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import TypeVar, cast

import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from claude_bottle.errors import BottleError

T = TypeVar("T")

HANG_SECONDS = 10.0  # a call still running after this is a hang, not a slow parse
_LINE_BREAKS = ("\n", "\r")


def fuzz_settings(max_examples: int, *, health_checks: tuple[HealthCheck, ...] = ()) -> settings:
    """Deterministic in CI (derandomize, no example database); 2 s per example catches slow paths."""
    return settings(
        max_examples=max_examples, deadline=timedelta(seconds=2), derandomize=True, database=None,
        suppress_health_check=health_checks, print_blob=False,
    )


def bug_settings(max_examples: int = 50) -> settings:
    """For a known bug's xfail test: report the first failure alone, so xfail(raises=...) sees
    that exception rather than an ExceptionGroup of several."""
    return settings(fuzz_settings(max_examples), report_multiple_bugs=False)


# --- the check ------------------------------------------------------------------------


class Hang(Exception):
    """A parser call ran past HANG_SECONDS (an Exception, so Hypothesis reports the input)."""


@contextmanager
def hang_guard(seconds: float = HANG_SECONDS) -> Generator[None, None, None]:
    """Interrupt the block with Hang after `seconds` (main thread only; a loop inside C is not interrupted)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise Hang(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def assert_one_line(message: str, *, what: str = "BottleError") -> None:
    assert message, f"{what} with an empty message"
    assert not any(c in message for c in _LINE_BREAKS), f"{what} spans lines: {message!r}"


def parse(call: Callable[[], T], *, tolerate_known_bugs: bool = True) -> T | BottleError:
    """The call's result, or the one-line BottleError it raised; anything else fails the test.

    With `tolerate_known_bugs`, an input that trips a KNOWN_BUGS entry is discarded
    (hypothesis.reject) instead of failing: that bug has its own xfail test.
    """
    try:
        with hang_guard():
            return call()
    except BottleError as e:
        if tolerate_known_bugs and not is_one_line(str(e)) and known_bug(e) is not None:
            reject()
        assert_one_line(str(e))
        return e
    except Exception as e:
        if tolerate_known_bugs and not isinstance(e, Hang) and known_bug(e) is not None:
            reject()
        raise


def is_one_line(message: str) -> bool:
    return bool(message) and not any(c in message for c in _LINE_BREAKS)


# --- bugs found, not yet fixed ----------------------------------------------------------


@dataclass(frozen=True)
class KnownBug:
    """An exception (or a multi-line BottleError) a fuzz test found; `test` is its xfail test."""

    key: str
    exception: type[BaseException]
    message: str  # a regex searched in str(exception)
    raised_in: frozenset[str]  # "<path under claude_bottle/>:<function>" of the innermost project frame
    test: str


KNOWN_BUGS: tuple[KnownBug, ...] = ()  # all found so far are fixed; their tests stay as regressions


def raised_in(error: BaseException) -> str | None:
    """`<path under claude_bottle/>:<function>` of the innermost claude_bottle frame of the traceback."""
    where = None
    for frame in traceback.extract_tb(error.__traceback__):
        _, sep, rest = frame.filename.rpartition("/claude_bottle/")
        if sep:
            where = f"{rest}:{frame.name}"
    return where


def known_bug(error: BaseException) -> KnownBug | None:
    where = raised_in(error)
    for bug in KNOWN_BUGS:
        if isinstance(error, bug.exception) and where in bug.raised_in and re.search(bug.message, str(error)):
            return bug
    return None


# --- strategies -------------------------------------------------------------------------

# Every code point, surrogates and controls included: json.loads yields all of them.
ANY_CHAR = st.characters(codec=None, exclude_categories=())

ODD_STRINGS = (
    "", " ", "\t", "\n", "\r\n", "\x00", "\x1b[31m", "\x7f", "\x85", "\u2028", "\u202e", "\u200b", "\ufeff",
    "\ud800", "\udcff", "é", "ﬁ", "１２３", "𝔘𝔫𝔦", "${X}", "${", "}", "~", "~/", "/", ".", "..", "../../etc/passwd",
    "null", "true", "0", "-1", "1e999", "NaN", "a" * 300, "*", "-", "_", "a\nb", "A", "a b",
)

# Keys the parsers know, so random objects reach past the first unknown-key check.
DOMAIN_KEYS = (
    "bottles", "agents", "egress", "allow", "cred_proxy", "routes", "git", "remotes", "env", "dockerfile",
    "ca_bundle", "runtime", "bottle", "prompt", "skills", "model", "skip_permissions", "name", "upstream",
    "header", "value", "role", "url", "push", "force", "identity_file", "token", "version", "id", "identity",
    "tool", "reason", "created_at", "hosts", "allowlist", "jsonrpc", "method", "params", "arguments",
    "protocolVersion", "result", "error",
)


@st.composite
def _huge_text(draw: st.DrawFn) -> str:
    unit = draw(st.sampled_from(("a", "é", "\n", "${X}", "ab.", "\x00", "\ud800", " ")))
    return unit * draw(st.integers(10_000, 300_000))


def weighted(*choices: tuple[int, SearchStrategy[T]]) -> SearchStrategy[T]:
    """One of the strategies, picked in proportion to its weight.

    st.one_of flattens a nested one_of into its own branches and picks among all of them
    alike, so a one_of of "valid" and "any value" would nearly always pick a value.
    """
    pool = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.sampled_from(pool).flatmap(lambda strategy: strategy)


def odd_text(max_size: int = 20) -> SearchStrategy[str]:
    """Short random text of any code point, well-known troublemakers, now and then a huge string."""
    return weighted(
        (3, st.text(ANY_CHAR, max_size=max_size)), (3, st.sampled_from(ODD_STRINGS)),
        (2, st.text(max_size=max_size)), (1, _huge_text()),
    )


json_keys: SearchStrategy[str] = st.one_of(st.sampled_from(DOMAIN_KEYS), odd_text(10))

json_scalars: SearchStrategy[object] = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-(2**70), 2**70), st.floats(),
    st.sampled_from((0, 1, -1, 1.0, 0.5, True, False)), odd_text(),
)


def _json_containers(children: SearchStrategy[object]) -> SearchStrategy[object]:
    return st.one_of(st.lists(children, max_size=5), st.dictionaries(json_keys, children, max_size=5))


json_values: SearchStrategy[object] = st.recursive(json_scalars, _json_containers, max_leaves=12)

# A cheaper stand-in for json_values where a wrong value goes: any scalar or a flat container.
wrong_values: SearchStrategy[object] = st.one_of(
    json_scalars, st.lists(json_scalars, max_size=3), st.dictionaries(json_keys, json_scalars, max_size=3),
)

def sometimes_wrong(valid: SearchStrategy[T]) -> SearchStrategy[object]:
    """Mostly a value of the right shape, one time in eight a value of any type."""
    return weighted((7, valid), (1, wrong_values))


@st.composite
def near_object(
    draw: st.DrawFn,
    required: Mapping[str, SearchStrategy[object]],
    optional: Mapping[str, SearchStrategy[object]] | None = None,
) -> dict[str, object]:
    """An object with the expected keys, now and then one missing or one unknown added."""
    obj = dict(draw(st.fixed_dictionaries(dict(required), optional=dict(optional or {}))))
    mutation = draw(st.sampled_from(range(16)))
    if mutation == 15 and obj:
        del obj[draw(st.sampled_from(sorted(obj)))]
    elif mutation == 14:
        obj[draw(json_keys)] = draw(wrong_values)
    return obj


def leaf(good: tuple[str, ...], bad: tuple[str, ...], *more_bad: SearchStrategy[str]) -> SearchStrategy[str]:
    """A string field: mostly a good value, else a known bad one, a generated one or odd text."""
    return weighted((6, st.sampled_from(good)), (2, st.sampled_from(bad)), *((1, s) for s in more_bad),
                    (1, odd_text()))


def json_lists(items: SearchStrategy[T], max_size: int = 4) -> SearchStrategy[list[T]]:
    return st.lists(items, max_size=max_size)


# --- self-tests of the pieces above -----------------------------------------------------


def test_hang_guard_interrupts_a_pure_python_loop() -> None:
    started = time.monotonic()
    with pytest.raises(Hang), hang_guard(0.2):
        while True:
            pass
    assert time.monotonic() - started < 5


def test_a_multi_line_bottle_error_fails_the_check() -> None:
    def bad() -> None:
        raise BottleError("line one\nline two")

    with pytest.raises(AssertionError, match="spans lines"):
        parse(bad, tolerate_known_bugs=False)


def test_a_one_line_bottle_error_is_returned() -> None:
    def bad() -> None:
        raise BottleError("x.json: bottles: must be a JSON object, not a list")

    assert isinstance(parse(bad), BottleError)


def test_every_known_bug_names_an_existing_test() -> None:
    here = Path(__file__).parent
    for bug in KNOWN_BUGS:
        file, _, name = bug.test.partition("::")
        assert f"def {name}(" in (here / file).read_text(), bug.key


@fuzz_settings(100)
@given(json_values)
def test_json_values_are_what_json_loads_can_give(value: object) -> None:
    def check(v: object) -> None:
        if isinstance(v, list):
            for item in cast("list[object]", v):
                check(item)
        elif isinstance(v, dict):
            for k, item in cast("dict[object, object]", v).items():
                assert isinstance(k, str)
                check(item)
        else:
            assert v is None or isinstance(v, (bool, int, float, str))

    check(value)
