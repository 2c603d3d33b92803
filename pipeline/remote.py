"""The remote-I/O policy: how long a server (``http://``, ``root://``) may stay silent, and how a read
error is told. A leaf (imports only :mod:`pipeline.errors`).

The timeout is part of a run's settings (``RunSettings.remote_timeout``, ``--remote-timeout``). It is
held in a :class:`contextvars.ContextVar`: every executor runs each unit inside :func:`timeout_set`
with the run's value, in this process, in a pool worker or on a Dask worker of any cluster, so the
value travels with the work, not through the environment of whoever started the worker.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

from .errors import one_line

#: Seconds a remote server may stay silent before a read fails. Without a limit, a server that stops
#: answering mid-read hung the conversion forever.
DEFAULT_REMOTE_TIMEOUT = 60.0

_TIMEOUT: contextvars.ContextVar[float] = contextvars.ContextVar("muon_pipeline_remote_timeout",
                                                                 default=DEFAULT_REMOTE_TIMEOUT)


def remote_timeout() -> float:
    """The remote timeout (seconds) of the work running in this context."""
    return _TIMEOUT.get()


@contextlib.contextmanager
def timeout_set(seconds: float | None) -> Iterator[float]:
    """Within the block, reads and writes of this thread use ``seconds`` (None: leave it as it is)."""
    if seconds is None:
        yield remote_timeout()
        return
    token = _TIMEOUT.set(float(seconds))
    try:
        yield float(seconds)
    finally:
        _TIMEOUT.reset(token)


def is_timeout(err: BaseException) -> bool:
    """True for an error that means "the server did not answer in time", however the library wraps it."""
    text = f"{err!r} {err}"  # fsspec wraps it oddly; the XRootD client says one of the last two
    return isinstance(err, TimeoutError) or any(m in text for m in ("TimeoutError", "Operation expired",
                                                                    "Socket timeout"))


def read_error_text(err: BaseException) -> str:
    """One line for a read error; a remote timeout says so plainly."""
    if is_timeout(err):
        return f"no answer from the server within {remote_timeout():g} s (--remote-timeout)"
    return one_line(err)
