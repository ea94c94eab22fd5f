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


def one_line(text: str, limit: int = 300) -> str:
    """The first non-empty line of ``text``, its spaces collapsed, cut at a word boundary (with
    "...") when longer than ``limit`` characters: a message from a library, fit for one error line."""
    line = next((" ".join(part.split()) for part in str(text).splitlines() if part.strip()), "")
    if len(line) <= limit:
        return line
    cut = line[: limit + 1].rsplit(" ", 1)[0] if " " in line[:limit] else line[:limit]
    return cut.rstrip(" ,;:.") + " ..."
