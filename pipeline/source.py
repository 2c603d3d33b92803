"""The raw input side: where branches are (a declarative layout) and reading them with uproot.

Everything that knows about ROOT lives here. ``open_input`` checks a file up front (tree,
branches, jaggedness, dtypes) so a bad file fails before any work is done, with a message that
names the file and what is wrong; ``read_chunk`` turns an entry range into an
:class:`~pipeline.chunk.EventChunk` of flat numpy arrays.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .chunk import EventChunk
from .errors import ConfigError, InputError, one_line
from .schema import Schema

DEFAULT_TREE = "MuonHitDump"
_LAYOUT_KEYS = {"tree", "branches"}


@dataclass(frozen=True)
class SourceLayout:
    """Tree name and raw-field → branch-name mapping; identity mapping is the raw format."""

    tree: str = DEFAULT_TREE
    branches: dict[str, str] = field(default_factory=dict)

    def branch(self, raw_name: str) -> str:
        return self.branches.get(raw_name, raw_name)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, schema: Schema) -> SourceLayout:
        import yaml

        try:
            doc = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"cannot read layout file {path}: {err}") from err
        if not isinstance(doc, dict):
            raise ConfigError(f"layout file {path}: expected a mapping with keys {sorted(_LAYOUT_KEYS)}")
        unknown = set(doc) - _LAYOUT_KEYS
        if unknown:
            raise ConfigError(f"layout file {path}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_LAYOUT_KEYS)}")
        branches = doc.get("branches") or {}
        if not isinstance(branches, dict) or not all(isinstance(v, str) for v in branches.values()):
            raise ConfigError(f"layout file {path}: 'branches' must map raw field names to branch names")
        raw = {f.source for f in schema.fields if f.source}
        bad = sorted(set(branches) - raw)
        if bad:
            raise ConfigError(f"layout file {path}: {bad} are not raw fields of the schema; known: {sorted(raw)}")
        tree = doc.get("tree", DEFAULT_TREE)
        if not isinstance(tree, str):
            raise ConfigError(f"layout file {path}: 'tree' must be a string")
        return cls(tree=tree, branches=dict(branches))

    def to_dict(self) -> dict:
        return {"tree": self.tree, "branches": dict(self.branches)}


@dataclass(frozen=True)
class InputInfo:
    """Identity of an input file: what the resume key and the manifest record."""

    path: str
    size: int
    entries: int
    uuid: str

    def to_dict(self) -> dict:
        return {"path": self.path, "size": self.size, "entries": self.entries, "uuid": self.uuid}


def raw_fields(schema: Schema) -> dict[str, list]:
    """The schema's raw fields grouped by level."""
    return {level: [f for f in schema.level(level) if f.source] for level in ("event", "hit", "muon")}


def _is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


#: Seconds a remote server may stay silent before a read fails (``--remote-timeout``; the CLI exports it
#: as ``MUON_PIPELINE_REMOTE_TIMEOUT`` so forked workers inherit it). Without it a server that stops
#: answering mid-read hung the conversion forever.
DEFAULT_REMOTE_TIMEOUT = 60.0


def remote_timeout() -> float:
    try:
        return float(os.environ.get("MUON_PIPELINE_REMOTE_TIMEOUT", DEFAULT_REMOTE_TIMEOUT))
    except ValueError:
        return DEFAULT_REMOTE_TIMEOUT


def _is_timeout(err: BaseException) -> bool:
    text = f"{err!r} {err}"  # fsspec wraps it oddly; the XRootD client says one of the last two
    return isinstance(err, TimeoutError) or any(m in text for m in ("TimeoutError", "Operation expired",
                                                                    "Socket timeout"))


def read_error_text(err: BaseException) -> str:
    """One line for a read error; a remote timeout says so plainly."""
    if _is_timeout(err):
        return f"no answer from the server within {remote_timeout():g} s (--remote-timeout)"
    return one_line(err)


def _remote_options(path: str) -> dict:
    """uproot.open options for a remote ``path``. root://: the [grid] packages must be there (else a
    ConfigError with the install hint), the XRootD client gets the remote timeout for every request,
    and uproot's own XRootD source reads (fsspec-xrootd refuses the numpy offsets that sizing a
    '100 MB' step passes); its timeout is in whole seconds."""
    from . import grid

    if not grid.is_xrootd(path):
        return {"timeout": remote_timeout()}
    import uproot

    grid.require_xrootd(path)
    return {"timeout": grid.configure_timeout(remote_timeout()), "handler": uproot.XRootDSource}


def open_tree(path: str, layout: SourceLayout):
    """Open ``path`` and return its tree, or raise an InputError that says why not."""
    import uproot

    if _is_local(path) and not Path(path.removeprefix("file://")).exists():
        raise InputError("no such file", file=path)
    options = {} if _is_local(path) else _remote_options(path)
    try:
        # A local path goes to uproot as a Path: a str is split at ".root:" into file and object
        # (``dump.root:v2.root`` would open ``dump.root``); a Path never is.
        if _is_local(path):
            f = uproot.open(Path(path.removeprefix("file://")))
        else:
            f = uproot.open(path, **options)
    except Exception as err:  # uproot raises many types for a damaged file
        raise InputError(f"cannot open as a ROOT file ({read_error_text(err)})", file=path) from err
    try:
        obj = f[layout.tree]
    except Exception:
        trees = [k.split(";")[0] for k, c in f.classnames().items() if c in ("TTree", "TNtuple")]
        hint = f"; the file has {trees}" if trees else "; the file has no TTree"
        raise InputError(f"no tree {layout.tree!r}{hint} (use --tree or a layout file)", file=path) from None
    if not hasattr(obj, "num_entries") or not hasattr(obj, "arrays"):
        raise InputError(f"{layout.tree!r} is a {type(obj).__name__}, not a TTree", file=path)
    return f, obj


def open_input(path: str, layout: SourceLayout, schema: Schema) -> InputInfo:
    """Check an input completely enough that reading it can only fail on damaged baskets."""
    f, tree = open_tree(path, layout)
    try:
        return _check_tree(f, tree, path, layout, schema)
    except InputError as err:
        err.entries = int(tree.num_entries)  # counted as skipped entries when the file is skipped
        raise
    finally:
        f.close()


def _check_tree(f, tree, path: str, layout: SourceLayout, schema: Schema) -> InputInfo:
    """Branches present, jagged where they should be, numeric of the right kind; not truncated."""
    names = set(tree.keys())
    groups = raw_fields(schema)
    for level, fields in groups.items():
        for fld in fields:
            branch = layout.branch(fld.source)
            if branch not in names:
                near = difflib.get_close_matches(branch, sorted(names), n=3)
                hint = f"; did you mean {near}?" if near else ""
                raise InputError(f"missing branch {branch!r}{hint}", file=path, field=fld.name)
            interp = tree[branch].interpretation
            jagged = type(interp).__name__ == "AsJagged"
            if (level != "event") != jagged:
                want = "jagged (one value per hit/muon)" if level != "event" else "one value per event"
                raise InputError(f"branch {branch!r} should be {want}, found {interp}", file=path, field=fld.name)
            dtype = getattr(getattr(interp, "content", interp), "to_dtype", None)
            if dtype is None or _kind(np.dtype(dtype)) != _kind(np.dtype(fld.dtype)):
                raise InputError(f"branch {branch!r} has type {dtype}, expected {fld.dtype}",
                                 file=path, field=fld.name)
    if tree.num_entries == 0:
        raise InputError(f"tree {layout.tree!r} is empty (0 entries)", file=path)
    if _is_local(path):
        size = os.path.getsize(path.removeprefix("file://"))
        if size < int(f.file.fEND):
            raise InputError(f"file is truncated: its header says {int(f.file.fEND)} bytes, it has {size}",
                             file=path)
    else:
        size = int(f.file.fEND)
    return InputInfo(path=path, size=size, entries=int(tree.num_entries), uuid=str(f.file.uuid))


def _kind(dtype: np.dtype) -> str:
    return {"f": "float", "i": "int", "u": "int", "b": "int"}.get(dtype.kind, dtype.kind)


def _flat(array, path: str, branch: str, start: int) -> tuple[np.ndarray, np.ndarray]:
    """(offsets starting at 0, flat content) of a jagged awkward array, without copies if possible."""
    import awkward as ak

    layout = ak.to_layout(array)
    if hasattr(layout, "offsets") and hasattr(layout, "content") and hasattr(layout.content, "data"):
        offsets = np.asarray(layout.offsets, dtype=np.int64)
        content = np.asarray(layout.content.data)[offsets[0]: offsets[-1]]
        return offsets - offsets[0], content
    if hasattr(layout, "starts"):  # ListArray: normalise through awkward
        counts = np.asarray(ak.num(array, axis=1), dtype=np.int64)
        return np.concatenate([[0], np.cumsum(counts)]), ak.to_numpy(ak.flatten(array))
    raise InputError(f"branch {branch!r} is not a jagged numeric array", file=path, entry=start)


def _cast(values: np.ndarray, fld, path: str, branch: str, start: int,
          offsets: np.ndarray | None = None) -> np.ndarray:
    """Cast to the schema dtype only when it is exact: a raw value must survive bit-for-bit.

    Integers are checked by value range, not by a round trip: a same-width unsigned → signed cast
    wraps (uint32 3 000 000 000 → −1 294 967 296) and wraps back, so a round trip cannot see it.
    The error names the entry holding the first bad value (``offsets`` maps a flat index to its
    event for jagged branches).
    """
    want = np.dtype(fld.dtype)
    if values.dtype == want:
        return values
    if values.dtype.kind in "iub" and want.kind in "iu":
        lo, hi = np.iinfo(want).min, np.iinfo(want).max
        have = np.iinfo(values.dtype) if values.dtype.kind in "iu" else np.iinfo(np.uint8)
        bad_mask = np.zeros(values.shape, dtype=bool)
        if have.max > hi:
            bad_mask |= values > np.asarray(hi).astype(values.dtype)
        if have.min < lo:
            bad_mask |= values < np.asarray(lo).astype(values.dtype)
        cast = values.astype(want)
    else:
        cast = values.astype(want)
        back = cast.astype(values.dtype)
        bad_mask = ~((back == values) | (np.isnan(back) & np.isnan(values)) if values.dtype.kind == "f"
                     else back == values)
    if bad_mask.any():
        bad = int(np.flatnonzero(bad_mask)[0])
        entry = start + (int(np.searchsorted(offsets, bad, side="right")) - 1 if offsets is not None else bad)
        raise InputError(f"branch {branch!r} has dtype {values.dtype} and value {values[bad]!r} is not "
                         f"representable as {want}", file=path, entry=entry, field=fld.name)
    return cast


def _failing_branch(tree, branches: list[str], entry_start: int, entry_stop: int) -> str | None:
    """After a failed multi-branch read: the first branch that fails alone (a damaged basket is one
    branch's), so the error can name it; None if each reads alone (e.g. a remote timeout)."""
    for branch in branches:
        try:
            tree[branch].array(entry_start=entry_start, entry_stop=entry_stop, library="np")
        except Exception:  # uproot raises many types for a damaged basket
            return branch
    return None


def read_chunk(tree, path: str, layout: SourceLayout, schema: Schema, entry_start: int,
               entry_stop: int) -> EventChunk:
    """Read entries [entry_start, entry_stop) into an EventChunk of flat, schema-typed arrays."""
    groups = raw_fields(schema)
    branches = [layout.branch(f.source) for fields in groups.values() for f in fields]
    try:
        arrays = tree.arrays(branches, entry_start=entry_start, entry_stop=entry_stop, library="ak", how=dict)
    except Exception as err:
        # a silent server would time out once per branch: only a local failure is worth the probe
        branch = None if _is_timeout(err) else _failing_branch(tree, branches, entry_start, entry_stop)
        where = f" of branch {branch!r}" if branch else ""
        raise InputError(f"cannot read entries {entry_start}-{entry_stop}{where} ({read_error_text(err)})",
                         file=path, entry=entry_start, field=branch) from err

    def level_arrays(level: str) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
        offsets, out = None, {}
        for fld in groups[level]:
            branch = layout.branch(fld.source)
            if level == "event":
                out[fld.name] = _cast(np.asarray(arrays[branch]), fld, path, branch, entry_start)
                continue
            off, content = _flat(arrays[branch], path, branch, entry_start)
            if offsets is None:
                offsets, first = off, branch
            elif not np.array_equal(off, offsets):
                counts_a, counts_b = np.diff(offsets), np.diff(off)
                ev = int(np.flatnonzero(counts_a != counts_b)[0]) if len(counts_a) == len(counts_b) else 0
                raise InputError(f"branch {branch!r} has {counts_b[ev]} values but {first!r} has "
                                 f"{counts_a[ev]} in the same event", file=path, entry=entry_start + ev,
                                 field=fld.name)
            out[fld.name] = _cast(content, fld, path, branch, entry_start, off)
        return offsets, out

    _, event = level_arrays("event")
    hit_offsets, hits = level_arrays("hit")
    muon_offsets, muons = level_arrays("muon")
    event["source_entry"] = np.arange(entry_start, entry_stop, dtype=np.int64)
    return EventChunk(source_file=path, event=event, hit_offsets=hit_offsets, hits=hits,
                      muon_offsets=muon_offsets, muons=muons)
