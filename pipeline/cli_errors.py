"""How every command ends: a stop signal or an error becomes one line and its exit code.

* 128 + N for stop signal N (130 SIGINT, 143 SIGTERM, 138 SIGUSR1): one line saying that finished
  work is kept and how to resume. The handlers (:func:`pipeline.signals.raise_signalled`) record the
  signal as well as raise, so a signal whose exception library code swallowed still stops the command
  (exit 128 + N), whether the command then returned or failed with another exception;
* a ``PipelineError``: its message and exit code; a ``PermissionError`` or a storage ``OSError``
  (read-only, full, over quota) from any command: one line, exit 1. Anything else is a bug: traceback.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Callable
from typing import Any

import click

from .errors import STORAGE_ERRNOS, Interrupted, PipelineError
from .signals import STOP_SIGNALS, Signalled, forget_received, raise_signalled, received


def run_command(invoke: Callable[[click.Context], Any], ctx: click.Context) -> Any:
    """``invoke(ctx)`` under the stop-signal handlers, ending as the module docstring says."""
    old = {}
    forget_received()
    for sig in STOP_SIGNALS:
        with contextlib.suppress(ValueError, OSError):  # not the main thread (a caller's thread): leave them
            old[sig] = signal.signal(sig, raise_signalled)
    try:
        result = invoke(ctx)
        if received() is not None:  # its exception was swallowed on the way: the signal still stops
            _stopped(ctx, received())
        return result
    except Interrupted as err:  # a command that stopped cleanly on a signal says what it kept
        click.secho(str(err), fg="yellow", err=True)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        _stopped(ctx, signal.SIGINT)
    except Signalled as stop:
        _stopped(ctx, stop.signum)
    except SystemExit:
        raise
    except BaseException as err:
        if received() is not None:  # whatever the exception, a command that got a stop signal stopped
            _stopped(ctx, received())
        _fail(err)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _stopped(ctx: click.Context, signum: int) -> None:
    """One line and exit 128 + ``signum`` for a command stopped by a signal."""
    name = ctx.invoked_subcommand or ctx.info_name or "muon-pipeline"
    again = ("run the same train command with --resume to resume" if name == "train"
             else "run the same command again to resume")
    click.secho(f"{name}: stopped by {signal.Signals(signum).name}; finished work is kept and nothing partial is "
                f"visible; {again}", fg="yellow", err=True)
    sys.exit(128 + signum)


def _fail(err: BaseException) -> None:
    """One line and the exit code for a ``PipelineError``, a ``PermissionError`` or a storage ``OSError``
    (read-only, full, over quota), from whichever command met it; anything else is raised again."""
    if isinstance(err, PipelineError):
        click.secho(f"Error: {err}", fg="red", err=True)
        sys.exit(err.exit_code)
    if isinstance(err, PermissionError):  # a folder one may not list or write
        where = f"{err.filename}: " if err.filename else ""
        click.secho(f"Error: {where}permission denied ({err.strerror or err}); check the folder's owner and "
                    "mode", fg="red", err=True)
        sys.exit(1)
    if isinstance(err, OSError) and err.errno in STORAGE_ERRNOS:
        where = f"{err.filename}: " if err.filename else ""
        click.secho(f"Error: {where}{err.strerror or err}; {STORAGE_ERRNOS[err.errno]}", fg="red", err=True)
        sys.exit(1)
    raise err
