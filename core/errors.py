"""The one distinction every front end makes: errors the user can fix, and the rest.

A :class:`UserError`'s message names the file or option at fault and what to do; it is
shown as one line without a traceback. Anything else that escapes is an internal error:
front ends say so, keep the traceback in the log and name the log.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input (footage, options, weights, device, paths, run directory)."""


USER_ERRORS: tuple[type[BaseException], ...] = (UserError, OSError)
"""What front ends show as a one-line message: user errors, and OS errors (a full disk, an
unwritable or missing path), whose messages name the file."""
