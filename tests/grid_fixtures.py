"""Real grid services for the tests: an XRootD server and a single-node SLURM, started on this host.

Each fixture starts the real daemons (Debian's ``xrootd-server``, ``munge``, ``slurmctld`` and ``slurmd``;
``.ci/run`` installs them) listening on loopback only, with their configuration, state and logs in a
fresh temporary folder, and stops them afterwards (by the pids they wrote). Where a program is missing,
or SLURM is asked for without root, the test is skipped with the reason.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(predicate, seconds: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-2000:] if log is not None and log.exists() else ""
    raise RuntimeError(f"{what} did not start within {seconds} s\n{tail}")


def _stop(pidfile: Path, sig: int = signal.SIGTERM) -> None:
    try:
        pid = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    try:
        os.kill(pid, signal.SIGCONT)  # a test may have stopped it
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------------------------------
# XRootD
# --------------------------------------------------------------------------------------------

@dataclass
class XRootDServer:
    """An ``xrootd`` process serving ``data`` (read and write) at ``root://127.0.0.1:PORT//``."""

    data: Path
    port: int
    pidfile: Path
    log: Path

    def url(self, rel: str = "") -> str:
        return f"root://127.0.0.1:{self.port}//{rel.lstrip('/')}"

    @property
    def pid(self) -> int:
        return int(self.pidfile.read_text().split()[0])

    def pause(self) -> None:
        """SIGSTOP the server: it keeps its socket open and answers nothing."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)


def xrootd_missing() -> str | None:
    if shutil.which("xrootd") is None:
        return "the xrootd server is not installed (Debian: apt-get install xrootd-server; .ci/run does it)"
    missing = [m for m in ("XRootD", "fsspec_xrootd") if importlib.util.find_spec(m) is None]
    if missing:
        return f"{missing} not importable: pip install -e '.[grid]'"
    return None


def start_xrootd() -> XRootDServer:
    """Start xrootd on a free loopback port serving a new folder; as root it runs as ``nobody`` (-R),
    since xrootd refuses to run as root."""
    # as root the server runs as nobody, who must reach the folder: not under a private TMPDIR
    base = Path(tempfile.mkdtemp(prefix="muon-xrootd-", dir="/tmp" if os.geteuid() == 0 else None))
    data, run = base / "data", base / "run"
    data.mkdir()
    run.mkdir()
    for d in (base, data, run):
        d.chmod(0o777)  # the unprivileged server writes outputs and its pid here
    port = _free_port()
    cfg = base / "xrootd.cfg"
    cfg.write_text(f"oss.localroot {data}\nall.export / r/w\nxrd.network nodnr\nxrootd.trace off\n")
    pidfile, log = run / "xrootd.pid", run / "xrootd.log"
    cmd = ["xrootd", "-b", "-p", str(port), "-c", str(cfg), "-l", str(log), "-s", str(pidfile), "-n", "test",
           "-w", str(run)]
    if os.geteuid() == 0:
        cmd[1:1] = ["-R", "nobody"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
    logs = lambda: list(run.rglob("xrootd.log*"))  # noqa: E731 - xrootd puts it under -n's folder
    _wait_for(lambda: any("initialization completed" in p.read_text(errors="replace") for p in logs())
              and any(run.rglob("xrootd.pid")), 20, "xrootd", log)
    server = XRootDServer(data=data, port=port, pidfile=next(run.rglob("xrootd.pid")), log=logs()[0])
    server.base = base
    return server


@pytest.fixture(scope="session")
def xrootd_server():
    """A real XRootD server on loopback; ``server.data`` is the folder behind ``server.url()``."""
    reason = xrootd_missing()
    if reason:
        pytest.skip(reason)
    server = start_xrootd()
    try:
        yield server
    finally:
        _stop(server.pidfile)
        shutil.rmtree(server.base, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# SLURM
# --------------------------------------------------------------------------------------------

SLURM_PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel")


@dataclass
class Slurm:
    """A single-node SLURM: ``env`` holds ``SLURM_CONF`` for its commands (set in os.environ too)."""

    base: Path
    env: dict = field(default_factory=dict)

    def sbatch(self, *args: str, cwd: Path | None = None) -> str:
        r = subprocess.run(["sbatch", "--parsable", *args], capture_output=True, text=True, cwd=cwd,
                           env=self.env, timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip().split(";")[0]

    def wait(self, seconds: float = 120) -> None:
        """Until no job is queued or running (all jobs of this test SLURM)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            r = subprocess.run(["squeue", "-h", "-o", "%i %T"], capture_output=True, text=True, env=self.env,
                               timeout=30)
            if r.returncode == 0 and not r.stdout.strip():
                return
            time.sleep(0.3)
        raise TimeoutError(f"SLURM jobs still queued after {seconds} s:\n{r.stdout}")

    def exit_codes(self, job: str) -> list[str]:
        """``ExitCode`` of each task of a finished job (``0:0`` is success), from slurmctld's records."""
        r = subprocess.run(["scontrol", "-o", "show", "job", job], capture_output=True, text=True, env=self.env,
                           timeout=30)
        return [w.split("=", 1)[1] for line in r.stdout.splitlines() for w in line.split()
                if w.startswith("ExitCode=")]


def slurm_missing() -> str | None:
    missing = [p for p in SLURM_PROGRAMS if shutil.which(p) is None]
    if missing:
        return (f"SLURM is not installed ({', '.join(missing)} missing; Debian: apt-get install slurm-wlm munge; "
                ".ci/run does it)")
    if os.geteuid() != 0:
        return "a test SLURM (slurmd launches the jobs) needs root"
    return None


def start_slurm() -> Slurm:
    base = Path(tempfile.mkdtemp(prefix="muon-slurm-"))
    base.chmod(0o755)
    (base / "state").mkdir()
    (base / "spool").mkdir()
    key = base / "munge.key"
    key.write_bytes(os.urandom(128))
    key.chmod(0o400)
    sock = base / "munge.sock"
    subprocess.run(["munged", "--force", f"--socket={sock}", f"--key-file={key}", f"--pid-file={base / 'munged.pid'}",
                    f"--log-file={base / 'munged.log'}", f"--seed-file={base / 'munged.seed'}"],
                   check=True, capture_output=True, timeout=30)
    node = socket.gethostname().split(".")[0]
    ctl_port, d_port = _free_port(), _free_port()
    mem_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20 // 2
    conf = base / "slurm.conf"
    conf.write_text(f"""\
ClusterName=muontest
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctl_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={sock}
CredType=cred/munge
StateSaveLocation={base}/state
SlurmdSpoolDir={base}/spool
SlurmctldPidFile={base}/slurmctld.pid
SlurmdPidFile={base}/slurmd.pid
SlurmctldLogFile={base}/slurmctld.log
SlurmdLogFile={base}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
MinJobAge=600
SlurmdParameters=config_overrides
NodeName={node} NodeAddr=127.0.0.1 CPUs=4 RealMemory={mem_mb} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
    env = {**os.environ, "SLURM_CONF": str(conf)}
    for cmd in (["slurmctld", "-f", str(conf)], ["slurmd", "-f", str(conf), "-N", node]):
        subprocess.run(cmd, check=True, capture_output=True, env=env, timeout=30)

    def idle() -> bool:
        r = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, env=env, timeout=30)
        return r.returncode == 0 and r.stdout.strip() in ("idle", "mix", "alloc")

    _wait_for(idle, 30, "slurmd", base / "slurmd.log")
    return Slurm(base=base, env=env)


def stop_slurm(slurm: Slurm) -> None:
    subprocess.run(["scancel", "--full", "-u", "root"], capture_output=True, env=slurm.env, timeout=30)
    for name in ("slurmd", "slurmctld", "munged"):
        _stop(slurm.base / f"{name}.pid")
    shutil.rmtree(slurm.base, ignore_errors=True)


@pytest.fixture(scope="session")
def slurm():
    """A real single-node SLURM (munged, slurmctld, slurmd) whose SLURM_CONF is set in os.environ for
    the session, so that ``sbatch`` and dask-jobqueue use it."""
    reason = slurm_missing()
    if reason:
        pytest.skip(reason)
    cluster = start_slurm()
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = cluster.env["SLURM_CONF"]
    try:
        yield cluster
    finally:
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old
        stop_slurm(cluster)
