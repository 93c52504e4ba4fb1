"""The one user-facing error type.

Anything a user can cause (a bad manifest, a missing secret, an unreachable daemon)
is raised as BottleError with a one-line, actionable message; `cli.main` prints it
and exits 1. Anything else is a bug and gets a traceback.
"""

from __future__ import annotations


class BottleError(Exception):
    """A problem the user can fix; str(err) is a single line naming what and where."""
