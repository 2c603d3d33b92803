"""The stop-signal contract every command shares (a leaf: stdlib only).

SIGINT (Ctrl-C), SIGTERM (a batch system's time limit or preemption) and SIGUSR1 (SLURM's warning
before the time limit) stop a command with one line and exit status 128 + N (130, 143, 138); finished
work is kept and nothing partial is visible. A terminal and a batch system send them to every process
of the job: worker processes (process pools, DataLoader workers) ignore them
(:func:`ignore_stop_signals`) and leave the stop to their parent, which ends them itself.
"""

from __future__ import annotations

import contextlib
import signal

#: The signals a command stops on.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)


def ignore_stop_signals() -> None:
    """In a worker process: ignore :data:`STOP_SIGNALS`. A worker that handled them too would die
    mid-task with a traceback of its own, and its parent would see a crashed worker, not a clean stop."""
    for sig in STOP_SIGNALS:
        with contextlib.suppress(ValueError, OSError):
            signal.signal(sig, signal.SIG_IGN)


class Signalled(BaseException):
    """Raised in the main thread by SIGTERM / SIGUSR1 while a command runs (like KeyboardInterrupt for
    SIGINT), so ``finally`` blocks and atomic writers clean up on the way out."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


#: The stop signals received while a command runs (:func:`raise_signalled`), first first.
_received: list[int] = []


def raise_signalled(signum: int, frame: object) -> None:
    """The handler the CLI installs for :data:`STOP_SIGNALS` while a command runs: records the signal,
    then raises KeyboardInterrupt (SIGINT) or :class:`Signalled`. The record is what makes a signal
    impossible to lose: library code that catches broad exceptions (pyarrow's lazy pandas import does)
    can swallow the exception, never the record (:func:`received`)."""
    _received.append(signum)
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Signalled(signum)


def received() -> int | None:
    """The first stop signal :func:`raise_signalled` saw since :func:`forget_received`, or None."""
    return _received[0] if _received else None


def forget_received() -> None:
    """Start a command with no stop signal recorded."""
    _received.clear()
