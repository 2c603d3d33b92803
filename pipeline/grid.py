"""Grid storage: XRootD (``root://``) inputs and outputs.

uproot reads ``root://`` with its own XRootD source; listing and writing go through fsspec-xrootd. Both
call the XRootD client. Three things make it behave like local storage here:

* the client's request, stream and connection timeouts are the tool's ``--remote-timeout`` (set
  with the client's ``EnvPutInt``, checked every second): a server that stops answering is
  an "Operation expired" error naming the file and entry range, not a hang;
* a directory or a glob on the server expands like a local one (:func:`expand`): an existing path is
  taken literally, a directory gives its ``*.root`` sorted, a pattern its sorted matches;
* an output written to ``root://`` is renamed into place with the XRootD ``mv`` (``kXR_mv``), which the
  data server performs with ``rename(2)`` on its file system: atomic, so no partial shard is ever
  visible under its final name (:mod:`pipeline.storage`).
"""

from __future__ import annotations

import math
import os
import posixpath

from . import extras
from .errors import ConfigError, InputError
from .remote import read_error_text, remote_timeout

SCHEMES = ("root://",)


def is_xrootd(url: str) -> bool:
    """True for a ``root://`` URL."""
    return str(url).startswith(SCHEMES)


def require_xrootd(url: str) -> None:
    """Raise ConfigError with the install line when the XRootD client or fsspec-xrootd is missing."""
    extras.xrootd(f"{url}: root://")


def configure_timeout(seconds: float) -> int:
    """Make every XRootD request of this process give up after ``seconds`` of silence (whole seconds,
    rounded up; returned), checked every second.

    Set through the client's ``EnvPutInt``, so that a later call with another value takes effect (the
    client never lets ``EnvPutInt`` override a value it imported from an ``XRD_*`` environment
    variable: a user's own ``XRD_REQUESTTIMEOUT`` wins). Only the check interval is an environment
    variable, as the client reads it once, when it starts.
    """
    whole = max(1, math.ceil(seconds))
    os.environ.setdefault("XRD_TIMEOUTRESOLUTION", "1")
    from XRootD.client import EnvPutInt

    for name in ("RequestTimeout", "StreamTimeout", "ConnectionWindow"):
        EnvPutInt(name, whole)
    EnvPutInt("ConnectionRetry", 1)
    return whole


def filesystem(url: str):
    """(fsspec XRootD filesystem, path on the server) for ``url``, with the remote timeout set."""
    import fsspec

    require_xrootd(url)
    return fsspec.core.url_to_fs(url, timeout=configure_timeout(remote_timeout()))


def _host_prefix(url: str) -> str:
    """``root://host:port/`` of a URL (the path that follows starts with ``/``)."""
    head = url[len("root://"):]
    return "root://" + head.split("/", 1)[0] + "/"


def expand(spec: str) -> list[str]:
    """A ``root://`` file, directory (its ``*.root``, sorted) or glob, as a list of ``root://`` URLs.

    Same rules as local inputs: an existing path is taken literally even when it looks like a pattern;
    only a path that does not exist is expanded as a glob. Raises ConfigError for a directory without
    ``*.root`` or a pattern that matches nothing, InputError naming the URL when the server fails or
    stays silent longer than the remote timeout; a missing plain file is returned as given and fails
    when opened, naming the file.
    """
    import glob as _glob

    fs, path = filesystem(spec)
    prefix = _host_prefix(spec)

    def url(p: str) -> str:
        return prefix + "/" + p.lstrip("/")

    try:
        if fs.exists(path):  # raises on a silent server (fsspec's isdir would answer False)
            if fs.info(path)["type"] != "directory":
                return [spec]
            names = sorted(posixpath.basename(e["name"].rstrip("/")) for e in fs.ls(path, detail=True)
                           if e["type"] == "file" and e["name"].endswith(".root"))
            if not names:
                raise ConfigError(f"input directory {spec} holds no *.root file")
            return [url(f"{path.rstrip('/')}/{n}") for n in names]  # listed, not globbed: x[1]/ is a name
        if not _glob.has_magic(path):
            return [spec]  # fails when opened, naming the file
        found = sorted(fs.glob(path))
    except (ConfigError, InputError):
        raise
    except Exception as err:  # the XRootD client raises OSError with the server's message
        raise InputError(f"cannot list ({read_error_text(err)})", file=spec) from err
    if not found:
        raise ConfigError(f"input pattern {spec!r} matches no file")
    return [url(p) for p in found]
