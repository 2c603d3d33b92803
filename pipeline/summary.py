"""``inspect``: what is in a dataset (counts, technology mix, selection, inputs, cut flow, feature
statistics with their units)."""

from __future__ import annotations

import numpy as np

from .dataset import open_dataset
from .lineage import lineage_chain
from .locks import reading
from .selection import technology_name
from .shards import iter_row_groups

#: ``inspect`` lists this many inputs in its table (``--json`` lists all).
SHOWN_INPUTS = 20


def summarize_dataset(directory: str, scan: bool = True) -> dict:
    """Manifest facts plus, with ``scan``, counts read from the shards (technology mix, hits/muon).

    Holds the readers' lock (:func:`pipeline.locks.reading`) while it reads."""
    with reading(directory, "inspect"):
        return _summarize(directory, scan)


def _summarize(directory: str, scan: bool) -> dict:
    dataset = open_dataset(directory)  # the shared opener: one-line errors for missing or foreign shards
    out, manifest, schema = dataset.out, dataset.manifest, dataset.schema
    info = {
        "directory": directory,
        "schema": manifest["schema"],
        "tool_version": manifest["tool_version"],
        "shards": len(manifest["shards"]),
        "bytes": manifest["totals"]["bytes"],
        "events": manifest["totals"]["events"],
        "hits": manifest["totals"]["hits"],
        "muons": manifest["totals"]["muons"],
        "inputs": len(manifest["inputs"]),
        "input_files": [{k: i.get(k) for k in ("path", "entries", "events_out", "status", "container")}
                        for i in manifest["inputs"]],
        "units": manifest.get("units", len(manifest["shards"])),
        "selection": {**manifest["config"].get("selection", {}),
                      "on_invalid": manifest["config"].get("on_invalid", "error")},
        "field_units": {f.name: f.unit for f in schema.fields},
        "skipped": manifest["skipped"],
        "cutflow": manifest["cutflow"],
        "reading": manifest.get("reading", {}),
        "statistics": manifest["statistics"],
        "model_inputs": schema.inputs("hit"),
        "lineage": lineage_chain(manifest),  # what a derived dataset was made from, nearest first
    }
    if manifest.get("filter_cutflow"):  # a derived dataset: the filter's own counters
        info["filter_cutflow"] = manifest["filter_cutflow"]
    if scan:
        tech: dict[int, int] = {}  # every code, named or not
        on_muon = 0
        for shard in manifest["shards"]:
            for _, table in iter_row_groups(out, shard["path"]):
                hits = table.column(schema.hit_column).combine_chunks().values
                codes, counts = np.unique(hits.field("spacePoint_technology").to_numpy(), return_counts=True)
                for c, n in zip(codes.tolist(), counts.tolist()):
                    tech[c] = tech.get(c, 0) + n
                on_muon += int((hits.field("spacePoint_truthLink").to_numpy() >= 0).sum())
        info["technology_hits"] = {technology_name(c): tech[c] for c in sorted(tech)}
        info["hits_on_muons"] = on_muon
    return info


def reading_lines(manifest: dict) -> list[str]:
    """Summary lines for unknown technology codes, rounded and filled fields (none when not used)."""
    lines = []
    unknown = manifest["cutflow"].get("hits_unknown_technology") or {}
    if unknown:
        lines.append("hits of unnamed technology codes: " + ", ".join(
            f"{technology_name(int(c))} {n}" for c, n in unknown.items()))
    reading = manifest.get("reading") or {}
    if reading.get("rounded"):
        lines.append("values stored rounded (--precision round): " + ", ".join(
            f"{k} {n}" for k, n in reading["rounded"].items()))
    if reading.get("filled"):
        lines.append("fields filled with a constant: " + ", ".join(f"{k}={v!r}" for k, v in reading["filled"].items()))
    return lines


def render(info: dict, console) -> None:
    """Print the summary as rich tables."""
    from rich.table import Table

    t = Table(title=f"{info['directory']}  (schema {info['schema']['name']} v{info['schema']['version']}, "
                    f"tool {info['tool_version']})", show_header=False)
    ev = max(info["events"], 1)
    rows = [("events", f"{info['events']:,}"), ("hits", f"{info['hits']:,}  ({info['hits'] / ev:.1f} / event)"),
            ("muons", f"{info['muons']:,}  ({info['muons'] / ev:.2f} / event)"),
            ("shards", f"{info['shards']}  ({info['bytes'] / 1e6:.1f} MB), from {info.get('units', '?')} work unit(s)"),
            ("inputs", str(info["inputs"])),
            ("skipped", f"{len(info['skipped']['inputs'])} input(s), {len(info['skipped']['units'])} unit(s)"),
            ("model inputs", f"{len(info['model_inputs'])}: {', '.join(info['model_inputs'])}")]
    if "hits_on_muons" in info:
        rows.append(("hits on muons", f"{info['hits_on_muons']:,}  ({info['hits_on_muons'] / max(info['muons'], 1):.1f} / muon)"))
        tot = max(sum(info["technology_hits"].values()), 1)
        rows.append(("technologies", ", ".join(f"{k} {100 * n / tot:.1f} %" for k, n in info["technology_hits"].items())))
    if info.get("selection"):
        rows.append(("selection", selection_text(info["selection"])))
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)
    if info.get("lineage"):
        lt = Table(title="lineage (derived from, nearest first)", show_header=True)
        for c in ("parent", "parent state", "scores", "scores state", "threshold", "working point",
                  "caps (muons, hits)"):
            lt.add_column(c, overflow="fold")
        for s in info["lineage"]:
            caps = s.get("caps") or {}
            lt.add_row(f"{s['parent']} ({str(s['parent_dataset_id'])[:12]})", s["state"], str(s["scores"]),
                       s.get("scores_state", "–"),
                       f"{s['threshold']:.6g}", str(s["working_point"]),
                       f"{caps.get('max_muons_per_event')}, {caps.get('max_hits_per_event')}")
        console.print(lt)
    if info.get("input_files"):
        it = Table(title="inputs", show_header=True)
        for c in ("path", "container", "entries", "events out", "status"):
            it.add_column(c, justify="right" if c in ("entries", "events out") else "left")
        files = info["input_files"]
        for i in files[:SHOWN_INPUTS]:
            it.add_row(str(i["path"]), str(i.get("container") or "TTree"), f"{i.get('entries') or 0:,}",
                       f"{i.get('events_out') or 0:,}", str(i.get("status") or "ok"))
        if len(files) > SHOWN_INPUTS:
            it.add_row(f"... and {len(files) - SHOWN_INPUTS} more (--json lists all)", "", "", "", "")
        console.print(it)
    cf = Table(title="cut flow", show_header=True)
    cf.add_column("counter")
    cf.add_column("value", justify="right")
    for k, v in [*info["cutflow"].items(), *((f"filter: {k}", v) for k, v in info.get("filter_cutflow", {}).items())]:
        if isinstance(v, dict):  # tallies per code: hits_unknown_technology
            for code, n in v.items():
                cf.add_row(f"{k} [{code}]", f"{n:,}")
        else:
            cf.add_row(k, f"{v:,}")
    reading = info.get("reading") or {}
    for k, n in (reading.get("rounded") or {}).items():
        cf.add_row(f"values rounded [{k}]", f"{n:,}")
    for k, v in (reading.get("filled") or {}).items():
        cf.add_row(f"filled [{k}]", repr(v))
    console.print(cf)
    st = Table(title="feature statistics (selected data)")
    for c in ("field", "unit", "count", "mean", "std", "min", "max"):
        st.add_column(c, justify="left" if c in ("field", "unit") else "right")
    units = info.get("field_units") or {}
    for col, fields in info["statistics"].items():
        for name, s in fields.items():
            st.add_row(f"{col}.{name}", units.get(name) or "–", f"{s['count']:,}", f"{s['mean']:.5g}",
                       f"{s['std']:.5g}", f"{s['min']:.5g}", f"{s['max']:.5g}")
    console.print(st)


def selection_text(sel: dict) -> str:
    """The conversion's selection in one line: ``pT >= 5 GeV, |eta| <= 2.7, >= 3 hits, technologies all, ...``."""
    tech = sel.get("technologies") or "all"
    parts = [f"pT >= {sel.get('min_pt')} GeV", f"|eta| <= {sel.get('max_abs_eta')}", f">= {sel.get('min_hits')} hits",
             f"technologies {tech if isinstance(tech, str) else ','.join(map(str, tech))}"]
    if sel.get("keep_empty_events"):
        parts.append("empty events kept")
    if sel.get("keep_muons_without_hits"):
        parts.append("muons without hits kept")
    parts.append(f"invalid values: {sel.get('on_invalid', 'error')}")
    return ", ".join(parts)
