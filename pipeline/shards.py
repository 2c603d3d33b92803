"""Reading shards back: Arrow tables to flat numpy (the inverse of ``transform.to_arrow``), row group
by row group with bounded memory.

Used by ``validate``, ``inspect``, ``migrate`` and the training stage (``list_column``: zero-copy
views of list<struct> columns); every reader opens datasets through ``pipeline.dataset``. Readers
outside this tool need nothing but pyarrow (see README).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .chunk import EventChunk
from .errors import DatasetError, one_line
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
    import pyarrow as pa

    pf = open_parquet(out, rel)
    first = 0
    for i in range(pf.num_row_groups):
        try:
            table = pf.read_row_group(i)
        except (OSError, pa.ArrowException) as err:  # bit rot in a page: zstd or Thrift decoding fails
            raise DatasetError(f"{out.url}/{rel}, row group {i} (rows from {first}): cannot be decoded "
                               f"({one_line(err)}); run `muon-pipeline validate`") from err
        yield first, table
        first += table.num_rows
