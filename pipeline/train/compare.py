"""``muon-pipeline compare``: several evaluations side by side (markdown table + overlay plot)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..errors import ConfigError


def load_metrics(path: str | Path) -> tuple[str, dict[str, Any]]:
    """Accept an evaluation directory, a run directory (its ``eval/``), or a metrics.json file."""
    path = Path(path)
    for candidate in (path, path / "metrics.json", path / "eval" / "metrics.json"):
        if candidate.is_file():
            try:
                metrics = json.loads(candidate.read_text())
            except (ValueError, RecursionError) as err:
                raise ConfigError(f"{candidate}: not a metrics file of `muon-pipeline evaluate` ({err})") from err
            if not isinstance(metrics, dict):
                raise ConfigError(f"{candidate}: not a metrics file of `muon-pipeline evaluate`")
            if metrics.get("task") == "hit_filter":  # per-hit working points, not muon resolutions
                raise ConfigError(f"{candidate}: an evaluation of a hit filter; compare tables regression "
                                  "evaluations (a hit filter's working points are in its metrics.json)")
            label = metrics.get("label") or path.name
            return label, metrics
    raise ConfigError(f"{path}: no metrics.json (nor eval/metrics.json); run `muon-pipeline evaluate` first")


#: Missing values and ranges are written with this one dash (an en dash).
DASH = "–"


def cell(value: Any, error: Any, n: Any, scale: float = 1.0, decimals: int = 2) -> str:
    """``value ± error (N)``, fixed decimals; ``– (N)`` below ``MIN_MUONS`` muons (the plots' rule) or
    when the value is missing; ``± ?`` when the evaluation recorded no error (an older metrics.json)."""
    from .metrics import MIN_MUONS

    count = f" ({n})" if isinstance(n, int) else ""
    if not _finite(value) or not isinstance(n, int) or n < MIN_MUONS:
        return f"{DASH}{count}"
    err = f"{error * scale:.{decimals}f}" if _finite(error) else "?"
    return f"{value * scale:.{decimals}f} ± {err}{count}"


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _dig(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def _misid(s: dict[str, Any] | None) -> tuple[Any, Any, Any]:
    """Charge mis-ID rate, half the Clopper–Pearson 68 % interval as its ± (the interval itself is in
    metrics.json), and the muon count."""
    m = _dig(s, "charge_misid") or {}
    lo, hi = m.get("lo"), m.get("hi")
    err = 0.5 * (hi - lo) if _finite(lo) and _finite(hi) else None
    return m.get("rate"), err, m.get("n")


#: (row title, how to read (value, error, N) from one set of muons, scale, decimals): the table's rows,
#: each quantity in one unit (η residuals in 10⁻³, φ residuals in mrad, as on the plots).
QUANTITIES: list[tuple[str, Any, float, int]] = [
    ("σ(pT)/pT core [%]", lambda s: (_dig(s, "pt", "core_sigma"), _dig(s, "pt", "core_sigma_err"), _dig(s, "pt", "n")),
     100.0, 2),
    ("σ(pT)/pT 68 % [%]", lambda s: (_dig(s, "pt", "sigma68"), _dig(s, "pt", "sigma68_err"), _dig(s, "pt", "n")),
     100.0, 2),
    ("pT scale (median pT_pred/pT_true)", lambda s: (_dig(s, "pt_scale"), _dig(s, "pt_scale_err"), _dig(s, "n")), 1.0, 3),
    ("tail > 3σ core [%]", lambda s: (_dig(s, "pt", "tail_3sigma"), _dig(s, "pt", "tail_3sigma_err"), _dig(s, "pt", "n")),
     100.0, 2),
    ("charge mis-ID [%]", _misid, 100.0, 3),
    ("σ(η) 68 % [10⁻³]", lambda s: (_dig(s, "eta", "sigma68"), _dig(s, "eta", "sigma68_err"), _dig(s, "eta", "n")),
     1000.0, 2),
    ("σ(φ) 68 % [mrad]", lambda s: (_dig(s, "phi", "sigma68"), _dig(s, "phi", "sigma68_err"), _dig(s, "phi", "n")),
     1000.0, 2),
]


#: Rows of methods with a per-muon σ(q/pT) (the uncertainty head, the classical fit): pulls and coverage.
PULL_QUANTITIES: list[tuple[str, Any, float, int]] = [
    ("pull core width, q/pT", lambda s: (_dig(s, "pull", "core_width"), _dig(s, "pull", "core_width_err"),
                                         _dig(s, "pull", "n")), 1.0, 2),
    ("68 % interval coverage [%] (nominal 68.27)", lambda s: (_dig(s, "pull", "cover68"),
                                                             _dig(s, "pull", "cover68_err"), _dig(s, "pull", "n")),
     100.0, 1),
    ("95 % interval coverage [%] (nominal 95)", lambda s: (_dig(s, "pull", "cover95"), _dig(s, "pull", "cover95_err"),
                                                          _dig(s, "pull", "n")), 100.0, 1),
    ("pull core width, head's own σ (before calibration)", lambda s: (
        _dig(s, "pull_raw", "core_width"), _dig(s, "pull_raw", "core_width_err"), _dig(s, "pull_raw", "n")), 1.0, 2),
]


def _range(lo: float, hi: float) -> str:
    return f"{lo:g}{DASH}{hi:g} GeV"


def table(entries: list[tuple[str, dict[str, Any]]]) -> str:
    """A markdown table: one column per run (plus the classical fit once, where present). Every cell is
    ``value ± error (N)``, N the muons it is computed from; ``– (N)`` where N < ``MIN_MUONS``."""
    columns: list[tuple[str, dict[str, Any]]] = [(label, m["methods"]["model"]) for label, m in entries]
    for _label, m in entries:
        if "classical_fit" in m["methods"]:
            columns.append(("classical fit", m["methods"]["classical_fit"]))
            break
    core = QUANTITIES[0]
    misid = next(q for q in QUANTITIES if q[0].startswith("charge"))
    rows: list[tuple[str, list[str]]] = []

    def row(name: str, quantity: tuple[str, Any, float, int], where: Any) -> None:
        _, read, scale, decimals = quantity
        rows.append((name, [cell(*read(where(meth)), scale=scale, decimals=decimals) for _, meth in columns]))

    for quantity in QUANTITIES:
        row(quantity[0], quantity, lambda meth: meth.get("overall"))
    for window in entries[0][1]["methods"]["model"].get("windows", {}):
        lo, hi = (float(x) for x in window.split("-"))
        for quantity in (core, misid):
            row(f"{quantity[0]}, {_range(lo, hi)}", quantity,
                lambda meth, w=window: _dig(meth, "windows", w))
    ref_bins = entries[0][1]["methods"]["model"]["pt_bins"]
    for i, b in enumerate(ref_bins):
        if not any((meth["pt_bins"][i]["n"] if i < len(meth["pt_bins"]) else 0) for _, meth in columns):
            continue
        row(f"σ(pT)/pT core [%], {_range(b['lo'], b['hi'])}", core,
            lambda meth, i=i: meth["pt_bins"][i] if i < len(meth["pt_bins"]) else None)
    for region in entries[0][1]["methods"]["model"].get("regions", {}):
        row(f"σ(pT)/pT core [%], {region}", core, lambda meth, r=region: _dig(meth, "regions", r, "overall"))
    pulls = any(_dig(meth, "overall", "pull") for _, meth in columns)
    if pulls:
        _pull_rows(row, ref_bins, columns, entries[0][1]["methods"]["model"].get("regions", {}))
    header = "| metric | " + " | ".join(label for label, _ in columns) + " |"
    sep = "|---|" + "---:|" * len(columns)
    from .metrics import MIN_MUONS

    note = (f"\nEach cell: value ± statistical error (muons). Errors: bootstrap; charge mis-ID: half the "
            f"Clopper–Pearson 68 % interval; tail and coverage: binomial. {DASH} (N): fewer than {MIN_MUONS} "
            "muons." + (" Pulls: (q/pT_pred − q/pT_true)/σ(q/pT); core width: iterated ±2σ Gaussian fit; intervals: "
                         "the calibrated ones (calibration.json) where applied, else ±1σ and ±1.96σ." if pulls else ""))
    return "\n".join([header, sep] + [f"| {name} | " + " | ".join(vals) + " |" for name, vals in rows]) + "\n" + note


def _pull_rows(row: Any, ref_bins: list[dict[str, Any]], columns: list[tuple[str, dict[str, Any]]],
               regions: dict[str, Any]) -> None:
    """The pull rows: overall width and coverage, then the width and 68 % / 95 % coverage per pT bin and region."""
    width, cover68, cover95 = PULL_QUANTITIES[0], PULL_QUANTITIES[1], PULL_QUANTITIES[2]
    for quantity in PULL_QUANTITIES:
        row(quantity[0], quantity, lambda meth: meth.get("overall"))
    for i, b in enumerate(ref_bins):
        if not any(_dig(meth["pt_bins"][i], "pull", "n") for _, meth in columns if i < len(meth["pt_bins"])):
            continue
        for quantity in (width, cover68, cover95):
            row(f"{quantity[0]}, {_range(b['lo'], b['hi'])}", quantity,
                lambda meth, i=i: meth["pt_bins"][i] if i < len(meth["pt_bins"]) else None)
    for region in regions:
        for quantity in (width, cover68, cover95):
            row(f"{quantity[0]}, {region}", quantity, lambda meth, r=region: _dig(meth, "regions", r, "overall"))


def sample_key(metrics: dict[str, Any]) -> tuple[Any, ...]:
    """What must be equal for two evaluations to share a table: dataset, split and the muons evaluated.

    Evaluations written before ``dataset_id``/``sample_id`` existed fall back to (dataset path, split,
    muon count)."""
    if "sample_id" in metrics:
        return (metrics.get("dataset_id"), metrics.get("split"), metrics["sample_id"])
    return (metrics.get("data"), metrics.get("split"), metrics.get("n_muons"))


def check_comparable(entries: list[tuple[str, dict[str, Any]]], paths: list[str | Path]) -> None:
    """ConfigError (one line) when the evaluations are not of the same events: their resolutions,
    and the one classical-fit column, would silently mix different samples."""
    keys = [sample_key(m) for _, m in entries]
    if len(set(keys)) <= 1:
        return
    parts = [f"{p}: {m.get('n_muons')} muons of {m.get('data')} ({m.get('split')} split)"
             for p, (_, m) in zip(paths, entries, strict=True)]
    raise ConfigError("compare: the evaluations are of different datasets or splits, not comparable: "
                      + "; ".join(parts) + ". Evaluate every run with the same --data and --split.")


def compare(paths: list[str | Path], output: str | Path) -> tuple[str, list[Path]]:
    """Write ``compare.md`` and the overlay plot; return the markdown and the files written.

    Raises ConfigError (exit 2) when the evaluations are of different events (:func:`check_comparable`).
    """
    if not paths:
        raise ConfigError("give at least one run or evaluation directory")
    entries = [load_metrics(p) for p in paths]
    check_comparable(entries, paths)
    labels = [label for label, _ in entries]
    entries = [(label if labels.count(label) == 1 else f"{label} ({p})", m)
               for (label, m), p in zip(entries, paths, strict=True)]
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    md = table(entries)
    (out / "compare.md").write_text(md + "\n")
    from .plots import plot_overlay

    plot_overlay(entries, out / "pt_resolution_overlay.png")
    return md, [out / "compare.md", out / "pt_resolution_overlay.png"]
