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
import logging
import multiprocessing
import os
import queue
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from functools import partial
from typing import Any

from . import extras, remote
from .errors import ConfigError
from .format import Unit
from .settings import RunSettings
from .signals import ignore_stop_signals

OnRecord = Callable[[dict], None]
#: ``progress(entries, hits)``: called as entries of the input are done (any thread of the caller's process).
OnProgress = Callable[[int, int], None]


@dataclass(frozen=True)
class UnitJob:
    """What every executor runs for each unit: ``run(unit, config, out_url, settings, progress=…)``.

    ``run`` is a module-level function (pickled by reference to pool and Dask workers), ``config`` the
    producer's typed configuration (what decides the bytes) and ``settings`` how to run. Calling the job
    runs one unit under the run's remote timeout (:func:`pipeline.remote.timeout_set`), wherever it runs.
    """

    run: Callable[..., dict]
    config: Any
    out_url: str
    settings: RunSettings

    def __call__(self, unit: Unit, progress: OnProgress | None = None) -> dict:
        with remote.timeout_set(self.settings.remote_timeout):
            return self.run(unit, self.config, self.out_url, self.settings, progress=progress)


class UnitProgress:
    """Adds up what was reported per unit, and tops a unit up to its full size when its record arrives.

    A chunk report may be lost or late (a skipped unit stops mid-way; a Dask event may arrive after its
    unit's result), yet the entries reported in total must equal the entries planned, so the bar ends
    at 100 %. Reports for units that are not ours (another job on a shared Dask cluster) are ignored.
    """

    def __init__(self, units: list[Unit], progress: OnProgress | None) -> None:
        self.size = {u.key: u.entry_stop - u.entry_start for u in units}
        self.done = dict.fromkeys(self.size, 0)
        self.progress = progress

    def chunk(self, key: str, entries: int, hits: int) -> None:
        if key not in self.size:
            return
        entries = min(entries, self.size[key] - self.done[key])  # never past a finished unit
        self.done[key] += entries
        if self.progress is not None and entries > 0:
            self.progress(entries, hits)

    def finished(self, record: dict) -> None:
        key = record["unit"]["key"]
        rest = self.size[key] - self.done[key]
        self.done[key] = self.size[key]
        if self.progress is not None and rest > 0:
            hits = record.get("shard", {}).get("hits", 0) if rest == self.size[key] else 0
            self.progress(rest, hits)


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


def local_cluster(workers: int, dashboard: str | None = None):
    """An embedded Dask ``LocalCluster`` that only this process can use: scheduler, workers and client
    authenticate each other with temporary TLS credentials (``Security.temporary()``: a fresh key and
    self-signed certificate held in memory, never written to disk), so another local user, or any
    process without them, cannot connect and submit code. Listens on loopback only. The dashboard (an
    HTTP server without authentication) is off unless ``dashboard`` gives an address (e.g. ``:8787``).

    Returns ``(cluster, security)``; connect with ``Client(cluster)`` or ``Client(addr, security=security)``.
    """
    extras.tls()
    extras.dask("--scheduler local")
    from distributed import LocalCluster
    from distributed.security import Security

    try:
        security = Security.temporary()
    except ImportError as err:  # cryptography present but broken
        raise ConfigError(f"--scheduler local cannot make its TLS credentials ({err}): "
                          f"{extras.install_line('dask')}") from err
    import dask

    # The scheduler always runs an HTTP server (LocalCluster's dashboard_address=None does not stop it; it
    # binds :8787 and serves cluster info): without a dashboard asked for, it gets a random loopback port
    # and the health route only; workers likewise.
    quiet = {} if dashboard else {"distributed.scheduler.http.routes": ["distributed.http.health"],
                                  "distributed.worker.http.routes": ["distributed.http.health"]}
    with dask.config.set(quiet):
        # silence_logs: a failed unit's error reaches the user once, as its one-line message (the
        # future re-raises it); the workers' "Compute Failed" blocks and cancellation warnings on this
        # process's stderr only repeated it as tracebacks
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                               protocol="tls://", security=security, silence_logs=logging.CRITICAL,
                               dashboard_address=dashboard or "127.0.0.1:0",
                               scheduler_kwargs={"dashboard": bool(dashboard)})
    return cluster, security


#: The Dask worker-event topic that carries chunk progress: events ``(run token, unit key, entries, hits)``.
PROGRESS_TOPIC = "muon-pipeline-progress"


def run_dask(units: list[Unit], job: UnitJob, scheduler: str, workers: int, on_record: OnRecord,
             dashboard: str | None = None, progress: OnProgress | None = None) -> None:
    """Run units on a Dask cluster (``local``: an embedded one behind TLS, else a scheduler address).

    Records arrive as units finish (``as_completed``); chunk progress as worker events, handled on the
    client's event-loop thread under a lock. Task keys and events carry a token of this run, so two
    runs of the same units on one shared scheduler (into two outputs) neither share tasks nor count
    each other's progress. On the first failed unit the others are cancelled and its error re-raised.
    """
    import threading
    import uuid

    distributed = extras.dask()
    Client, as_completed = distributed.Client, distributed.as_completed
    cluster = None
    if scheduler == "local":
        cluster, security = local_cluster(workers, dashboard)
        client = Client(cluster, security=security)
    else:
        try:
            client = Client(scheduler, timeout="30s")
        except OSError as err:
            raise ConfigError(f"cannot reach the Dask scheduler at {scheduler}: {err}") from err
    track, lock, token = UnitProgress(units, progress), threading.Lock(), uuid.uuid4().hex[:12]

    def on_event(event) -> None:  # (time, (token, unit key, entries, hits)) from any worker of the cluster
        msg = event[1]
        if isinstance(msg, (list, tuple)) and len(msg) == 4 and msg[0] == token:
            with lock:
                track.chunk(msg[1], msg[2], msg[3])

    try:
        if progress is not None:
            client.subscribe_topic(PROGRESS_TOPIC, on_event)
        # The job (config, output, settings) travels with every task; pure=False since each call writes files.
        fn = partial(_run_unit_on_worker, job, progress_token=token if progress is not None else None)
        futures = client.map(fn, units, pure=False,
                             key=[f"unit-{u.key[:16]}-{token}" for u in units])
        for fut in as_completed(futures):
            if fut.status == "error":
                for f in futures:
                    if f is not fut:  # cancelling the failed one too would replace its error
                        f.cancel()
                fut.result()  # re-raises the worker's exception
            rec = fut.result()
            with lock:
                track.finished(rec)  # per unit, as each finishes
            on_record(rec)
    finally:
        if progress is not None:
            with contextlib.suppress(Exception):
                client.unsubscribe_topic(PROGRESS_TOPIC)
        client.close()
        if cluster is not None:
            cluster.close()


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


def _run_unit_on_worker(job: UnitJob, unit: Unit, progress_token: str | None = None) -> dict:
    """On a Dask worker: run one unit; with ``progress_token`` each chunk is a worker event
    ``(token, unit key, entries, hits)`` on :data:`PROGRESS_TOPIC` (the scheduler forwards it to the
    subscribed client)."""
    _restore_heap_reuse()
    report = None
    if progress_token is not None:
        from distributed import get_worker

        worker, key = get_worker(), unit.key

        def report(entries: int, hits: int) -> None:
            worker.log_event(PROGRESS_TOPIC, (progress_token, key, int(entries), int(hits)))

    return job(unit, progress=report)


def _restore_heap_reuse() -> None:
    """Undo, in this worker process, the effect of Dask's ``MALLOC_TRIM_THRESHOLD_=65536``.

    With that variable set, glibc stops adapting its mmap threshold, so every column array of
    every chunk becomes a fresh mmap that is page-faulted in and unmapped again: units ran ~50 %
    slower in Dask workers than in a local pool (bench/bench_scaling.py). :func:`pipeline.heap.reuse_freed_memory`
    raises the mmap and trim thresholds, so freed chunk buffers are reused as in any other process;
    peak memory stays bounded by the step size.
    """
    from .heap import reuse_freed_memory

    reuse_freed_memory()


def run_units(units: list[Unit], job: UnitJob, settings: RunSettings, on_record: OnRecord,
              progress: OnProgress | None = None) -> None:
    """Run ``units`` on the executor ``settings`` name: SLURM jobs of one Dask worker each
    (``scheduler='slurm'``, dask-jobqueue), a Dask cluster (``local`` or an address), a local process
    pool (``workers`` > 1), or this process."""
    workers = settings.worker_count
    if settings.scheduler == "slurm":
        from .batch import slurm_cluster

        if units:  # no SLURM jobs for nothing to do
            with slurm_cluster(min(workers, len(units))) as address:
                run_dask(units, job, address, workers, on_record, progress=progress)
    elif settings.scheduler:
        run_dask(units, job, settings.scheduler, workers, on_record, dashboard=settings.dashboard, progress=progress)
    elif workers <= 1 or len(units) <= 1:
        run_serial(units, job, on_record, progress=progress)
    else:
        run_processes(units, job, min(workers, len(units)), on_record, progress=progress)
