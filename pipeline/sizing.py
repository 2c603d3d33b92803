"""Sizing work by bytes: work units, row groups and read steps cut from the events' actual sizes.

An entry count is a poor memory bound: a raw pile-up dump holds ~6,000 hits per event where a
filtered dump holds ~60, and sizes vary tenfold within one file. So every cut here is made on the
*estimated in-memory bytes of the raw columns*: per entry, ``n_hits × (bytes of the raw hit fields)
+ n_muons × (bytes of the raw muon fields) + (bytes of the raw event fields)``, with each field's
schema dtype (float32 → 4 bytes, ...). That is the same quantity uproot's ``step_size="100 MB"``
estimates, but per entry instead of averaged over a file.

Three levels use it:

* **work units** (one shard each) are planned from the TTree's basket metadata only (compressed bytes
  per basket, scaled to the branch's uncompressed total; nothing is decompressed), so a job-array
  task can plan every input cheaply; capped by ``shard_events`` entries and ``shard_bytes``;
* **row groups** inside a unit are cut from the exact hit and muon counts of its entries (one small
  branch of each level is read), capped by ``row_group_size`` entries and ``row_group_bytes``; they
  depend only on the data and the configuration, never on the step size or the executor;
* **read steps** are runs of whole row groups up to ``--step-size`` bytes (or entries), so a step
  never splits a row group and peak memory follows the step size whatever the event sizes.

All cutting is greedy and vectorised per cut (``numpy.searchsorted`` on cumulative bytes); the Python
loop runs once per unit / row group / step, never per event.
"""

from __future__ import annotations

import numpy as np

from .errors import InputError
from .remote import read_error_text
from .schema import LEVELS, Schema
from .source import file_branches, read_arrays

#: Entries whose counts are read at once when a file has no basket metadata to plan units from.
COUNT_PIECE = 100_000



def item_bytes(schema: Schema) -> dict[str, int]:
    """Bytes per item of the raw (``source``) fields at each level: {'event': …, 'hit': …, 'muon': …}."""
    out = dict.fromkeys(LEVELS, 0)
    for f in schema.fields:
        if f.source:
            out[f.level] += np.dtype(f.dtype).itemsize
    return out


def greedy_edges(sizes: np.ndarray, max_entries: int, max_bytes: int | None) -> np.ndarray:
    """Cut ``len(sizes)`` entries into consecutive groups, each of at most ``max_entries`` entries and
    at most ``max_bytes`` bytes (``None``: no byte cap); a single entry larger than ``max_bytes`` is a
    group of its own. Returns the edges ``[0, e1, …, n]`` (int64): :func:`group_edges` over groups of
    one entry each."""
    return group_edges(np.arange(len(sizes) + 1, dtype=np.int64), sizes, max_entries, max_bytes)


def group_edges(edges: np.ndarray, sizes: np.ndarray, max_entries: int | None,
                max_bytes: int | None) -> np.ndarray:
    """Group consecutive groups (given by ``edges`` over per-entry ``sizes``) into runs of at most
    ``max_entries`` entries and ``max_bytes`` bytes (at least one group each). Returns a subset of
    ``edges`` that starts and ends with theirs: a run never splits a group."""
    cum = np.concatenate([[0], np.cumsum(np.asarray(sizes, dtype=np.float64))])
    at = cum[edges]
    out = [int(edges[0])]
    i = 0
    last = len(edges) - 1
    while i < last:
        j = last
        if max_entries is not None:
            j = min(j, int(np.searchsorted(edges, edges[i] + max_entries, side="right")) - 1)
        if max_bytes is not None:
            j = min(j, int(np.searchsorted(at, at[i] + max_bytes, side="right")) - 1)
        j = max(j, i + 1)
        out.append(int(edges[j]))
        i = j
    return np.asarray(out, dtype=np.int64)


def entry_bytes(tree, path: str, branches: dict[str, str | None], per_item: dict[str, int],
                entry_start: int, entry_stop: int) -> np.ndarray:
    """Estimated in-memory bytes of each entry in ``[entry_start, entry_stop)`` (float64 array).

    ``branches`` names one branch per list level ('hit', 'muon') whose counts give the number of
    items per entry (None: the level is not read). Raises InputError naming the file, the entry range
    and the branch when the counts cannot be read (a damaged basket, a silent server).
    """
    import awkward as ak

    n = entry_stop - entry_start
    sizes = np.full(n, float(per_item["event"]))
    for level in ("hit", "muon"):
        branch = branches.get(level)
        if branch is None or per_item[level] == 0:
            continue
        try:
            arr = read_arrays(tree, [branch], entry_start, entry_stop)[branch]  # TTree or RNTuple
            counts = np.asarray(ak.num(arr, axis=1), dtype=np.float64)
        except Exception as err:  # uproot raises many types for a damaged basket or a dead server
            raise InputError(f"cannot read entries {entry_start}-{entry_stop} of branch {branch!r} to size "
                             f"them ({read_error_text(err)})", file=path, entry=entry_start, field=branch) from err
        sizes += counts * per_item[level]
    return sizes


def basket_cumulative_bytes(tree, branch_names: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """Cumulative estimated uncompressed bytes of ``branch_names`` at entry boundaries, from basket
    metadata only: ``(entries, bytes)`` with both increasing, ``entries[0] == 0`` and
    ``entries[-1] == num_entries``. Each basket's compressed size is scaled by its branch's
    uncompressed/compressed ratio (``fTotBytes / fZipBytes``); bytes are spread evenly over a basket's
    entries. None when the object has no TTree basket metadata (e.g. an RNTuple): callers fall back to
    an even spread."""
    n = int(tree.num_entries)
    knots = [np.asarray([0, n], dtype=np.int64)]
    per_branch = []
    try:
        for name in file_branches(tree, branch_names).values():  # spacePoint_time may be spacePoint.time
            br = tree[name]
            offsets = np.asarray(br.entry_offsets, dtype=np.int64)
            nb = br.num_baskets
            comp = np.asarray([br.basket_compressed_bytes(i) for i in range(nb)], dtype=np.float64)
            total_comp = comp.sum()
            ratio = float(br.member("fTotBytes")) / total_comp if total_comp > 0 else 1.0
            per_branch.append((offsets[: nb + 1], np.concatenate([[0.0], np.cumsum(comp * ratio)])))
            knots.append(offsets)
    except Exception:  # not a TTree, or metadata uproot cannot give: fall back to an even spread
        return None
    entries = np.unique(np.clip(np.concatenate(knots), 0, n))
    total = np.zeros(len(entries))
    for offsets, cum in per_branch:
        if len(offsets) < 2:
            continue
        total += np.interp(entries, offsets, cum)
    return entries, total


def plan_unit_edges(tree, branch_names: list[str], max_entries: int, max_bytes: int | None,
                    exact_sizes=None) -> np.ndarray:
    """Entry edges ``[0, …, num_entries]`` of a file's work units: at most ``max_entries`` entries and,
    by the basket metadata, about ``max_bytes`` estimated bytes each (at least one entry).

    Without basket metadata (an RNTuple), ``exact_sizes(start, stop)`` (per-entry bytes, e.g.
    :func:`entry_bytes`) is read over the file in pieces of :data:`COUNT_PIECE` entries instead."""
    n = int(tree.num_entries)
    curve = basket_cumulative_bytes(tree, branch_names) if max_bytes is not None else None
    if curve is None and max_bytes is not None and exact_sizes is not None and n > 0:
        sizes = np.concatenate([exact_sizes(lo, min(lo + COUNT_PIECE, n)) for lo in range(0, n, COUNT_PIECE)])
        return greedy_edges(sizes, max_entries, max_bytes)
    edges = [0]
    start = 0
    while start < n:
        stop = min(start + max_entries, n)
        if curve is not None:
            entries, cum = curve
            here = float(np.interp(start, entries, cum))
            # the largest entry whose cumulative bytes stay within the budget (piecewise linear inverse)
            k = int(np.searchsorted(cum, here + max_bytes, side="right"))
            if k < len(cum):
                lo_e, hi_e, lo_b, hi_b = entries[k - 1], entries[k], cum[k - 1], cum[k]
                frac = (here + max_bytes - lo_b) / (hi_b - lo_b) if hi_b > lo_b else 0.0
                stop = min(stop, max(start + 1, int(np.floor(lo_e + frac * (hi_e - lo_e)))))
        edges.append(stop)
        start = stop
    return np.asarray(edges, dtype=np.int64)


def level_branches(schema: Schema, layout) -> dict[str, str | None]:
    """One branch per list level whose counts size the entries: the first raw field of the level read
    from a branch (fields the layout fills with a constant have none)."""
    out: dict[str, str | None] = {"hit": None, "muon": None}
    for f in layout.read_fields(schema):
        if f.level in out and out[f.level] is None:
            out[f.level] = layout.branch(f.source)
    return out
