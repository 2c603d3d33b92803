"""Reading shards back: Arrow tables to flat numpy (the inverse of ``transform.to_arrow``).

Used by ``validate``, ``inspect`` and ``migrate``; the training stage has its own zero-copy
loader tuned for batches, and readers outside this tool need nothing but pyarrow (see README).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .chunk import EventChunk
from .schema import Schema
from .storage import OutputDir


def list_column(column) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(offsets from 0, {field: flat numpy}) of a list<struct> Arrow column, without copies."""
    import pyarrow as pa

    if isinstance(column, pa.ChunkedArray):
        arr = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    else:
        arr = column
    offsets = np.asarray(arr.offsets, dtype=np.int64)
    values = arr.values
    lo, hi = int(offsets[0]), int(offsets[-1])
    fields = {}
    for i in range(values.type.num_fields):
        child = values.field(i).slice(lo, hi - lo)
        fields[values.type.field(i).name] = child.to_numpy(zero_copy_only=False)
    return offsets - lo, fields


def chunk_from_table(table, schema: Schema, source_file: str = "") -> EventChunk:
    event = {}
    for f in schema.level("event"):
        if f.name in table.column_names and f.dtype != "string":
            event[f.name] = table.column(f.name).to_numpy()
    hit_offsets, hits = list_column(table.column(schema.hit_column))
    muon_offsets, muons = list_column(table.column(schema.muon_column))
    return EventChunk(source_file=source_file, event=event, hit_offsets=hit_offsets, hits=hits,
                      muon_offsets=muon_offsets, muons=muons)


def open_parquet(out: OutputDir, rel: str):
    import pyarrow.parquet as pq

    return pq.ParquetFile(out.fs.open(out.path(rel), "rb"))


def iter_row_groups(out: OutputDir, rel: str) -> Iterator[tuple[int, object]]:
    """(first row index, table) for each row group of a shard: bounded memory."""
    pf = open_parquet(out, rel)
    first = 0
    for i in range(pf.num_row_groups):
        table = pf.read_row_group(i)
        yield first, table
        first += table.num_rows


def read_dataset(directory: str, columns: list[str] | None = None):
    """The whole dataset as one Arrow table, shards in manifest order (for small datasets)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .manifest import read_manifest

    out = OutputDir(directory)
    manifest = read_manifest(out)
    tables = [pq.read_table(out.fs.open(out.path(s["path"]), "rb"), columns=columns) for s in manifest["shards"]]
    return pa.concat_tables(tables)
