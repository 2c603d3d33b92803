"""Input names as users give them (files, folders, globs, ``file://``, ``root://``, other URLs), listed
once at the boundary into the ordered list of inputs a run works on.

Local or remote: :func:`is_local`; the same local file under two spellings: :func:`local_identity`.
"""

from __future__ import annotations

import glob
import os
from collections import Counter

from . import grid
from .errors import ConfigError


def is_local(path: str) -> bool:
    """True for a plain path or a ``file://`` URL."""
    return "://" not in path or path.startswith("file://")


def absolute_path(path: str) -> str:
    """A local path made absolute (against this process's folder, links kept); URLs as they are. For paths
    that leave the process (remote workers) or outlive it (a derived dataset's lineage)."""
    return path if "://" in path else os.path.abspath(path)


def local_identity(path: str) -> str | None:
    """The real path (links and ``..`` resolved) of a local input, plain or ``file://``; None for a
    remote URL. Two spellings of one file have the same identity."""
    return os.path.realpath(path.removeprefix("file://")) if is_local(path) else None


def expand_inputs(specs: list[str]) -> list[str]:
    """Files, directories (their ``*.root``, sorted) and globs, in the order given, locally and on
    ``root://`` servers; other URLs as-is.

    An existing path is taken literally even when it looks like a pattern (``sample[1].root`` is that
    file, not ``sample1.root``); only a spec that names no existing path is expanded as a glob.
    Raises ConfigError for an empty result, a folder without ``*.root``, a pattern that matches nothing
    and an input given twice (also under two spellings of one local file).
    """
    out: list[str] = []
    for spec in specs:
        if grid.is_xrootd(spec):  # directories and globs on an XRootD server, same rules
            out += grid.expand(spec)
            continue
        if "://" in spec and not spec.startswith("file://"):
            out.append(spec)
            continue
        prefix = "file://" if spec.startswith("file://") else ""  # file:// URLs follow the same rules
        local = spec[len(prefix):]
        if os.path.isdir(local):
            found = sorted(glob.glob(os.path.join(glob.escape(local), "*.root")))
            if not found:
                raise ConfigError(f"input directory {spec} holds no *.root file")
            out += [prefix + f for f in found]
        elif os.path.exists(local):
            out.append(spec)
        elif glob.has_magic(local):
            found = sorted(glob.glob(local))
            if not found:
                raise ConfigError(f"input pattern {spec!r} matches no file")
            out += [prefix + f for f in found]
        else:
            out.append(spec)
    if not out:
        raise ConfigError("no input files given")
    for p in out:  # a name that is not UTF-8 (Latin-1 from an old disk or tarball) cannot go into a manifest
        try:
            p.encode("utf-8")
        except UnicodeEncodeError:
            shown = p.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            raise ConfigError(f"input {shown}: the file name is not UTF-8; rename it (e.g. convmv -f latin1 "
                              "-t utf8) so the manifest can record it") from None
    dupes = sorted(p for p, n in Counter(out).items() if n > 1)
    if dupes:
        raise ConfigError(f"input(s) given more than once: {dupes}")
    # the same local file under two spellings (./a.root and a.root, a link to it) would be converted twice
    real: dict[str, str] = {}
    for p in out:
        key = local_identity(p)
        if key is None:
            continue
        if key in real:
            raise ConfigError(f"inputs {real[key]!r} and {p!r} are the same file ({key}); give it once")
        real[key] = p
    return out
