"""Optional dependencies: one function per extra, each importing it or failing with the install line.

A leaf (imports only :mod:`pipeline.errors`): every layer may use it. The install line names both ways
muon-pipeline is installed: from a clone (``pip install -e '.[EXTRA]'``, run in the clone) and from a
package index where it is published (``pip install 'muon-pipeline[EXTRA]'``).

The checks use :func:`importlib.util.find_spec` where importing would be slow (torch, lightning) or
would start threads (the XRootD client): a missing module is found without loading the others.
"""

from __future__ import annotations

import importlib.util
from types import ModuleType

from .errors import ConfigError

#: The modules each extra of ``pyproject.toml`` provides: import name -> distribution name.
EXTRAS: dict[str, dict[str, str]] = {
    "dask": {"distributed": "distributed", "cryptography": "cryptography"},
    "grid": {"XRootD": "xrootd", "fsspec_xrootd": "fsspec-xrootd", "dask_jobqueue": "dask-jobqueue"},
    "remote": {"aiohttp": "aiohttp", "requests": "requests"},
    "train": {"torch": "torch", "lightning": "lightning", "matplotlib": "matplotlib", "scipy": "scipy"},
}


def install_line(extra: str) -> str:
    """The command that installs ``extra``: from a clone, and from a package index."""
    line = (f"pip install -e '.[{extra}]' in a clone of muon-pipeline "
            f"(pip install 'muon-pipeline[{extra}]' where it is published)")
    if extra == "train":  # pip's default torch on Linux is the multi-GB CUDA build
        line += "; for a CPU-only torch install it first from the CPU index (README: Install) or run `make setup`"
    return line


def version_install_line(version: str) -> str:
    """The command that installs muon-pipeline ``version`` from a clone: the release tag ``vVERSION``
    (the tag scheme of CHANGELOG.md), then an editable install."""
    return (f"in a clone of muon-pipeline: git checkout v{version} && pip install -e . "
            f"(pip install 'muon-pipeline=={version}' where it is published)")


def missing(modules: tuple[str, ...] | list[str]) -> list[str]:
    """The modules of ``modules`` that cannot be imported (found without importing them)."""
    out = []
    for name in modules:
        try:
            if importlib.util.find_spec(name) is None:
                out.append(name)
        except (ImportError, ValueError):  # a parent package missing, or a broken module spec
            out.append(name)
    return out


def require(extra: str, what: str, modules: tuple[str, ...] | list[str] | None = None) -> None:
    """Raise :class:`ConfigError` naming ``what`` needs, the missing modules and the install line,
    when any module of ``extra`` (or only ``modules`` of it) is missing."""
    names = EXTRAS[extra]
    gone = [names[m] for m in missing(list(names) if modules is None else modules)]
    if gone:
        listed = " and ".join(gone) if len(gone) <= 2 else ", ".join(gone[:-1]) + " and " + gone[-1]
        raise ConfigError(f"{what} needs {listed}, which {'is' if len(gone) == 1 else 'are'} not "
                          f"installed: {install_line(extra)}")


def train(what: str = "the training stage") -> None:
    """Check the ``[train]`` extra (torch, lightning, matplotlib, scipy) without importing it."""
    require("train", what)


def _import(extra: str, what: str, name: str) -> ModuleType:
    """Import ``name`` of ``extra``; an install that is there but broken (a failing import inside it) is
    reported like a missing one, with the import error and the install line."""
    import importlib

    require(extra, what, (name,))
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise ConfigError(f"{what} needs {EXTRAS[extra][name]}, which is installed but does not import "
                          f"({err}): {install_line(extra)}") from err


def dask(what: str = "--scheduler") -> ModuleType:
    """``distributed`` (the ``[dask]`` extra), imported."""
    return _import("dask", what, "distributed")


def tls(what: str = "--scheduler local") -> None:
    """The ``cryptography`` package that Dask's temporary TLS credentials need (``[dask]``), imported."""
    _import("dask", what + " (its temporary TLS credentials)", "cryptography")


def xrootd(what: str) -> None:
    """The XRootD client and fsspec-xrootd (the ``[grid]`` extra), checked without importing them."""
    require("grid", what, ("XRootD", "fsspec_xrootd"))


def jobqueue(what: str = "--scheduler slurm") -> ModuleType:
    """``dask_jobqueue`` (the ``[grid]`` extra), imported."""
    return _import("grid", what, "dask_jobqueue")


def remote(url: str) -> None:
    """The HTTP client packages (``[remote]``) that ``http://`` and ``https://`` inputs need."""
    require("remote", f"{url}: http(s)://")


def for_settings(scheduler: str | None) -> None:
    """Before anything is written: the extras a run with ``--scheduler scheduler`` needs are importable."""
    if scheduler == "slurm":
        jobqueue()
    elif scheduler == "local":
        dask("--scheduler local")
        tls()
    elif scheduler:
        dask()
