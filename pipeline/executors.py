"""Executors: who runs the work units. All call ``units.run_unit`` with the same arguments.

* ``serial``: in this process (``--workers 1``), with per-chunk progress;
* ``processes``: a local process pool (``--workers N``);
* ``dask``: a Dask distributed cluster (``--scheduler tcp://HOST:PORT``, or ``local`` for an
  embedded ``LocalCluster``); ``dask-jobqueue`` puts the same cluster on HTCondor or SLURM.

On the first failed unit the executor stops submitting and re-raises; finished units stay
recorded, so re-running the command resumes.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from functools import partial

from .errors import ConfigError
from .units import Unit, run_unit

OnRecord = Callable[[dict], None]


def run_serial(units: list[Unit], job: dict, on_record: OnRecord, progress=None) -> None:
    for u in units:
        on_record(run_unit(u, progress=progress, **job))


def run_processes(units: list[Unit], job: dict, workers: int, on_record: OnRecord) -> None:
    # fork: workers inherit the imported modules (no re-import cost per worker).
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=exit_with_parent,
                             initargs=(os.getpid(),)) as pool:
        pending = {pool.submit(run_unit, u, **job) for u in units}
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for fut in done:
                err = fut.exception()
                if err is not None:
                    for p in pending:
                        p.cancel()
                    raise err
                on_record(fut.result())


def local_cluster(workers: int, dashboard: str | None = None):
    """An embedded Dask ``LocalCluster`` that only this process can use: scheduler, workers and client
    authenticate each other with temporary TLS credentials (``Security.temporary()``: a fresh key and
    self-signed certificate held in memory, never written to disk), so another local user, or any
    process without them, cannot connect and submit code. Listens on loopback only. The dashboard (an
    HTTP server without authentication) is off unless ``dashboard`` gives an address (e.g. ``:8787``).

    Returns ``(cluster, security)``; connect with ``Client(cluster)`` or ``Client(addr, security=security)``.
    """
    from distributed import LocalCluster
    from distributed.security import Security

    try:
        security = Security.temporary()
    except ImportError as err:
        raise ConfigError("--scheduler local needs the 'cryptography' package for its TLS credentials: "
                          "pip install 'muon-pipeline[dask]'") from err
    import dask

    # The scheduler always runs an HTTP server (LocalCluster's dashboard_address=None does not stop it; it
    # binds :8787 and serves cluster info): without a dashboard asked for, it gets a random loopback port
    # and the health route only; workers likewise.
    quiet = {} if dashboard else {"distributed.scheduler.http.routes": ["distributed.http.health"],
                                  "distributed.worker.http.routes": ["distributed.http.health"]}
    with dask.config.set(quiet):
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                               protocol="tls://", security=security,
                               dashboard_address=dashboard or "127.0.0.1:0",
                               scheduler_kwargs={"dashboard": bool(dashboard)})
    return cluster, security


def run_dask(units: list[Unit], job: dict, scheduler: str, workers: int, on_record: OnRecord,
             dashboard: str | None = None) -> None:
    try:
        from distributed import Client, as_completed
    except ImportError as err:
        raise ConfigError("--scheduler needs Dask: pip install 'muon-pipeline[dask]'") from err
    cluster = None
    if scheduler == "local":
        cluster, security = local_cluster(workers, dashboard)
        client = Client(cluster, security=security)
    else:
        try:
            client = Client(scheduler, timeout="30s")
        except OSError as err:
            raise ConfigError(f"cannot reach the Dask scheduler at {scheduler}: {err}") from err
    try:
        # Plain dicts travel to the workers; pure=False since each call writes files.
        fn = partial(_run_unit_dicts, **job)
        futures = client.map(fn, [u.to_dict() for u in units], pure=False, key=[f"unit-{u.key[:16]}" for u in units])
        for fut in as_completed(futures):
            if fut.status == "error":
                for f in futures:
                    f.cancel()
                fut.result()  # re-raises the worker's exception
            on_record(fut.result())
    finally:
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

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _run_unit_dicts(unit: dict, **job) -> dict:
    _restore_heap_reuse()
    return run_unit(unit, **job)


def _restore_heap_reuse() -> None:
    """Undo, in this worker process, the effect of Dask's ``MALLOC_TRIM_THRESHOLD_=65536``.

    With that variable set, glibc stops adapting its mmap threshold, so every column array of
    every chunk becomes a fresh mmap that is page-faulted in and unmapped again: units ran ~50 %
    slower in Dask workers than in a local pool (bench/bench_scaling.py). Raising the mmap and
    trim thresholds lets freed chunk buffers be reused, as they are in any other process; peak
    memory stays bounded by the step size.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        libc = ctypes.CDLL(name)
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 32 * 2**20)
        libc.mallopt(m_trim_threshold, 256 * 2**20)
    except (OSError, AttributeError):  # not glibc: nothing to undo
        pass
