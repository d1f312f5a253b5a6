"""The package's own error types.

Every error that reports a problem with the user's input (a data file, a run directory, a
checkpoint, an option) derives from :class:`WarpphysError`, so that the command line prints
those as one line (exit status 2) and lets anything else, a bug, show its traceback.
"""

from __future__ import annotations


class WarpphysError(ValueError):
    """A problem with the user's input, files or options; the message says what to do next."""


class RunError(WarpphysError):
    """A run directory problem (exists already, missing, incompatible); says what to do."""
