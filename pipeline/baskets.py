"""How many bytes uproot decompresses to read an entry range: TTree basket spans, and branches grouped
so that one read holds at most a budget of them (:func:`pipeline.source.read_arrays`).

uproot reads whole baskets: entries [a, b) of a branch cost every basket that overlaps them, however
few of its entries are asked for. A file written in baskets of a fixed entry count whose last events
are 100 × larger puts those events' hits of each branch in one basket; reading all branches at once
then holds all those baskets together, which no cut of the steps can bound. Reading the branches in
groups bounded by the step's byte budget does (a single branch's basket may still exceed it).
A leaf module (numpy only).
"""

from __future__ import annotations

import numpy as np


def basket_span_bytes(tree, branch: str, entry_start: int, entry_stop: int) -> int | None:
    """Uncompressed bytes of the baskets of TTree ``branch`` that hold entries [entry_start, entry_stop):
    what uproot decompresses to read that range. None without basket metadata (an RNTuple, a basket
    kept inside its TBranch)."""
    try:
        br = tree[branch]
        offsets = np.asarray(br.entry_offsets, dtype=np.int64)
        first = max(int(np.searchsorted(offsets, entry_start, side="right")) - 1, 0)
        last = min(int(np.searchsorted(offsets, entry_stop, side="left")), int(br.num_baskets))
        return int(sum(br.basket_uncompressed_bytes(i) for i in range(first, last)))
    except Exception:  # noqa: BLE001 - not a TTree, or metadata uproot cannot give
        return None


def read_groups(tree, branches: list[str], entry_start: int, entry_stop: int,
                budget: int | None) -> list[list[str]]:
    """``branches`` cut, in order, into groups whose baskets over [entry_start, entry_stop) hold at most
    ``budget`` bytes (:func:`basket_span_bytes`), at least one branch each. One group without a budget or
    where a branch has no basket metadata (RNTuple: its pages are read as uproot plans them)."""
    if budget is None or len(branches) < 2:
        return [list(branches)]
    spans = [basket_span_bytes(tree, b, entry_start, entry_stop) for b in branches]
    if any(s is None for s in spans) or sum(spans) <= budget:  # type: ignore[arg-type]
        return [list(branches)]
    groups: list[list[str]] = [[]]
    held = 0
    for b, span in zip(branches, spans, strict=True):
        if groups[-1] and held + span > budget:  # type: ignore[operator]
            groups.append([])
            held = 0
        groups[-1].append(b)
        held += span  # type: ignore[operator]
    return groups
