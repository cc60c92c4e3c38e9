"""The one error type every data reader raises for file content it cannot accept.

Rules shared by all readers: a missing file or folder raises :class:`FileNotFoundError`; anything
wrong *inside* a file (bad encoding, malformed line, wrong type, unknown id, inconsistent files)
raises :class:`DataError`, whose message starts with the file and then the line
(``"<file>:<line>: ..."``) or the JSON key (``"<file>[<key>]: ..."``). ``DataError`` subclasses
``ValueError``, so ``except ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = ["DataError"]


class DataError(ValueError):
    """A data file's content is malformed or inconsistent; the message names file and line/key."""
