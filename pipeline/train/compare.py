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
            metrics = json.loads(candidate.read_text())
            label = metrics.get("label") or path.name
            return label, metrics
    raise ConfigError(f"{path}: no metrics.json (nor eval/metrics.json); run `muon-pipeline evaluate` first")


def _fmt(v: Any, scale: float = 1.0, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, int) and scale == 1.0:
        return str(v)
    return f"{v * scale:.{digits}g}"


def _dig(d: dict[str, Any], *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def table(entries: list[tuple[str, dict[str, Any]]]) -> str:
    """A markdown table: one column per run (plus the classical fit once, where present)."""
    columns: list[tuple[str, dict[str, Any]]] = [(label, m["methods"]["model"]) for label, m in entries]
    for _label, m in entries:
        if "classical_fit" in m["methods"]:
            columns.append(("classical fit", m["methods"]["classical_fit"]))
            break
    rows: list[tuple[str, list[str]]] = []

    def row(name: str, *keys: str, scale: float = 1.0) -> None:
        rows.append((name, [_fmt(_dig(meth, *keys), scale) for _, meth in columns]))

    row("muons", "overall", "n")
    row("σ(pT)/pT core [%]", "overall", "pt", "core_sigma", scale=100)
    row("σ(pT)/pT 68 % [%]", "overall", "pt", "sigma68", scale=100)
    row("pT scale (median ratio)", "overall", "pt_scale")
    row("tail > 3σ [%]", "overall", "pt", "tail_3sigma", scale=100)
    row("charge mis-ID [%]", "overall", "charge_misid", "rate", scale=100)
    row("σ(η) 68 %", "overall", "eta", "sigma68")
    row("σ(φ) 68 % [mrad]", "overall", "phi", "sigma68", scale=1000)
    for window in entries[0][1]["methods"]["model"].get("windows", {}):
        row(f"core σ/pT [%], {window} GeV", "windows", window, "pt", "core_sigma", scale=100)
        row(f"charge mis-ID [%], {window} GeV", "windows", window, "charge_misid", "rate", scale=100)
    ref_bins = entries[0][1]["methods"]["model"]["pt_bins"]
    for i, b in enumerate(ref_bins):
        if not any((meth["pt_bins"][i]["n"] if i < len(meth["pt_bins"]) else 0) for _, meth in columns):
            continue
        rows.append((f"core σ/pT [%], {b['lo']:g}–{b['hi']:g} GeV",
                     [_fmt(_dig(meth["pt_bins"][i], "pt", "core_sigma"), 100) if i < len(meth["pt_bins"]) else "–"
                      for _, meth in columns]))
    for region in entries[0][1]["methods"]["model"].get("regions", {}):
        row(f"core σ/pT [%], {region}", "regions", region, "overall", "pt", "core_sigma", scale=100)
    header = "| metric | " + " | ".join(label for label, _ in columns) + " |"
    sep = "|---|" + "---:|" * len(columns)
    return "\n".join([header, sep] + [f"| {name} | " + " | ".join(vals) + " |" for name, vals in rows])


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
