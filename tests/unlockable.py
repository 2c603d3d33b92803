"""Folders on which no lock can be taken, for the tests of writers and readers that then run unlocked."""

from __future__ import annotations

import errno
import fcntl
import os

#: The two ways: a file system without flock (Lustre mounted ``noflock``) and a folder one may enter but
#: not list (mode 711), which cannot be opened for the lock.
WAYS = ["no flock (ENOSYS)", "folder not readable (mode 711)"]


def make_unlockable(monkeypatch, how: str) -> None:
    """Make every ``flock`` fail with ENOSYS, or every folder refuse ``os.open``, for this test."""
    if how.startswith("no flock"):
        def flock(fd, op):
            raise OSError(errno.ENOSYS, "Function not implemented")

        monkeypatch.setattr(fcntl, "flock", flock)
        return
    real_open = os.open

    def guarded_open(path, flags, *args, **kwargs):
        if flags & os.O_DIRECTORY:
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", guarded_open)
