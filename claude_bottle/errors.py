"""The one user-facing error type.

Anything a user can cause (a bad manifest, a missing secret, an unreachable daemon)
is raised as BottleError with a one-line, actionable message; `cli.main` prints it
and exits 1. Anything else is a bug and gets a traceback.
"""

from __future__ import annotations


class BottleError(Exception):
    """A problem the user can fix; str(err) is a single line naming what and where."""


def json_type(value: object) -> str:
    """How a JSON value's type reads in an error message: "a list", "null", …"""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object" if isinstance(value, dict) else type(value).__name__
