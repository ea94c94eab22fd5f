"""The one error type the toolchain raises for bad input.

Every stage raises :class:`FcmError` for problems a user can act on (a missing or corrupt file,
an unsupported layer, an inconsistent DAG). The command-line tool prints it as one line and
exits non-zero; anything else escaping a command is a bug in the toolchain.
"""

from __future__ import annotations

import os


class FcmError(Exception):
    """A problem with the user's input, reported as ``<where>: <what>``."""

    def __init__(self, message: str, where: str | os.PathLike | None = None):
        self.where = os.fspath(where) if where is not None else None
        self.message = message
        super().__init__(f"{self.where}: {message}" if self.where else message)


class FcmWarning(UserWarning):
    """Something the user should know that does not stop the work (e.g. an opaque layer)."""
