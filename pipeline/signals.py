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


def raise_signalled(signum: int, frame: object) -> None:
    """The handler the CLI installs for SIGTERM / SIGUSR1 while a command runs."""
    raise Signalled(signum)
