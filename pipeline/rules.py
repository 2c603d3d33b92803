"""The value rules of the schema, in one place: what ``convert`` and ``migrate`` refuse to write and what
``validate`` reports are the same checks (finite floats, ``range``, ``allowed`` from ``schemas/*.yaml``).

Pure numpy on flat columns; no writer may produce what ``validate`` would reject.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def field_violations(values: np.ndarray, field) -> list[tuple[str, np.ndarray, str]]:
    """``(kind, bad_mask, description)`` for each rule of ``field`` that ``values`` [N] break.

    kinds: ``finite`` (NaN/±inf in a float column), ``range`` (outside the schema's [lo, hi]),
    ``allowed`` (not one of the schema's allowed values).
    """
    out = []
    v = np.asarray(values)
    if v.dtype.kind == "f":
        bad = ~np.isfinite(v)
        if bad.any():
            out.append(("finite", bad, "non-finite value"))
    if field.range is not None:
        with np.errstate(invalid="ignore"):
            bad = (v < field.range[0]) | (v > field.range[1])
        if bad.any():
            out.append(("range", bad, f"value {v[bad][0].item()!r} outside [{field.range[0]:g}, {field.range[1]:g}]"))
    if field.allowed is not None:
        bad = ~np.isin(v, field.allowed)
        if bad.any():
            out.append(("allowed", bad, f"value {v[bad][0].item()!r} not in {list(field.allowed)}"))
    return out


def first_violations(columns: dict[str, np.ndarray], fields: Iterable) -> tuple[np.ndarray, list[str], list[str]]:
    """Rows breaking any rule of the ``fields`` present in ``columns``.

    Returns ``(bad [N], field_of_row, reason_of_row)``: for each bad row, the first field (in schema
    order) whose rule it breaks and why (lists indexed like ``np.flatnonzero(bad)``).
    """
    n = len(next(iter(columns.values()))) if columns else 0
    first = np.full(n, -1, dtype=np.int64)
    names, reasons = [], []
    for f in fields:
        if f.name not in columns:
            continue
        for _kind, bad, why in field_violations(columns[f.name], f):
            new = (first < 0) & bad
            if new.any():
                first[new] = len(names)
                names.append(f.name)
                reasons.append(why)
    rows = np.flatnonzero(first >= 0)
    return first >= 0, [names[first[i]] for i in rows], [reasons[first[i]] for i in rows]
