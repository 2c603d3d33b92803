"""Comparing the outputs of two runs: what must be identical whatever ran them (executor, resume, tasks)."""

from __future__ import annotations

import json
from pathlib import Path


def comparable(directory: Path) -> dict:
    """The manifest minus its timing: what must be identical whatever ran the conversion or the filter."""
    m = json.loads((directory / "_manifest.json").read_text())
    m.pop("timing")
    return m


def shard_bytes(directory: Path) -> dict[str, bytes]:
    """Every shard's bytes, by file name."""
    return {p.name: p.read_bytes() for p in sorted((directory / "shards").iterdir())}
