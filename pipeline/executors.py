"""Executors: who runs the work units. All call the same :class:`UnitJob` (a producer's ``run_unit``
with its configuration, the output and the :class:`~pipeline.settings.RunSettings`) for every unit.

* ``serial``: in this process (``--workers 1``), with per-chunk progress;
* ``processes``: a local process pool (``--workers N``);
* ``dask``: a Dask distributed cluster (``--scheduler tcp://HOST:PORT``, or ``local`` for an
  embedded ``LocalCluster``); ``dask-jobqueue`` puts the same cluster on HTCondor or SLURM.

On the first failed unit the executor stops submitting and re-raises; finished units stay
recorded, so re-running the command resumes.

Progress: every executor calls ``on_record`` as each unit finishes (not once at the end) and, when
given, ``progress(entries, hits)`` as work completes: per chunk in this process, in local pool
workers (through a queue) and on Dask workers (as worker events on the topic :data:`PROGRESS_TOPIC`,
which the scheduler forwards to this client). The entries reported for a unit always add up to its
size once its record arrives (:class:`UnitProgress`), whatever the executor.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from functools import partial

from .dask_executor import PROGRESS_TOPIC, dask_client, local_cluster, run_dask, run_on_client
from .format import Unit
from .jobs import OnProgress, OnRecord, UnitJob, UnitProgress
from .settings import RunSettings
from .signals import ignore_stop_signals

__all__ = ["PROGRESS_TOPIC", "OnProgress", "OnRecord", "UnitJob", "UnitProgress", "local_cluster", "run_dask",
           "run_processes", "run_serial", "run_units", "start_executor"]


def run_serial(units: list[Unit], job: UnitJob, on_record: OnRecord, progress: OnProgress | None = None) -> None:
    """Run units one after the other in this process."""
    track = UnitProgress(units, progress)
    for u in units:
        rec = job(u, progress=partial(track.chunk, u.key))
        track.finished(rec)
        on_record(rec)


#: In a pool worker: where chunk progress goes (set by the pool initializer).
_PROGRESS_QUEUE = None


def _init_pool_worker(parent: int, progress_queue) -> None:
    global _PROGRESS_QUEUE
    _PROGRESS_QUEUE = progress_queue
    ignore_stop_signals()  # Ctrl-C / SIGTERM reach the whole process group: the parent decides and stops us
    exit_with_parent(parent)


def _put_progress(key: str, entries: int, hits: int) -> None:
    if _PROGRESS_QUEUE is not None:
        _PROGRESS_QUEUE.put((key, entries, hits))


def _run_unit_in_pool(job: UnitJob, unit: Unit) -> dict:
    return job(unit, progress=partial(_put_progress, unit.key) if _PROGRESS_QUEUE is not None else None)


def _start_method() -> str:
    """``fork`` (workers inherit the imported modules: no re-import per worker), except once the XRootD
    client is loaded in this process: its fork handlers wait on its own threads, and ``os.fork()`` hung
    for good (seen with a ``root://`` output). Then a fork server (a fresh interpreter) starts them."""
    import sys

    return "forkserver" if any(m == "XRootD" or m.startswith("XRootD.") for m in sys.modules) else "fork"


def run_processes(units: list[Unit], job: UnitJob, workers: int, on_record: OnRecord,
                  progress: OnProgress | None = None, poll: float = 0.2) -> None:
    """Run units in a local process pool; records and chunk progress arrive as they happen.

    Each finished unit is handed to ``on_record`` at once (``FIRST_COMPLETED``); chunk progress
    travels from the workers through a queue that this process drains every ``poll`` seconds.
    """
    ctx = multiprocessing.get_context(_start_method())
    track = UnitProgress(units, progress)
    chunks = ctx.SimpleQueue() if progress is not None else None

    def drain() -> None:
        while chunks is not None and not chunks.empty():
            try:
                track.chunk(*chunks.get())
            except (EOFError, OSError, queue.Empty):  # pragma: no cover - a worker died mid-message
                return

    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_pool_worker,
                             initargs=(os.getpid(), chunks)) as pool:
        pending = {pool.submit(_run_unit_in_pool, job, u) for u in units}
        try:
            while pending:
                done, pending = wait(pending, timeout=poll, return_when=FIRST_COMPLETED)
                drain()
                for fut in done:
                    err = fut.exception()
                    if err is not None:
                        for p in pending:
                            p.cancel()
                        raise err
                    rec = fut.result()
                    track.finished(rec)
                    on_record(rec)
        except Exception:  # a failed unit: the running ones finish (their records make a resume shorter)
            raise
        except BaseException:  # Ctrl-C, SIGTERM: stop now
            _stop_pool(pool)
            raise


def _stop_pool(pool: ProcessPoolExecutor) -> None:
    """Stopped by a signal: drop the queued units and end the workers now, instead of
    waiting for every queued unit (hours with thousands). A unit cut short leaves only its hidden
    temporary, which the next run removes; finished units stay recorded."""
    procs = list((getattr(pool, "_processes", None) or {}).values())  # no public handle on the workers
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:  # they ignore SIGTERM (ignore_stop_signals)
        with contextlib.suppress(Exception):
            proc.kill()
    for proc in procs:  # gone before this process says it stopped (no temporary appears after that line)
        with contextlib.suppress(Exception):
            proc.join(timeout=5)


def exit_with_parent(parent: int, interval: float = 0.5) -> None:
    """In a worker process: end it (exit code 1) once ``parent`` is gone.

    A pool worker whose parent was killed (``kill -9``, an OOM kill, a batch system's hard limit)
    would otherwise finish the queued units and then block forever on the dead pipe. A daemon
    thread polls the parent pid; the worker exits within ``interval`` seconds of being orphaned.
    Its half-written shard stays a hidden temporary file that the next run removes.
    """
    import threading
    import time

    if os.getppid() == parent:  # a forked worker: its parent is the one to outlive
        def alive() -> bool:
            return os.getppid() == parent
    else:  # started by a fork server: watch the process that asked for the pool
        def alive() -> bool:
            try:
                os.kill(parent, 0)
            except ProcessLookupError:
                return False
            except PermissionError:  # pragma: no cover - exists, another user's (pid reused)
                return True
            return True

    def watch() -> None:
        while alive():
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


#: ``run(units, job, on_record, progress)``: what :func:`start_executor` yields.
Runner = Callable[..., None]


@contextlib.contextmanager
def start_executor(settings: RunSettings, n_units: int) -> Iterator[Runner]:
    """Start the executor ``settings`` name for ``n_units`` units and yield ``run(units, job, on_record,
    progress)``: SLURM jobs of one Dask worker each (``scheduler='slurm'``, dask-jobqueue), a Dask cluster
    (``local`` or an address), a local process pool (``workers`` > 1), or this process.

    Whatever can fail before the first unit starts fails here, on entering the block (the SLURM jobs
    submitted, the embedded cluster started, the scheduler connected): a producer that writes its plan
    inside the block writes nothing for a run that cannot start. With no units nothing is started.
    """
    workers = settings.worker_count
    if settings.scheduler is None or n_units == 0:
        def run(units: list[Unit], job: UnitJob, on_record: OnRecord, progress: OnProgress | None = None) -> None:
            if workers <= 1 or len(units) <= 1:
                run_serial(units, job, on_record, progress=progress)
            else:
                run_processes(units, job, min(workers, len(units)), on_record, progress=progress)

        yield run
        return
    with contextlib.ExitStack() as stack:
        address = settings.scheduler
        if address == "slurm":
            from .batch import slurm_cluster

            address = stack.enter_context(slurm_cluster(min(workers, n_units)))
        client = stack.enter_context(dask_client(address, workers, settings.dashboard))
        yield partial(run_on_client, client, address)


def run_units(units: list[Unit], job: UnitJob, settings: RunSettings, on_record: OnRecord,
              progress: OnProgress | None = None) -> None:
    """Run ``units`` on the executor ``settings`` name (:func:`start_executor`)."""
    with start_executor(settings, len(units)) as run:
        run(units, job, on_record, progress)
