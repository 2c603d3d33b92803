"""Reading shards back: Arrow tables to flat numpy (the inverse of ``transform.to_arrow``), and
each shard's identity (the dataset and unit it belongs to, in its own Parquet metadata).

Used by ``validate``, ``inspect`` and ``migrate``; the training stage has its own zero-copy
loader tuned for batches; every reader opens datasets through ``pipeline.dataset``. Readers
outside this tool need nothing but pyarrow (see README).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import numpy as np

from .chunk import EventChunk
from .errors import DatasetError, one_line
from .schema import Schema
from .storage import OutputDir

#: Parquet key-value metadata key under which every shard names the dataset and the unit it belongs to.
IDENTITY_KEY = b"muon_pipeline.shard"


def dataset_id(config_hash: str, tool_version: str) -> str:
    """The identity of the dataset a shard belongs to: its conversion configuration (schema version,
    selection, layout, codec, sizes) and tool version, hashed. Every shard of a dataset carries it,
    and so does the manifest (``dataset_id``); the input set is not part of it, so ``--reconfigure``
    after adding an input keeps the finished shards of the others."""
    doc = {"config": config_hash, "tool": tool_version}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32]


def identity_metadata(dataset: str, unit: dict) -> dict[bytes, bytes]:
    """``{IDENTITY_KEY: json}`` for a shard: the dataset id and the unit (key, input, entry range). Not the
    unit's index in the plan: it moves when ``--reconfigure`` adds an input, while the shard is reused."""
    doc = {"dataset": dataset, "unit": unit["key"], "input": unit["input"],
           "entry_start": unit["entry_start"], "entry_stop": unit["entry_stop"]}
    return {IDENTITY_KEY: json.dumps(doc, sort_keys=True).encode()}


def read_identity(metadata: dict[bytes, bytes] | None) -> dict | None:
    """The identity a shard declares (see ``identity_metadata``), or None when it declares none."""
    if not metadata or IDENTITY_KEY not in metadata:
        return None
    try:
        doc = json.loads(metadata[IDENTITY_KEY])
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


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


def read_dataset(directory: str, columns: list[str] | None = None, verify_checksums: bool = True):
    """The whole dataset as one Arrow table, shards in manifest order (for small datasets).

    Opened with :func:`pipeline.dataset.open_dataset` (path rules, schema checks, and the sha256 of
    every shard unless ``verify_checksums`` is false); raises ``DatasetError`` naming the shard.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .dataset import open_dataset

    ds = open_dataset(directory, checksums=verify_checksums)
    tables = []
    for i in range(len(ds.entries)):
        # use_threads=False: with Arrow's reader threads on a Python file object, pyarrow 26 aborted the
        # interpreter at exit ("terminate called without an active exception") in ~1 run of 5
        with ds.out.fs.open(ds.path(i), "rb") as fh:
            try:
                tables.append(pq.read_table(fh, columns=columns, use_threads=False))
            except (OSError, pa.ArrowException) as err:
                raise DatasetError(f"{directory}: shard {ds.entries[i]['path']} cannot be decoded ({one_line(err)}); "
                                   "run `muon-pipeline validate`") from err
    return pa.concat_tables(tables)
