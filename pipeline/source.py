"""Reading raw dumps with uproot: the one module that opens ROOT files (with :mod:`pipeline.sizing`,
which reads basket metadata through :func:`read_arrays`).

The container is a TTree or an RNTuple (uproot reads both; an RNTuple's fields are named like
branches); where the fields are is the :class:`~pipeline.layout.SourceLayout`. :func:`inspect_input`
checks a file up front (tree, branches, jaggedness, dtypes) so a bad file fails before any work is
done, with a message that names the file and what is wrong; :func:`read_chunk` turns an entry range
into an :class:`~pipeline.chunk.EventChunk` of flat numpy arrays. Remote reads follow the policy of
:mod:`pipeline.remote` (timeout, error text).
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import numpy as np

from .baskets import read_groups
from .chunk import EventChunk
from .errors import InputError, one_line
from .format import InputInfo
from .inputs import is_local
from .layout import SourceLayout, branch_candidates, file_branch
from .remote import is_timeout, read_error_text, remote_timeout
from .schema import LEVELS, Schema


def raw_fields(schema: Schema) -> dict[str, list]:
    """The schema's raw fields grouped by level."""
    return {level: [f for f in schema.level(level) if f.source] for level in LEVELS}


#: ROOT class names of the containers read: both give entries of branches (TTree) or fields (RNTuple).
_TREE_CLASSES = ("TTree", "TNtuple", "TNtupleD")
_RNTUPLE_CLASSES = ("ROOT::RNTuple", "ROOT::Experimental::RNTuple")


def is_rntuple(obj) -> bool:
    """True for an uproot RNTuple (its fields are read like TTree branches, by the same names)."""
    return getattr(obj, "classname", "") in _RNTUPLE_CLASSES


def _container(obj) -> str:
    return "RNTuple" if is_rntuple(obj) else "TTree"


def _remote_options(path: str) -> dict:
    """uproot.open options for a remote ``path``. root://: the [grid] packages must be there (else a
    ConfigError with the install hint), the XRootD client gets the remote timeout for every request,
    and uproot's own XRootD source reads (fsspec-xrootd refuses the numpy offsets that sizing a
    '100 MB' step passes); its timeout is in whole seconds."""
    from . import grid

    if not grid.is_xrootd(path):
        if path.startswith(("http://", "https://")):
            from . import extras

            extras.remote(path)
        return {"timeout": remote_timeout()}
    import uproot

    grid.require_xrootd(path)
    return {"timeout": grid.configure_timeout(remote_timeout()), "handler": uproot.XRootDSource}


def open_tree(path: str, layout: SourceLayout):
    """Open ``path`` and return (file, its TTree or RNTuple ``layout.tree``), or raise an InputError
    that says why not."""
    import uproot

    if is_local(path) and not Path(path.removeprefix("file://")).exists():
        raise InputError("no such file", file=path)
    options = {} if is_local(path) else _remote_options(path)
    try:
        # A local path goes to uproot as a Path: a str is split at ".root:" into file and object
        # (``dump.root:v2.root`` would open ``dump.root``); a Path never is.
        # array_cache=None: each entry range is read once, so uproot's per-file array cache (100 MB by
        # default) only held memory: with every unit opening its file again, a serial convert grew by
        # ~100 MB per unit until a garbage collection freed the closed files' caches.
        if is_local(path):
            f = uproot.open(Path(path.removeprefix("file://")), array_cache=None)
        else:
            f = uproot.open(path, array_cache=None, **options)
    except Exception as err:  # uproot raises many types for a damaged file
        raise InputError(f"cannot open as a ROOT file ({read_error_text(err)})", file=path) from err
    try:
        obj = f[layout.tree]
    except Exception:
        trees = [k.split(";")[0] for k, c in f.classnames().items() if c in _TREE_CLASSES + _RNTUPLE_CLASSES]
        hint = f"; the file has {trees}" if trees else "; the file has no TTree or RNTuple"
        f.close()
        raise InputError(f"no tree {layout.tree!r}{hint} (use --tree or a layout file)", file=path) from None
    try:
        usable = hasattr(obj, "num_entries") and hasattr(obj, "arrays")
        if usable:
            obj.keys()  # an RNTuple reads its footer (field list, entry count) here
    except Exception as err:  # a damaged or cut footer: uproot raises OSError, ValueError, ...
        why = _truncated(f, path) or f"cannot read {layout.tree!r} ({read_error_text(err)})"
        f.close()
        raise InputError(why, file=path) from err
    if not usable:
        f.close()
        raise InputError(f"{layout.tree!r} is a {type(obj).__name__}, not a TTree or RNTuple", file=path)
    return f, obj


def _truncated(f, path: str) -> str | None:
    """The message for a local file shorter than its header says, else None."""
    if not is_local(path):
        return None
    size = os.path.getsize(path.removeprefix("file://"))
    if size < int(f.file.fEND):
        return f"file is truncated: its header says {int(f.file.fEND)} bytes, it has {size}"
    return None


def inspect_input(path: str, layout: SourceLayout, schema: Schema, with_tree=None):
    """Check an input completely enough that reading it can only fail on damaged baskets (tree, branches,
    jaggedness, dtypes), then call ``with_tree(tree)`` while the file is still open (the planner sizes
    work units from the tree's metadata). Returns ``(info, with_tree(tree) or None)``."""
    f, tree = open_tree(path, layout)
    try:
        info = _check_tree(f, tree, path, layout, schema)
        return info, (with_tree(tree) if with_tree is not None else None)
    except InputError as err:
        err.entries = int(tree.num_entries)  # counted as skipped entries when the file is skipped
        raise
    finally:
        f.close()


def _nearest(name: str, names: set[str]) -> str:
    """Up to three existing names closest to ``name`` (case and separators ignored), for messages."""
    def norm(s: str) -> str:
        return s.lower().replace("_", "").replace(".", "").replace("/", "")

    by_norm: dict[str, str] = {}
    for n in sorted(names):
        by_norm.setdefault(norm(n), n)
    near = difflib.get_close_matches(norm(name), list(by_norm), n=3, cutoff=0.5)
    return f"nearest: {', '.join(repr(by_norm[n]) for n in near)}" if near else "no similar name"


def _no_branch(raw: str, branch: str, kind: str, names: set[str]) -> str:
    if branch == raw:
        return (f"the layout maps no branch to {raw!r}: the {kind} has no branch of that name ({_nearest(raw, names)}); "
                f"map one under 'branches:' or give a constant under 'fill:' in a --layout file")
    return f"the layout maps {raw!r} to branch {branch!r}, which the {kind} does not have ({_nearest(branch, names)})"


def _pick(arrays: dict, name: str):
    """``name`` from a ``how=dict`` read: an RNTuple read of ``a.b`` comes back as record ``a``
    with field ``b``."""
    if name in arrays:
        return arrays[name]
    head, *rest = name.split(".")
    out = arrays[head]
    for part in rest:
        out = out[part]
    return out


def read_arrays(tree, branches: list[str], entry_start: int, entry_stop: int,
                budget: int | None = None) -> dict:
    """``{branch: awkward array}`` of entries [entry_start, entry_stop), for a TTree or an RNTuple.

    uproot decompresses whole baskets and holds those of every branch of one ``arrays`` call at once,
    so a few entries inside one huge basket (a file whose last events are 100 × larger, written in
    baskets of a fixed entry count) cost the whole basket of every branch. With a ``budget`` (bytes),
    the branches are read in groups whose overlapping baskets hold at most ``budget`` uncompressed
    bytes (:func:`~pipeline.baskets.read_groups`; a branch alone may exceed it): peak memory is then the
    step's arrays plus at most ``max(budget, one branch's baskets)``. The arrays are the same whatever the
    grouping. A name the tree lacks is read under its one spelling with ``.`` or ``/`` (:func:`file_branches`).
    """
    in_file = file_branches(tree, branches)
    out: dict = {}
    for group in read_groups(tree, list(dict.fromkeys(in_file.values())), entry_start, entry_stop, budget):
        arrays = tree.arrays(group, entry_start=entry_start, entry_stop=entry_stop, library="ak", how=dict)
        out.update({b: _pick(arrays, b) for b in group})
        del arrays  # the baskets of this group go before the next group's are read
    return {b: out[name] for b, name in in_file.items()}


def file_branches(tree, branches: list[str]) -> dict[str, str]:
    """``{branch: the name that holds it in tree}``: the layout's name, or its one spelling with ``.``
    or ``/`` (:func:`~pipeline.layout.file_branch`: ``spacePoint_time`` is ``spacePoint.time``)."""
    names = set(tree.keys())
    return {b: file_branch(b, names) for b in branches}


def _branch_types(tree, branches: list[str], path: str, fields: dict[str, str]) -> dict[str, tuple]:
    """``{branch: (jagged, numpy dtype or None, description)}`` without reading any entry: from the
    interpretation of a TTree branch, from the awkward form of an RNTuple field (its C++ type as
    uproot maps it; a type uproot cannot map is reported by name)."""
    out = {}
    if not is_rntuple(tree):
        for b in branches:
            interp = tree[b].interpretation
            dtype = getattr(getattr(interp, "content", interp), "to_dtype", None)
            out[b] = (type(interp).__name__ == "AsJagged", None if dtype is None else np.dtype(dtype), str(interp))
        return out
    import uproot

    for b in branches:
        field_ = tree[b]
        try:
            form, names = field_.to_akform()
            out[b] = _form_type(form, names)
        except Exception as err:  # an RNTuple field type this uproot cannot read
            raise InputError(f"uproot {uproot.__version__} cannot read RNTuple field {b!r} of type "
                             f"{getattr(field_, 'typename', '?')} ({one_line(err)})", file=path,
                             field=fields.get(b)) from err
    return out


def _form_type(form, names: list[str]) -> tuple[bool, np.dtype | None, str]:
    """(jagged, dtype, description) of the field ``names`` (a path through records: a collection of
    records ``spacePoint`` with member ``time`` is ``['spacePoint', 'time']``) of an awkward form.
    One list level is jagged; numbers without a list are one value per entry; anything else has no dtype."""
    import awkward as ak

    lists = (ak.forms.ListOffsetForm, ak.forms.ListForm)
    depth, node = 0, form
    for name in names:
        while isinstance(node, lists):
            depth, node = depth + 1, node.content
        node = node.content(name)
    desc = "var * " * depth + str(node.type)
    while isinstance(node, lists):
        depth, node = depth + 1, node.content
    numeric = isinstance(node, ak.forms.NumpyForm) and node.inner_shape == () and depth <= 1
    return depth == 1, np.dtype(node.primitive) if numeric else None, desc


def _check_tree(f, tree, path: str, layout: SourceLayout, schema: Schema) -> InputInfo:
    """Branches present, jagged where they should be, numeric of the right kind; not truncated."""
    kind = _container(tree)
    names = set(tree.keys())
    groups = raw_fields(schema)
    read = [(level, fld) for level, fields in groups.items() for fld in fields if fld.source not in layout.fill]
    for _level, fld in read:
        branch = layout.branch(fld.source)
        found = [] if branch in names else branch_candidates(branch, names)
        if len(found) > 1:
            raise InputError(f"branch {branch!r} is not in the {kind}, and {len(found)} names could be it: {found}; "
                             f"name one in a --layout file (branches: {{{fld.source}: ...}})", file=path,
                             field=fld.name)
        if branch not in names and not found:
            raise InputError(_no_branch(fld.source, branch, kind, names), file=path, field=fld.name)
    in_file = {fld.source: file_branch(layout.branch(fld.source), names) for _, fld in read}
    fields_of = {in_file[fld.source]: fld.name for _, fld in read}
    types = _branch_types(tree, list(fields_of), path, fields_of)
    recorded = {}
    for level, fld in read:
        branch = in_file[fld.source]
        jagged, dtype, desc = types[branch]
        if (level != "event") != jagged:
            want = "jagged (one value per hit/muon)" if level != "event" else "one value per event"
            raise InputError(f"branch {branch!r} should be {want}, found {desc}", file=path, field=fld.name)
        if dtype is None or dtype.kind not in "fiub":
            raise InputError(f"branch {branch!r} has type {desc}, expected numbers for {fld.dtype}",
                             file=path, field=fld.name)
        recorded[fld.name] = {"branch": branch, "dtype": str(dtype)}
    if tree.num_entries == 0:
        raise InputError(f"{kind} {layout.tree!r} is empty (0 entries)", file=path)
    truncated = _truncated(f, path)
    if truncated:
        raise InputError(truncated, file=path)
    size = os.path.getsize(path.removeprefix("file://")) if is_local(path) else int(f.file.fEND)
    return InputInfo(path=path, size=size, entries=int(tree.num_entries), uuid=str(f.file.uuid),
                     container=kind, branches=recorded)


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


def _int_to_float_inexact(values: np.ndarray, cast: np.ndarray) -> np.ndarray:
    """Which integers ``values`` the float array ``cast`` does not hold exactly (|v| > 2**mantissa
    only; checked through float64, which holds every float32 and every integer the cast produced)."""
    inexact = np.zeros(values.shape, dtype=bool)
    limit = 2 ** (np.finfo(cast.dtype).nmant + 1)
    big = np.flatnonzero((values > limit) | (values < -limit))
    if len(big):
        c64 = cast[big].astype(np.float64)
        info = np.iinfo(values.dtype)
        inside = (c64 >= float(info.min)) & (c64 < float(info.max) + 1.0)  # 2**63 or 2**64 exactly
        back = np.where(inside, c64, 0.0).astype(values.dtype)
        inexact[big] = ~inside | (back != values[big])
    return inexact


def _cast(values: np.ndarray, fld, path: str, branch: str, start: int,
          offsets: np.ndarray | None = None, may_round: bool = False) -> tuple[np.ndarray, int]:
    """Cast to the schema dtype; returns (values, how many were rounded).

    * integers → integer field: exact or refused; the check is by value range, not by a round trip
      (a same-width unsigned → signed cast wraps, uint32 3 000 000 000 → −1 294 967 296, and wraps back);
    * floats → integer field: whole numbers in range only (a charge stored as ±1.0), never rounded;
    * floats or integers → float field: a value the target holds exactly is stored as is; any other
      is refused unless ``may_round``, then stored correctly rounded (IEEE round-to-nearest-even, what
      numpy's cast does) and counted. A finite value beyond the target's range is always refused
      (rounding would make it ±inf); NaN and ±inf pass here (the invalid-data policy decides).

    The error names the entry holding the first bad value (``offsets`` maps a flat index to its
    event for jagged branches) and the value.
    """
    want, have = np.dtype(fld.dtype), values.dtype
    if have == want:
        return values, 0

    def fail(mask: np.ndarray, why: str):
        bad = int(np.flatnonzero(mask)[0])
        entry = start + (int(np.searchsorted(offsets, bad, side="right")) - 1 if offsets is not None else bad)
        raise InputError(f"branch {branch!r} has dtype {have} and value {values[bad].item()!r} " + why(bad),
                         file=path, entry=entry, field=fld.name)

    if want.kind in "iu":
        lo, hi = np.iinfo(want).min, np.iinfo(want).max
        if have.kind == "f":  # whole numbers only (a charge stored as ±1.0): never rounded to an integer
            v64 = values.astype(np.float64)
            with np.errstate(invalid="ignore"):
                fail_mask = ~np.isfinite(v64) | (v64 != np.trunc(v64))
            if fail_mask.any():
                fail(fail_mask, lambda i: "is not a whole number; an integer field takes whole numbers only "
                                          "(never rounded)")
            outside = (v64 < float(lo)) | (v64 >= float(hi) + 1.0)  # both bounds exact in float64
            if outside.any():
                fail(outside, lambda i: f"is outside the {want} range [{lo}, {hi}]")
            return values.astype(want), 0
        info = np.iinfo(have) if have.kind in "iu" else np.iinfo(np.uint8)
        bad_mask = np.zeros(values.shape, dtype=bool)
        if info.max > hi:
            bad_mask |= values > np.asarray(hi).astype(have)
        if info.min < lo:
            bad_mask |= values < np.asarray(lo).astype(have)
        if bad_mask.any():
            fail(bad_mask, lambda i: f"is outside the {want} range [{lo}, {hi}] (never converted: it is not representable as {want})")
        return values.astype(want), 0
    with np.errstate(over="ignore", invalid="ignore"):
        cast = values.astype(want)
    if have.kind == "f":
        finite = np.isfinite(values)
        overflow = finite & ~np.isfinite(cast)
        with np.errstate(invalid="ignore"):
            inexact = finite & (cast.astype(have) != values)
    else:
        overflow = np.zeros(values.shape, dtype=bool)  # |int64| < 2**64 < float32 max
        inexact = _int_to_float_inexact(values, cast)
    if overflow.any():
        fail(overflow, lambda i: f"is outside the {want} range ±{np.finfo(want).max.item():g} (never rounded to inf)")
    n_inexact = int(inexact.sum())
    if n_inexact and not may_round:
        fail(inexact, lambda i: (f"is not representable as {want} (nearest {cast[i].item()!r}); store correctly "
                                 f"rounded values with --precision round or 'precision:' in a --layout file"))
    return cast, n_inexact


def _failing_branch(tree, branches: list[str], entry_start: int, entry_stop: int) -> str | None:
    """After a failed multi-branch read: the first branch that fails alone (a damaged basket is one
    branch's), so the error can name it; None if each reads alone (e.g. a remote timeout)."""
    for branch, name in file_branches(tree, branches).items():
        try:
            tree[name].array(entry_start=entry_start, entry_stop=entry_stop, library="np")
        except Exception:  # uproot raises many types for a damaged basket
            return branch
    return None


def read_chunk(tree, path: str, layout: SourceLayout, schema: Schema, entry_start: int,
               entry_stop: int, budget: int | None = None) -> EventChunk:
    """Read entries [entry_start, entry_stop) into an EventChunk of flat, schema-typed arrays.

    ``tree`` is a TTree or an RNTuple. Filled fields (``layout.fill``) become constant columns;
    ``chunk.rounded`` counts, per field, the values stored correctly rounded (``layout.precision``).
    ``budget``: bytes of baskets decompressed at once (:func:`read_arrays`; None: all branches at once).
    """
    groups = raw_fields(schema)
    branches = layout.read_branches(schema)
    try:
        arrays = read_arrays(tree, branches, entry_start, entry_stop, budget)
    except Exception as err:
        # a silent server would time out once per branch: only a local failure is worth the probe
        branch = None if is_timeout(err) else _failing_branch(tree, branches, entry_start, entry_stop)
        where = f" of branch {branch!r}" if branch else ""
        raise InputError(f"cannot read entries {entry_start}-{entry_stop}{where} ({read_error_text(err)})",
                         file=path, entry=entry_start, field=branch) from err
    rounded: dict[str, int] = {}

    def level_arrays(level: str) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
        offsets, out = None, {}
        for fld in groups[level]:
            if fld.source in layout.fill:
                continue
            branch = layout.branch(fld.source)
            if level == "event":
                out[fld.name], n = _cast(np.asarray(arrays[branch]), fld, path, branch, entry_start,
                                         may_round=layout.rounds(fld.source))
            else:
                off, content = _flat(arrays[branch], path, branch, entry_start)
                if offsets is None:
                    offsets, first = off, branch
                elif not np.array_equal(off, offsets):
                    counts_a, counts_b = np.diff(offsets), np.diff(off)
                    ev = int(np.flatnonzero(counts_a != counts_b)[0]) if len(counts_a) == len(counts_b) else 0
                    raise InputError(f"branch {branch!r} has {counts_b[ev]} values but {first!r} has "
                                     f"{counts_a[ev]} in the same event", file=path, entry=entry_start + ev,
                                     field=fld.name)
                out[fld.name], n = _cast(content, fld, path, branch, entry_start, off,
                                         may_round=layout.rounds(fld.source))
            if n:
                rounded[fld.name] = n
        size = entry_stop - entry_start if level == "event" else int(offsets[-1])
        for fld in groups[level]:  # constants, in schema order after the branches read
            if fld.source in layout.fill:
                out[fld.name] = np.full(size, layout.fill[fld.source], dtype=fld.dtype)
        return offsets, {f.name: out[f.name] for f in groups[level]}

    _, event = level_arrays("event")
    hit_offsets, hits = level_arrays("hit")
    muon_offsets, muons = level_arrays("muon")
    event["source_entry"] = np.arange(entry_start, entry_stop, dtype=np.int64)
    return EventChunk(source_file=path, event=event, hit_offsets=hit_offsets, hits=hits,
                      muon_offsets=muon_offsets, muons=muons, rounded=rounded)
