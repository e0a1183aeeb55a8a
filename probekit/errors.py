"""The one base class of every error a user can fix.

The CLI catches :class:`ProbekitError` and nothing else: its message names the manifest row, the
file or the option at fault, and the command exits with a one-line explanation. Any other
exception is a bug in probekit and shows as a traceback, so it gets reported rather than hidden.
"""

from __future__ import annotations


class ProbekitError(Exception):
    """Bad input, a missing file, a refused operation: something the user can fix. The message says what."""

    #: Exit status the CLI uses for this kind of error (2: bad input or usage; 1: the work failed).
    exit_code: int = 2


__all__ = ["ProbekitError"]
