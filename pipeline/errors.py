"""Exceptions with a meaning: each one says what was expected, what was found, and where.

The CLI maps them to exit codes (see ``pipeline.cli``); library users catch them by type.
Nothing here imports anything heavy, so every module can raise them.
"""

from __future__ import annotations

import errno

#: Errors of the file system written to, whatever the command: what to do (the CLI prints one line, exit 1).
STORAGE_ERRNOS = {errno.EROFS: "the file system is read-only: write the output elsewhere",
                  errno.ENOSPC: "the disk is full: free space or write elsewhere (re-run the command to resume)",
                  errno.EDQUOT: "the disk quota is exceeded: free space or write elsewhere (re-run to resume)"}


class PipelineError(Exception):
    """Base class: a problem the user can act on (as opposed to a bug in this tool)."""

    exit_code = 1


class ConfigError(PipelineError):
    """A configuration value or command-line option is unusable."""

    exit_code = 2


class InputError(PipelineError):
    """An input file is missing, unreadable, or holds data this tool refuses to write.

    ``file``, ``entry`` and ``field`` locate the problem as precisely as it is known, so a
    batch log line is enough to find the bad event.
    """

    def __init__(self, message: str, *, file: str | None = None, entry: int | None = None,
                 field: str | None = None) -> None:
        self.file = file
        self.entry = entry
        self.field = field
        self.reason = message
        where = []
        if file is not None:
            where.append(f"file {file}")
        if entry is not None:
            where.append(f"entry {entry}")
        if field is not None:
            where.append(f"field {field}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


class SchemaError(PipelineError):
    """A schema file is malformed, or a dataset does not match the schema it declares."""


class DatasetError(PipelineError):
    """An output dataset is in a state the requested operation cannot work with."""


class Interrupted(PipelineError):
    """A command stopped by a signal (SIGINT, SIGTERM, SIGUSR1) after leaving its output resumable; the
    message says what was kept and how to resume. Exit code 128 + the signal number (130, 143, 138)."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


class StorageError(PipelineError):
    """Writing an output failed (a server that stopped answering, a full disk): names the file."""


def one_line(err: BaseException) -> str:
    """``Type: message`` on one line: library errors often span several, batch logs want one."""
    return f"{type(err).__name__}: {' '.join(str(err).split())}"


def quote(value: object, limit: int = 80) -> str:
    """``repr(value)`` for a message, bounded: nested containers are cut at a few levels and items
    (:mod:`reprlib`), and the text at ``limit`` characters. A value from a user's file (a YAML alias
    "billion laughs" structure: nine shared lists of nine, nine deep) is never expanded in full."""
    import reprlib

    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxtuple, r.maxdict, r.maxset, r.maxstring, r.maxother = 3, 4, 4, 4, 4, limit, limit
    text = r.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
