"""Reading a dataset's manifest file: its name (``_manifest.json``, or ``manifest.json`` in a dataset
written before the rename), the JSON, and the format check. One reader for every command that opens a
dataset or names one as a parent (``filter``'s lineage, a scores folder's parent)."""

from __future__ import annotations

from .errors import DatasetError
from .format import FORMAT, MANIFEST, PLAN, manifest_name
from .storage import OutputDir


def read_manifest(out: OutputDir) -> dict:
    """The manifest of ``out``: ``_manifest.json``, or ``manifest.json`` in a dataset written before the
    rename. ``DatasetError`` (one line) when there is none or it is not a muon-pipeline manifest."""
    name = manifest_name(out.exists)
    if name is None:
        hint = " (convert did not finish: run `muon-pipeline finalize` to see what is missing)" if out.exists(PLAN) else ""
        raise DatasetError(f"{out.url} has no {MANIFEST}{hint}")
    try:
        doc = out.read_json(name)
    except ValueError as err:
        raise DatasetError(f"{out.url}/{name} is not valid JSON: {err}") from err
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise DatasetError(f"{out.url}/{name} is not a muon-pipeline manifest (format="
                           f"{doc.get('format') if isinstance(doc, dict) else type(doc).__name__!r})")
    return doc
