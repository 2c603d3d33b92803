"""validate: a sound dataset passes; each planted breakage is caught and located."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.validate import validate_dataset


def checks(directory) -> set[str]:
    return {p.check for p in validate_dataset(str(directory)).problems}


def _manifest(d):
    return json.loads((d / "_manifest.json").read_text())


def _first_shard(d):
    return d / _manifest(d)["shards"][0]["path"]


def _rewrite(d, fn, keep_checksums=False):
    """Rewrite the first shard through ``fn(table) -> table``, fixing the manifest's size/checksum
    so that only the planted defect remains."""
    path = _first_shard(d)
    table = pq.read_table(path)
    table = fn(table)
    pq.write_table(table, path)
    if not keep_checksums:
        m = _manifest(d)
        from pipeline.storage import OutputDir

        out = OutputDir(str(d))
        m["shards"][0]["bytes"] = out.size(m["shards"][0]["path"])
        m["shards"][0]["sha256"] = out.sha256(m["shards"][0]["path"])
        (d / "_manifest.json").write_text(json.dumps(m))


def _replace_hit_field(table, name, fn):
    hits = table.column("hits").combine_chunks()
    vals = hits.values
    arrays = [fn(vals.field(i)) if vals.type.field(i).name == name else vals.field(i) for i in range(vals.type.num_fields)]
    fields = [pa.field(vals.type.field(i).name, arrays[i].type, nullable=False) for i in range(vals.type.num_fields)]
    struct = pa.StructArray.from_arrays(arrays, fields=fields)
    new = pa.ListArray.from_arrays(hits.offsets, struct, type=pa.list_(pa.field("item", struct.type, nullable=False)))
    return table.set_column(table.column_names.index("hits"), pa.field("hits", new.type, nullable=False), new)


def test_sound_dataset_passes(converted_random):
    report = validate_dataset(str(converted_random))
    assert report.ok, [str(p) for p in report.problems]
    assert report.events_checked == _manifest(converted_random)["totals"]["events"]
    r = CliRunner().invoke(main, ["validate", str(converted_random), "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["ok"] is True


def test_missing_column(dataset_copy):
    _rewrite(dataset_copy, lambda t: t.drop_columns(["source_entry"]).replace_schema_metadata(t.schema.metadata))
    report = validate_dataset(str(dataset_copy))
    assert any(p.check == "columns" and p.column == "source_entry" for p in report.problems)


def test_mistyped_column(dataset_copy):
    _rewrite(dataset_copy, lambda t: _replace_hit_field(t, "spacePoint_channel", lambda a: a.cast(pa.float32())))
    report = validate_dataset(str(dataset_copy))
    p = next(p for p in report.problems if p.check == "types")
    assert p.column == "hits" and "spacePoint_channel is float, expected int32" in p.message


def test_wrong_version(dataset_copy):
    def relabel(t):
        md = dict(t.schema.metadata)
        md[b"muon_pipeline.schema"] = b'{"name": "muon-hits", "version": 1}'
        return t.replace_schema_metadata(md)

    _rewrite(dataset_copy, relabel)
    assert "version" in checks(dataset_copy)


def test_truncated_shard(dataset_copy):
    path = _first_shard(dataset_copy)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    found = checks(dataset_copy)
    assert {"size", "checksum", "readable"} <= found


def test_bit_flipped_shard(dataset_copy):
    path = _first_shard(dataset_copy)
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x10
    path.write_bytes(bytes(data))
    assert "checksum" in checks(dataset_copy)


def test_missing_shard_and_unlisted_shard(dataset_copy):
    path = _first_shard(dataset_copy)
    path.rename(path.with_name("part-stray.parquet"))
    report = validate_dataset(str(dataset_copy))
    kinds = {(p.check, p.shard) for p in report.problems}
    assert ("missing", _manifest(dataset_copy)["shards"][0]["path"]) in kinds
    assert ("unlisted", "shards/part-stray.parquet") in kinds


def test_count_mismatch(dataset_copy):
    m = _manifest(dataset_copy)
    m["shards"][1]["rows"] += 1
    m["cutflow"]["events_cut"] -= 1
    (dataset_copy / "_manifest.json").write_text(json.dumps(m))
    report = validate_dataset(str(dataset_copy))
    assert any(p.check == "counts" and p.shard == m["shards"][1]["path"] for p in report.problems)
    assert any(p.check == "counts" and "reconcile" in p.message for p in report.problems)


def test_nan_is_located(dataset_copy):
    table = pq.read_table(_first_shard(dataset_copy))
    offsets = table.column("hits").combine_chunks().offsets.to_numpy()
    hit = int(offsets[4]) + 1  # second hit of event (row) 4

    def plant(a):
        v = a.to_numpy().copy()
        v[hit] = np.nan
        return pa.array(v)

    _rewrite(dataset_copy, lambda t: _replace_hit_field(t, "spacePoint_time", plant))
    report = validate_dataset(str(dataset_copy))
    p = next(p for p in report.problems if p.check == "finite")
    assert p.column == "hits.spacePoint_time" and p.rows == [4]


def test_out_of_range_eta(dataset_copy):
    def plant(a):
        v = a.to_numpy().copy()
        v[0] = 7.5
        return pa.array(v)

    _rewrite(dataset_copy, lambda t: _replace_hit_field(t, "eta", plant))
    report = validate_dataset(str(dataset_copy))
    found = {(p.check, p.column) for p in report.problems}
    assert ("range", "hits.eta") in found and ("formula", "hits.eta") in found
    r = CliRunner().invoke(main, ["validate", str(dataset_copy)])
    assert r.exit_code == 1 and "hits.eta" in r.output and "FAILED" in r.output


def test_not_a_dataset(tmp_path):
    r = CliRunner().invoke(main, ["validate", str(tmp_path)])
    assert r.exit_code == 1 and "no _manifest.json" in r.output


@pytest.mark.parametrize("reader", ["pyarrow", "awkward", "pandas", "polars", "duckdb"])
def test_readers(converted_random, reader):
    """The README's recipes: every common reader sees the same events and hits."""
    m = _manifest(converted_random)
    files = [str(converted_random / s["path"]) for s in m["shards"]]
    n_events, n_hits = m["totals"]["events"], m["totals"]["hits"]
    if reader == "pyarrow":
        import pyarrow.dataset as ds

        t = ds.dataset(files, format="parquet").to_table()
        got = (t.num_rows, int(pa.compute.sum(pa.compute.list_value_length(t["hits"])).as_py()))
    elif reader == "awkward":
        import awkward as ak

        a = ak.concatenate([ak.from_parquet(f) for f in files])
        got = (len(a), int(ak.sum(ak.num(a.hits))))
        assert float(ak.max(abs(a.hits.eta - np.arcsinh(a.hits.spacePoint_globEdgeLowZ / a.hits.r)))) < 1e-5
    elif reader == "pandas":
        import pandas as pd

        df = pd.concat([pd.read_parquet(f) for f in files])
        got = (len(df), int(df["hits"].map(len).sum()))
    elif reader == "polars":
        import polars as pl

        df = pl.read_parquet(files)
        got = (df.height, int(df.select(pl.col("hits").list.len().sum()).item()))
    else:
        import duckdb

        got = duckdb.sql(f"select count(*), sum(len(hits)) from read_parquet({files!r})").fetchall()[0]
        got = (int(got[0]), int(got[1]))
    assert got == (n_events, n_hits)
