"""Locks on a dataset folder: writers hold it alone or beside each other, readers beside each other.

Two ``flock`` locks, on the folder itself and on its ``shards/`` folder (no lock file is ever written,
so read-only datasets are locked too; the kernel releases them when the process and the workers it
forked end, even after ``kill -9``):

* convert, finalize, migrate (its output): the folder exclusively, for the whole run;
* a job-array task: the folder shared, for the whole run, and ``shards/`` exclusively for the instant it
  replaces a plan (which makes the dataset's shards stale);
* a reader (train, evaluate, validate, inspect, migrate's source, ``read_dataset``): both shared, for
  the whole read.

So readers never refuse each other; a writer that may delete or rewrite (an exclusive one, or a
job-array task about to replace the plan) is refused while anyone reads, and a reader is refused while
such a writer runs; job-array tasks run beside each other and beside readers (a task that resumes the
same plan only adds what is missing). A refusal is one line naming the folder and, where the system
tells (Linux ``/proc/locks``), the process that holds it. Where no lock can be taken (a folder that
cannot be opened, a file system without ``flock``: Lustre mounted ``noflock``), the command runs
unlocked with a warning; folders that are not local (object stores, ``root://``) are not locked.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator

from .errors import ConfigError

#: The sub-folder readers also lock (see the module docstring).
READERS = "shards"
#: Seconds a job-array task waits for another task's instant on ``shards/`` before it says "being read".
PLAN_WAIT_S = 5.0


def _warn_unlocked(root: str, err: OSError, against: str) -> None:
    print(f"warning: cannot lock {root} ({err.strerror}); running without protection against {against}",
          file=sys.stderr)


def _open(root: str) -> int:
    return os.open(root, os.O_RDONLY | os.O_DIRECTORY)


def holders(folder: str) -> list[str]:
    """``"pid N (command line)"`` of each process holding an ``flock`` on ``folder`` (Linux; [] elsewhere
    or when unknown). For naming who holds a folder in a refusal; the command line is cut at 80 chars."""
    try:
        st = os.stat(folder)
        with open("/proc/locks") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        parts = line.split()
        if len(parts) < 6 or parts[1] != "FLOCK" or "->" in parts:
            continue
        try:
            pid, (major, minor, inode) = int(parts[4]), parts[5].split(":")
            if int(inode) != st.st_ino or (int(major, 16), int(minor, 16)) != (os.major(st.st_dev), os.minor(st.st_dev)):
                continue
        except ValueError:
            continue
        if pid == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                argv = [a.decode(errors="replace") for a in fh.read().split(b"\0") if a]
            argv[0] = os.path.basename(argv[0])
            if len(argv) > 1 and os.path.basename(argv[1]) in ("muon-pipeline", "__main__.py"):
                argv = argv[1:]  # python …/muon-pipeline train …: the command is what matters
            cmd = " ".join(" ".join([os.path.basename(argv[0]), *argv[1:]]).split())  # one line
            cmd = cmd if len(cmd) <= 80 else cmd[:77] + "..."
            found.append(f"pid {pid} ({cmd})")
        except (OSError, IndexError):
            found.append(f"pid {pid}")
    return sorted(set(found))


def _who(folder: str, fallback: str) -> str:
    held = holders(folder)
    if not held:
        return fallback
    return held[0] + (f" and {len(held) - 1} more" if len(held) > 1 else "")


def _being_read(root: str) -> bool:
    """Whether a reader holds ``root``: its ``shards/`` cannot be locked exclusively for an instant."""
    import fcntl

    try:
        fd = _open(os.path.join(root, READERS))
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


@contextlib.contextmanager
def writing(root: str, shared: bool, what: str) -> Iterator[None]:
    """Hold the writers' lock on the local folder ``root`` (see the module docstring): exclusive, or
    ``shared`` for a job-array task. ConfigError (one line, naming who holds it) when refused; a folder
    that does not exist holds nothing to protect (no lock)."""
    if not os.path.isdir(root):
        yield
        return
    import fcntl

    try:
        fd = _open(root)
    except OSError as err:
        _warn_unlocked(root, err, "a concurrent writer")
        yield
        return
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            if _being_read(root):
                who = _who(os.path.join(root, READERS), "a train, evaluate, validate, inspect or migrate")
                raise ConfigError(f"{root} is being read by {who}; wait for it to end, or use another folder for "
                                  f"this {what}") from None
            who = _who(root, "a convert, job-array task, finalize or migrate")
            raise ConfigError(f"another muon-pipeline command is writing to {root} ({who}); wait for it to end, "
                              f"or use another folder for this {what}") from None
        except OSError as err:  # ENOSYS, ENOLCK, EOPNOTSUPP: the file system has no flock
            _warn_unlocked(root, err, "a concurrent writer")
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def replacing(root: str, what: str) -> Iterator[None]:
    """Around a step that makes a dataset's shards stale (a new plan replacing an old one) by a writer
    holding the folder: refused (ConfigError) while a reader reads ``root``. An exclusive writer already
    excludes readers; a job-array task (shared) waits up to :data:`PLAN_WAIT_S` for another task's
    instant on ``shards/`` before it concludes a reader holds it."""
    folder = os.path.join(root, READERS)
    if not os.path.isdir(folder):
        yield
        return
    import fcntl

    try:
        fd = _open(folder)
    except OSError:
        yield
        return
    try:
        deadline = time.monotonic() + PLAN_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    who = _who(folder, "a train, evaluate, validate, inspect or migrate")
                    raise ConfigError(f"{root} is being read by {who}; this {what} would replace its plan (its "
                                      "shards become stale): wait for the reader to end") from None
                time.sleep(0.05)
            except OSError:
                break  # no flock here: the writers' lock already warned
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def reading(directory: str, what: str = "read") -> Iterator[None]:
    """Hold the readers' lock on a dataset folder for as long as the block reads it (see the module
    docstring): beside other readers and job-array tasks, never beside a writer that may delete.

    ``what`` names the reader in messages ("train"). Raises ConfigError (one line naming the folder and
    who writes it) when such a writer runs. Folders that are not local or do not exist are not locked
    (the reader then fails on its own terms); where no lock can be taken, one warning and no lock. Forked
    workers (DataLoader workers) share the lock through the inherited descriptor; DDP ranks and other
    processes take their own.
    """
    root = _local_root(directory)
    if root is None or not os.path.isdir(root):
        yield
        return
    fds: list[int] = []
    try:
        for folder, wait in ((root, 0.0), (os.path.join(root, READERS), PLAN_WAIT_S)):
            if not os.path.isdir(folder):
                break
            try:
                fds.append(_open(folder))
            except OSError as err:
                _warn_unlocked(root, err, f"a writer deleting what this {what} reads")
                break
            if not _take_shared(fds[-1], folder, root, what, wait):
                break
        yield
    finally:
        for fd in fds:
            os.close(fd)


def _take_shared(fd: int, folder: str, root: str, what: str, wait: float) -> bool:
    """A shared lock on ``fd`` (the folder ``folder`` of dataset ``root``), waiting up to ``wait`` seconds
    (a job-array task's instant on ``shards/``). False, after a warning, where the file system has no
    flock; ConfigError while a writer holds it."""
    import fcntl

    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            who = _who(folder, "a convert, finalize or migrate")
            raise ConfigError(f"{root} is being written by {who}; wait for it to end before this {what} "
                              "reads it") from None
        except OSError as err:  # ENOSYS, ENOLCK, EOPNOTSUPP
            _warn_unlocked(root, err, f"a writer deleting what this {what} reads")
            return False


def _local_root(directory: str) -> str | None:
    """The local folder ``directory`` names (a path or ``file://``), or None for other storages."""
    text = str(directory)
    if text.startswith("file://"):
        return text[len("file://"):]
    if "://" in text:
        return None
    return text
