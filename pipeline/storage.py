"""Output storage: a directory on any fsspec filesystem, written atomically.

Every file the tool produces goes through :class:`OutputDir`, which only accepts paths relative
to the directory the user named (no ``..``, no absolute paths), and writes each file under a
temporary hidden name first, renaming it into place when complete. A killed job therefore
never leaves a partial shard, record or manifest under its final name. Only storages whose rename
is atomic are written to: local folders and ``root://`` (XRootD) servers; others are refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import posixpath
import uuid
from collections.abc import Iterator
from typing import IO

from . import grid
from .errors import ConfigError, StorageError
from .format import TMP_MARK
from .remote import read_error_text


class OutputDir:
    def __init__(self, url: str) -> None:
        import fsspec

        self.url = str(url)
        if grid.is_xrootd(self.url):
            self.fs, root = grid.filesystem(self.url)
        else:
            self.fs, root = fsspec.core.url_to_fs(self.url)
        self.root = root.rstrip("/") or "/"
        self.local = type(self.fs).__name__ == "LocalFileSystem"
        self.xrootd = grid.is_xrootd(self.url)

    def check_writable(self) -> None:
        """Raise ConfigError unless this storage renames atomically (see :meth:`atomic`).

        Local folders (``os.replace``) and XRootD servers (``mv``: the data server's ``rename(2)``)
        do. Object stores and other fsspec filesystems copy then delete, so a partial shard could be
        seen under its final name: they are refused for writing (reading works).
        """
        if not (self.local or self.xrootd):
            raise ConfigError(f"cannot write to {self.url}: {type(self.fs).__name__} has no atomic rename, so a "
                              f"partial shard could be visible under its final name; write to a local or shared "
                              f"folder or a root:// server, then copy the finished dataset")

    @contextlib.contextmanager
    def lock(self, shared: bool = False, what: str = "convert") -> Iterator[None]:
        """Hold the writers' lock on the output folder while writing (local folders; a no-op elsewhere).

        Exclusive for a command that may delete or rewrite (convert, finalize, migrate), shared for
        job-array tasks, which run side by side but never with a finalize; readers hold their own
        (:func:`pipeline.locks.reading`), so a writer is also refused while a train, evaluate, validate,
        inspect or migrate reads the folder. A refused writer gets a ConfigError at once (one line naming
        the folder and who holds it) instead of racing the other command. ``flock`` on the folder itself:
        no lock file to leave behind; released when the process (and its forked workers) end, even after
        ``kill -9``. A folder that does not exist holds nothing to protect: no lock. Where the folder
        cannot be opened for reading (mode 711) or the file system has no ``flock`` (Lustre mounted
        ``noflock``: ENOSYS), the command runs unlocked, with a warning. See :mod:`pipeline.locks`.
        """
        if not self.local:
            yield
            return
        from . import locks

        with locks.writing(self.root, shared, what):
            yield

    @contextlib.contextmanager
    def replacing(self, what: str = "convert") -> Iterator[None]:
        """Around a step that makes shards stale (a new plan replacing an old one): refused while a reader
        reads this folder (:func:`pipeline.locks.replacing`; local folders only)."""
        if not self.local:
            yield
            return
        from . import locks

        with locks.replacing(self.root, what):
            yield

    def path(self, rel: str) -> str:
        norm = posixpath.normpath(rel)
        if norm.startswith("/") or norm == ".." or norm.startswith("../"):
            raise ConfigError(f"refusing to write outside the output directory: {rel!r}")
        return f"{self.root}/{norm}"

    def makedirs(self, rel: str = ".") -> None:
        self.fs.makedirs(self.path(rel), exist_ok=True)

    def exists(self, rel: str) -> bool:
        return self.fs.exists(self.path(rel))

    def read_bytes(self, rel: str) -> bytes:
        with self.fs.open(self.path(rel), "rb") as fh:
            return fh.read()

    def read_json(self, rel: str):
        """The JSON document ``rel``; ValueError when it is not JSON, or nested too deeply to parse
        (``json`` recurses: a hostile ``[[[[…]]]]`` would end in a RecursionError traceback)."""
        try:
            return json.loads(self.read_bytes(rel))
        except RecursionError as err:
            raise ValueError("nested too deeply to be a document of this tool") from err

    def size(self, rel: str) -> int:
        return int(self.fs.size(self.path(rel)))

    def listdir(self, rel: str) -> list[str]:
        if not self.exists(rel):
            return []
        return sorted(posixpath.basename(p.rstrip("/")) for p in self.fs.ls(self.path(rel), detail=False))

    def remove(self, rel: str) -> None:
        """Delete ``rel``, never through a symbolic link: a linked folder on the way raises ConfigError.

        A linked ``shards/`` would otherwise make cleaning up delete ``part-*`` and ``.tmp-*`` files in
        the link's target, outside the output directory the user named.
        """
        self.check_no_links(posixpath.dirname(posixpath.normpath(rel)))
        try:
            self.fs.rm(self.path(rel))
        except FileNotFoundError:
            pass
        except OSError:  # fsspec-xrootd raises a plain OSError for "no such file"
            if self.fs.exists(self.path(rel)):
                raise

    def check_no_links(self, rel: str) -> None:
        """Raise ConfigError if a folder from the output root down to ``rel`` is a symbolic link (local)."""
        if not self.local:
            return
        parts = [p for p in posixpath.normpath(rel).split("/") if p not in ("", ".")]
        for i in range(1, len(parts) + 1):
            folder = self.path("/".join(parts[:i]))
            if os.path.islink(folder):
                raise ConfigError(f"refusing to delete through the symbolic link {folder} -> "
                                  f"{os.readlink(folder)}: replace it by a real folder inside {self.root}")

    @contextlib.contextmanager
    def atomic(self, rel: str, native: bool = False) -> Iterator[IO[bytes] | str]:
        """Write ``rel``; it appears under its name only if the block succeeds.

        Yields a binary file object, or with ``native`` on a local filesystem the temporary *path*,
        so that pyarrow can write through its own (faster) file implementation.
        """
        self.check_writable()
        final = self.path(rel)
        head, tail = posixpath.split(final)
        tmp = f"{head}/{TMP_MARK}{tail}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        self.fs.makedirs(head, exist_ok=True)
        try:
            if native and self.local:
                yield tmp
            else:
                with self.fs.open(tmp, "wb") as fh:
                    yield fh
            if self.local:
                fd = os.open(tmp, os.O_RDONLY)  # durable before it becomes visible
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(tmp, final)
            else:  # XRootD: kXR_mv, the server's rename(2), replaces an existing file atomically
                self.fs.mv(tmp, final)
        except BaseException as err:
            with contextlib.suppress(Exception):
                self.fs.rm(tmp)
            if isinstance(err, OSError):  # one line naming the file, also for a silent root:// server
                raise StorageError(f"cannot write {self.url.rstrip('/')}/{rel} ({read_error_text(err)})") from err
            raise

    def write_json(self, rel: str, doc) -> None:
        data = (json.dumps(doc, indent=1, sort_keys=False, allow_nan=True) + "\n").encode()
        with self.atomic(rel) as fh:
            fh.write(data)

    def sha256(self, rel: str) -> str:
        h = hashlib.sha256()
        with self.fs.open(self.path(rel), "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
        return h.hexdigest()

    def clean_temporaries(self, rel: str) -> int:
        """Remove temporaries left by killed writers (call only when no writer runs)."""
        self.check_no_links(rel)
        removed = 0
        for name in self.listdir(rel):
            if name.startswith(TMP_MARK):
                self.remove(f"{rel}/{name}")
                removed += 1
        return removed


def output_within(src: OutputDir, dst: OutputDir) -> str | None:
    """``"same"`` if ``dst`` is the folder ``src`` (any spelling, a link, a bind mount: compared by device
    and inode), ``"inside"`` if it lies below it, else None. Remote folders compare by URL."""
    if src.root == dst.root:
        return "same"
    if not (src.local and dst.local and os.path.isdir(src.root)):
        return None
    source = os.stat(src.root)
    path, first = os.path.realpath(dst.root), True
    while True:
        if os.path.exists(path) and os.path.samestat(os.stat(path), source):
            return "same" if first else "inside"
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path, first = parent, False


def refuse_output_within(output: str, sources: dict[str, str]) -> None:
    """ConfigError (one line) when the folder ``output`` is one of ``sources`` (``{"dataset": path, …}``:
    what a command reads) or lies inside one: writing there would mix outputs into what is read."""
    for name, src in sources.items():
        where = output_within(OutputDir(src), OutputDir(output))
        if where:
            raise ConfigError(f"--output {output} is {'the' if where == 'same' else 'inside the'} {name} folder "
                              f"{src}: choose a folder outside it")
