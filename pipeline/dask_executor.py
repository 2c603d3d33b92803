"""The Dask executor: units run as tasks of a Dask distributed cluster (``--scheduler tcp://HOST:PORT``, an
embedded ``local`` cluster behind TLS, or the scheduler of SLURM worker jobs; :mod:`pipeline.batch`).

Everything that can fail before a unit runs fails when the client connects (:func:`dask_client`); a
scheduler lost while units run is one line naming it (:func:`run_on_client`); a worker that does not see
a unit's input or the output folder says it is the worker's view (:func:`_check_visible`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from functools import partial
from typing import Any

from . import extras
from .errors import ConfigError
from .format import Unit
from .jobs import OnProgress, OnRecord, UnitJob, UnitProgress


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
    """Run units on a Dask cluster (``local``: an embedded one behind TLS, else a scheduler address):
    :func:`dask_client`, then :func:`run_on_client`."""
    with dask_client(scheduler, workers, dashboard) as client:
        run_on_client(client, scheduler, units, job, on_record, progress)


@contextlib.contextmanager
def dask_client(scheduler: str, workers: int, dashboard: str | None = None) -> Iterator[Any]:
    """A connected ``distributed.Client``: of an embedded cluster (``local``, ``workers`` processes) or of the
    scheduler at an address, closed (with the cluster) when the block ends.

    An address nobody answers at is a ConfigError naming it, after Dask's connect timeout
    (``distributed.comm.timeouts.connect``, 30 s by default). Within the block the client's own log
    lines are silenced: a scheduler lost mid-run is told once, by :func:`run_on_client`.
    """
    distributed = extras.dask()
    import dask

    cluster = None
    with _quiet("distributed.client"):
        if scheduler == "local":
            cluster, security = local_cluster(workers, dashboard)
            client = distributed.Client(cluster, security=security)
        else:
            try:
                client = distributed.Client(scheduler, timeout=dask.config.get("distributed.comm.timeouts.connect"))
            except OSError as err:
                raise ConfigError(f"cannot reach the Dask scheduler at {scheduler} ({' '.join(str(err).split())}): "
                                  "start it (dask scheduler) or give the address it prints") from err
        try:
            yield client
        finally:
            with contextlib.suppress(Exception):  # a scheduler already gone: nothing to close politely
                client.close(timeout=10)
            if cluster is not None:
                cluster.close()


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    """The logger ``name`` silenced within the block (its level restored after)."""
    log = logging.getLogger(name)
    level = log.level
    log.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        log.setLevel(level)


def _lost(scheduler: str, why: object) -> ConfigError:
    """The one line for a scheduler that went away while units ran (exit 2, like one never reached)."""
    text = " ".join(str(why).split())[:200]
    return ConfigError(f"lost the Dask scheduler at {scheduler} while units ran ({text}): finished units are kept; "
                       "start the scheduler again (or give another --scheduler) and re-run the same command to "
                       "resume")


def run_on_client(client, scheduler: str, units: list[Unit], job: UnitJob, on_record: OnRecord,
                  progress: OnProgress | None = None) -> None:
    """Run units on the cluster of ``client`` (connected to ``scheduler``, named in messages).

    Records arrive as units finish (``as_completed``); chunk progress as worker events, handled on the
    client's event-loop thread under a lock. Task keys and events carry a token of this run, so two
    runs of the same units on one shared scheduler (into two outputs) neither share tasks nor count
    each other's progress. On the first failed unit the others are cancelled and its error re-raised;
    a scheduler lost meanwhile (killed, its host gone) is one ConfigError naming it.
    """
    import threading
    import uuid

    from distributed import CancelledError, as_completed

    track, lock, token = UnitProgress(units, progress), threading.Lock(), uuid.uuid4().hex[:12]

    def on_event(event) -> None:  # (time, (token, unit key, entries, hits)) from any worker of the cluster
        msg = event[1]
        if isinstance(msg, (list, tuple)) and len(msg) == 4 and msg[0] == token:
            with lock:
                track.chunk(msg[1], msg[2], msg[3])

    failed = None
    futures: list = []
    with _quiet("distributed.client"):
        try:
            if progress is not None:
                client.subscribe_topic(PROGRESS_TOPIC, on_event)
            # The job (config, output, settings) travels with every task; pure=False since each call writes files.
            fn = partial(_run_unit_on_worker, job, progress_token=token if progress is not None else None)
            futures = client.map(fn, units, pure=False, key=[f"unit-{u.key[:16]}-{token}" for u in units])
            for fut in as_completed(futures):
                if fut.status == "error":
                    failed = fut
                    break
                if fut.status != "finished":  # cancelled by the client: the scheduler connection is gone
                    raise _lost(scheduler, "the connection closed")
                rec = fut.result()
                with lock:
                    track.finished(rec)  # per unit, as each finishes
                on_record(rec)
        except (OSError, CancelledError) as err:  # comm closed, connection refused, futures cancelled
            raise _lost(scheduler, err) from err
        finally:
            if progress is not None:
                with contextlib.suppress(Exception):
                    client.unsubscribe_topic(PROGRESS_TOPIC)
        if failed is not None:
            for f in futures:
                if f is not failed:  # cancelling the failed one too would replace its error
                    f.cancel()
            failed.result()  # re-raises the worker's exception


def _run_unit_on_worker(job: UnitJob, unit: Unit, progress_token: str | None = None) -> dict:
    """On a Dask worker: run one unit; with ``progress_token`` each chunk is a worker event
    ``(token, unit key, entries, hits)`` on :data:`PROGRESS_TOPIC` (the scheduler forwards it to the
    subscribed client)."""
    from distributed import get_worker

    worker = get_worker()
    _check_visible(job, unit, worker.address)
    _restore_heap_reuse()
    report = None
    if progress_token is not None:
        key = unit.key

        def report(entries: int, hits: int) -> None:
            worker.log_event(PROGRESS_TOPIC, (progress_token, key, int(entries), int(hits)))

    return job(unit, progress=report)


def _check_visible(job: UnitJob, unit: Unit, worker: str) -> None:
    """On a remote worker: the unit's local input and the output folder (which the client made) exist as this
    worker sees its file system, else a ConfigError saying so: a worker on another host, or in a container,
    sees other files than the client, and would otherwise report "no such file" for a file that exists
    where the command was typed, or write the output into a folder of its own."""
    where = job.settings.locate(unit.input)
    if "://" not in where and not os.path.exists(where):
        raise ConfigError(f"input {unit.input} not found on worker {worker} (it looked for {where}): the workers "
                          "must see the inputs where the command runs (a shared file system) or read them by URL "
                          "(root://)")
    out = job.out_url
    if "://" not in out and not os.path.isdir(out):
        raise ConfigError(f"output {out} not found on worker {worker}: the workers must see the output folder "
                          "(a shared file system) or write to a root:// URL")


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
