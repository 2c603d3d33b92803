"""Test helper: a real `dask scheduler` and `dask worker` on loopback, started as a cluster user would
(separate processes, in a folder of their own choosing)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    """The scheduler's address and the two processes (scheduler first)."""

    address: str
    scheduler: subprocess.Popen
    workers: subprocess.Popen


@contextlib.contextmanager
def dask_processes(workers: int, cwd: Path | None = None) -> Iterator[Cluster]:
    """Start `dask scheduler` and `dask worker --nworkers WORKERS` in ``cwd`` (with this environment), wait
    until the workers are connected, and yield the :class:`Cluster`; both are stopped at the end."""
    pytest.importorskip("distributed")
    port = _free_port()
    addr = f"tcp://127.0.0.1:{port}"
    env = dict(os.environ, DASK_DISTRIBUTED__WORKER__DAEMON="False")
    procs = [subprocess.Popen([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=cwd)]
    try:
        time.sleep(1.0)
        procs.append(subprocess.Popen([str(BIN / "dask"), "worker", addr, "--nworkers", str(workers), "--nthreads",
                                       "1", "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      env=env, cwd=cwd))
        from distributed import Client

        with Client(addr, timeout="30s") as c:
            c.wait_for_workers(workers, timeout=60)
        yield Cluster(addr, procs[0], procs[1])
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            p.wait(timeout=30)


@contextlib.contextmanager
def dask_cluster(workers: int, cwd: Path | None = None) -> Iterator[str]:
    """:func:`dask_processes`, yielding the scheduler address only."""
    with dask_processes(workers, cwd) as cluster:
        yield cluster.address
