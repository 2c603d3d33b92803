"""Each breakage that validate used to accept (or crash on), planted on a copy of a good 3-shard dataset.

Planting is done like a careful tamperer would: after changing a shard, the manifest's sizes, checksums,
counts, totals, cut flow and statistics are all recomputed to match, so only the check that the breakage
is about can catch it. Each test asserts exit 1 and that the report names the shard, column and rows
(or the manifest key).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.validate import validate_dataset


def manifest(d) -> dict:
    return json.loads((d / "_manifest.json").read_text())


def write_manifest(d, m) -> None:
    (d / "_manifest.json").write_text(json.dumps(m))


def recompute(d, statistics: bool = True) -> None:
    """Make the manifest agree with the shards as they are now: bytes, sha256, counts, totals, cut flow,
    statistics (per row group, merged in order: what convert records)."""
    from pipeline.schema import load_schema
    from pipeline.shards import chunk_from_table
    from pipeline.stats import merge_tables, table_to_json
    from pipeline.storage import OutputDir
    from pipeline.transform import chunk_stats

    m = manifest(d)
    schema = load_schema(m["schema"]["version"])
    out = OutputDir(str(d))
    stats: dict = {}
    for s in m["shards"]:
        if not (d / s["path"]).is_file():
            continue
        pf = pq.ParquetFile(d / s["path"])
        s["rows"], s["hits"], s["muons"] = pf.metadata.num_rows, 0, 0
        shard_stats: dict = {}
        for i in range(pf.num_row_groups):
            chunk = chunk_from_table(pf.read_row_group(i), schema)
            s["hits"] += chunk.n_hits
            s["muons"] += chunk.n_muons
            if chunk.n_events:
                shard_stats = merge_tables(shard_stats, chunk_stats(chunk, schema))
        stats = merge_tables(stats, shard_stats)
        s["bytes"], s["sha256"] = out.size(s["path"]), out.sha256(s["path"])
    for key, col in (("events", "rows"), ("hits", "hits"), ("muons", "muons"), ("bytes", "bytes")):
        m["totals"][key] = sum(s[col] for s in m["shards"])
    cf = m["cutflow"]
    cf["events_out"], cf["muons_out"], cf["hits_out"] = (m["totals"]["events"], m["totals"]["muons"],
                                                         m["totals"]["hits"])
    cf["events_cut"] = cf["entries_in"] - cf["events_out"] - cf["entries_skipped"]
    cf["events_no_muon"] = cf["events_cut"] - cf["events_invalid"]
    cf["muons_in"] = cf["muons_fail_pt"] + cf["muons_fail_eta"] + cf["muons_fail_hits"] + cf["muons_out"]
    for doc in m["inputs"]:
        doc["events_out"] = sum(s["rows"] for s in m["shards"] if s["unit"]["input"] == doc["path"])
    if statistics:
        m["statistics"] = table_to_json(stats)
    write_manifest(d, m)


def rewrite(d, fn, shard: int = 0) -> str:
    """Rewrite one shard through ``fn(table) -> table`` (keeping its metadata), then ``recompute``."""
    rel = manifest(d)["shards"][shard]["path"]
    table = pq.read_table(d / rel)
    pq.write_table(fn(table).replace_schema_metadata(table.schema.metadata), d / rel, row_group_size=50)
    recompute(d)
    return rel


def replace_child(table, column: str, name: str, fn):
    """``table`` with struct child ``name`` of list column ``column`` replaced by ``fn(numpy) -> numpy``."""
    col = table.column(column).combine_chunks()
    vals = col.values
    arrays = [pa.array(fn(vals.field(i).to_numpy().copy()), vals.field(i).type) if vals.type.field(i).name == name
              else vals.field(i) for i in range(vals.type.num_fields)]
    struct = pa.StructArray.from_arrays(arrays, fields=list(vals.type))
    new = pa.ListArray.from_arrays(col.offsets, struct, type=col.type)
    return table.set_column(table.column_names.index(column), table.schema.field(column), new)


def run(d, *args) -> tuple[int, str]:
    r = CliRunner().invoke(main, ["validate", str(d), *args])
    assert "Traceback" not in r.output and "internal" not in r.output, r.output
    return r.exit_code, r.output


def found(d, check, shard=None, column=None, rows=None, **kw):
    """The problem of kind ``check`` at (shard, column, rows); fails listing all problems if absent."""
    report = validate_dataset(str(d), **kw)
    for p in report.problems:
        if p.check == check and (shard is None or p.shard == shard) and (column is None or p.column == column) \
                and (rows is None or (p.rows or [])[: len(rows)] == rows):
            return p
    raise AssertionError(f"no {check} problem at {shard} {column} {rows}: {[str(p) for p in report.problems]}")


@pytest.fixture
def ds(tmp_path, converted_random):
    d = tmp_path / "ds"
    shutil.copytree(converted_random, d)
    assert len(manifest(d)["shards"]) == 3 and validate_dataset(str(d)).ok
    return d


@pytest.fixture(scope="module")
def other_datasets(tmp_path_factory, random_dump):
    """Datasets to steal shards from: the same dump with another min_pt; another dump, same config."""
    import sys

    from pipeline import convert
    from pipeline.config import ConvertConfig
    from pipeline.selection import SelectionConfig
    from pipeline.transform import TransformConfig

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from rawdump import random_events, write_dump

    base = tmp_path_factory.mktemp("others")
    other_config = base / "config"
    convert([str(random_dump)], str(other_config), ConvertConfig(
        schema_version=2, shard_events=200, row_group_size=50,
        transform=TransformConfig(SelectionConfig(min_pt=4.0))), workers=1, quiet=True)
    dump2 = base / "random2.root"
    write_dump(dump2, random_events(500, seed=2))
    other_input = base / "input"
    convert([str(dump2)], str(other_input), ConvertConfig(schema_version=2, shard_events=200, row_group_size=50),
            workers=1, quiet=True)
    return {"config": other_config, "input": other_input}


# ---------------------------------------------------------------------------------------------- events

def test_duplicated_event(ds):
    rel = rewrite(ds, lambda t: pa.concat_tables([t.slice(0, 8), t.slice(7, 1), t.slice(8)]))
    code, out = run(ds)
    assert code == 1
    p = found(ds, "order", rel, "source_entry", [8])
    assert "duplicated" in p.message
    found(ds, "duplicate", rel, "eventNumber", [8])


def test_rows_shuffled_inside_a_shard(ds):
    order = np.random.default_rng(3).permutation(40)
    rel = rewrite(ds, lambda t: pa.concat_tables([t.slice(0, 40).take(order), t.slice(40)]))
    assert run(ds)[0] == 1
    first = int(np.flatnonzero(np.diff(order) < 0)[0]) + 1  # first row whose entry is below its predecessor's
    found(ds, "order", rel, "source_entry", [first])


@pytest.mark.parametrize("other", ["config", "input"])
@pytest.mark.parametrize("rename", [False, True])
def test_shard_swapped_in_from_another_dataset(ds, other_datasets, other, rename):
    """The foreign shard takes the place of shard 1 (under its name, or under its own name with the
    manifest path updated); sizes, checksums, counts and statistics are recomputed to match."""
    src = other_datasets[other]
    foreign = src / manifest(src)["shards"][1]["path"]
    m = manifest(ds)
    rel = m["shards"][1]["path"]
    (ds / rel).unlink()
    if rename:
        rel = f"shards/{foreign.name}"
        m["shards"][1]["path"] = rel
        write_manifest(ds, m)
    shutil.copy(foreign, ds / rel)
    recompute(ds)
    code, out = run(ds)
    assert code == 1 and rel in out
    p = found(ds, "identity", rel, "metadata muon_pipeline.shard")
    assert ("another dataset" in p.message) if other == "config" else ("holds unit" in p.message)


def test_shard_listed_twice(ds):
    m = manifest(ds)
    m["shards"].append(dict(m["shards"][0]))
    write_manifest(ds, m)
    recompute(ds)
    code, out = run(ds)
    assert code == 1
    rel = m["shards"][0]["path"]
    assert "shards[0] and shards[3]" in found(ds, "duplicate", rel, "shards[3]").message
    found(ds, "duplicate", rel, "unit")  # the same entry range of the input twice


# ---------------------------------------------------------------------------------------------- values

def _muon_row(d, rel, pick):
    """(row, flat muon index) of the first muon of shard ``rel`` for which ``pick(pt, eta)`` holds."""
    t = pq.read_table(d / rel)
    mu = t.column("truthMuons").combine_chunks()
    pt, eta = mu.values.field("truthMuon_pt").to_numpy(), mu.values.field("truthMuon_eta").to_numpy()
    k = int(np.flatnonzero(pick(pt, eta))[0])
    row = int(np.searchsorted(np.asarray(mu.offsets), k, side="right")) - 1
    return row, k


@pytest.mark.parametrize("field,value,config_key", [("truthMuon_pt", 4.5, "min_pt"),
                                                     ("truthMuon_eta", -2.75, "max_abs_eta")])
def test_muon_outside_the_configured_cuts(ds, field, value, config_key):
    rel = manifest(ds)["shards"][2]["path"]
    row, k = _muon_row(ds, rel, lambda pt, eta: np.arange(len(pt)) >= 10)

    def plant(t):
        t = replace_child(t, "truthMuons", field, lambda v: np.where(np.arange(len(v)) == k, value, v))
        # q/pT made consistent, so that only the cut is broken
        pt = t.column("truthMuons").combine_chunks().values.field("truthMuon_pt").to_numpy()
        q = t.column("truthMuons").combine_chunks().values.field("truthMuon_q").to_numpy()
        return replace_child(t, "truthMuons", "truthMuon_qpt", lambda v: (q / pt.astype(np.float64)).astype(np.float32))

    rewrite(ds, plant, shard=2)
    code, out = run(ds)
    assert code == 1 and rel in out and f"truthMuons.{field}" in out
    p = found(ds, "cuts", rel, f"truthMuons.{field}", [row])
    assert config_key in p.message and p.count == 1


def test_qpt_sign_flipped(ds):
    rel = manifest(ds)["shards"][0]["path"]
    row, k = _muon_row(ds, rel, lambda pt, eta: np.arange(len(pt)) == 5)
    rewrite(ds, lambda t: replace_child(t, "truthMuons", "truthMuon_qpt",
                                        lambda v: np.where(np.arange(len(v)) == k, -v, v)))
    assert run(ds)[0] == 1
    found(ds, "formula", rel, "truthMuons.truthMuon_qpt", [row])


def _two_muon_swap(t):
    """Swap the truth links 0 <-> 1 of the first event with two muons whose hit counts differ."""
    hits = t.column("hits").combine_chunks()
    links = hits.values.field("spacePoint_truthLink").to_numpy()
    hoff = np.asarray(hits.offsets)
    nmu = np.diff(np.asarray(t.column("truthMuons").combine_chunks().offsets))
    for row in np.flatnonzero(nmu == 2):
        ev = links[hoff[row]:hoff[row + 1]]
        if (ev == 0).sum() != (ev == 1).sum():
            break
    sel = np.zeros(len(links), bool)
    sel[hoff[row]:hoff[row + 1]] = True
    _two_muon_swap.row = int(row)
    return replace_child(t, "hits", "spacePoint_truthLink",
                         lambda v: np.where(sel & (v == 0), 1, np.where(sel & (v == 1), 0, v)))


def test_truth_links_of_two_muons_swapped(ds):
    """Nothing stored contradicts a swap (counts and statistics recomputed): only the raw input does."""
    rel = rewrite(ds, _two_muon_swap)
    code, out = run(ds, "--source", "all")
    assert code == 1
    p = found(ds, "source", rel, "hits.spacePoint_truthLink", [_two_muon_swap.row], source="all")
    assert "re-derivation" in p.message


def test_source_entry_edited(ds):
    """An edit that keeps the order and the unit's range: caught by re-deriving from the raw input."""
    rel = manifest(ds)["shards"][1]["path"]
    entry = pq.read_table(ds / rel, columns=["source_entry"]).column(0).to_numpy()
    row = int(np.flatnonzero(np.diff(entry) > 1)[0])  # a gap after this row: entry + 1 stays in order
    rewrite(ds, lambda t: t.set_column(t.column_names.index("source_entry"), t.schema.field("source_entry"),
                                       pa.array(np.where(np.arange(len(entry)) == row, entry + 1, entry))), shard=1)
    code, out = run(ds, "--source", "all")
    assert code == 1 and rel in out
    found(ds, "source", rel, "source_entry", [row], source="all")
    # out of the unit's range or out of order: the default level already sees it
    rewrite(ds, lambda t: t.set_column(t.column_names.index("source_entry"), t.schema.field("source_entry"),
                                       pa.array(np.where(np.arange(len(entry)) == 0, 10_000, entry))), shard=1)
    found(ds, "provenance", rel, "source_entry", [0])


def test_statistics_multiplied_by_ten(ds):
    m = manifest(ds)
    m["statistics"]["hits"]["r"] = {k: v * 10 for k, v in m["statistics"]["hits"]["r"].items()}
    write_manifest(ds, m)
    code, out = run(ds)
    assert code == 1 and "statistics.hits.r" in out
    assert "mean" in found(ds, "statistics", None, "statistics.hits.r").message


@pytest.mark.parametrize("new_min_pt", [4.0, 30.0])
def test_config_min_pt_edited(ds, new_min_pt):
    m = manifest(ds)
    m["config"]["selection"]["min_pt"] = new_min_pt
    write_manifest(ds, m)
    code, out = run(ds)
    assert code == 1 and "dataset_id" in out
    found(ds, "identity", None, "dataset_id")
    for s in m["shards"]:
        assert "another dataset" in found(ds, "identity", s["path"], "metadata muon_pipeline.shard").message
    if new_min_pt > 5:  # raised above stored muons: the cut check names them too
        found(ds, "cuts", None, "truthMuons.truthMuon_pt")


def test_stray_file_in_shards(ds):
    rel = manifest(ds)["shards"][0]["path"]
    shutil.copy(ds / rel, ds / "shards" / "part-x.parquet.bak")
    (ds / "shards" / "notes").mkdir()
    code, out = run(ds)
    assert code == 1
    found(ds, "unlisted", "shards/part-x.parquet.bak")
    found(ds, "unlisted", "shards/notes")


def test_bit_flips_with_the_checksum_updated(ds, tmp_path):
    """19 single-bit flips anywhere in a shard, sha256 and size updated: every one is caught, most by
    the default level, all by --source (which compares bytes with a re-derivation)."""
    m0 = manifest(ds)
    rel = m0["shards"][1]["path"]
    original = (ds / rel).read_bytes()
    rng = np.random.default_rng(19)
    by_default = 0
    for pos in rng.integers(0, len(original), 19):
        data = bytearray(original)
        data[int(pos)] ^= 1 << int(rng.integers(0, 8))
        (ds / rel).write_bytes(bytes(data))
        m = json.loads(json.dumps(m0))
        from pipeline.storage import OutputDir

        m["shards"][1]["sha256"] = OutputDir(str(ds)).sha256(rel)
        write_manifest(ds, m)
        default = validate_dataset(str(ds))
        by_default += not default.ok
        report = default if not default.ok else validate_dataset(str(ds), source="all")
        assert not report.ok, f"flip at byte {pos} passed"
        assert all(p.shard == rel for p in report.problems if p.shard), [str(p) for p in report.problems]
    assert by_default >= 10  # the figure is in the README (bench/validate_breakage.py prints it)


# ---------------------------------------------------------------------------------------------- shape

def test_shard_path_is_a_directory(ds):
    rel = manifest(ds)["shards"][0]["path"]
    (ds / rel).unlink()
    (ds / rel).mkdir()
    code, out = run(ds)
    assert code == 1 and rel in out and "directory" in out


@pytest.mark.parametrize("key", ["sha256", "bytes", "unit", "path", "rows"])
def test_shard_entry_without_a_key(ds, key):
    m = manifest(ds)
    del m["shards"][0][key]
    write_manifest(ds, m)
    code, out = run(ds)
    assert code == 1 and f"shards[0].{key}" in out
    assert found(ds, "manifest", None, f"shards[0].{key}").message == "missing"


@pytest.mark.parametrize("edit", [
    lambda m: m.pop("schema"), lambda m: m.update(schema={"name": "muon-hits", "version": "two"}),
    lambda m: m.update(shards="all"), lambda m: m["shards"].__setitem__(1, "shards/x.parquet"),
    lambda m: m.pop("cutflow"), lambda m: m["totals"].update(events="many"), lambda m: m.update(inputs=[{}]),
    lambda m: m["config"].pop("selection"), lambda m: m.update(statistics=[]), lambda m: m.pop("tool_version"),
    lambda m: m["shards"][0]["unit"].update(entry_start=None)])
def test_malformed_manifest_is_a_problem_not_a_traceback(ds, edit):
    m = manifest(ds)
    edit(m)
    write_manifest(ds, m)
    code, out = run(ds)
    assert code == 1 and "[manifest]" in out


@pytest.mark.parametrize("text", ["[1, 2]", "{not json", '{"format": "muon-pipeline-dataset"}'])
def test_unreadable_manifest(ds, text):
    (ds / "_manifest.json").write_text(text)
    code, out = run(ds)
    assert code == 1 and "manifest" in out


def test_missing_directory_is_a_usage_error(tmp_path):
    code, out = run(tmp_path / "nope")
    assert code == 2 and "no such directory" in out
    code, out = run(tmp_path, "--source", "-1")
    assert code == 2


def test_source_sample_of_a_sound_dataset(ds):
    code, out = run(ds, "--source", "2")
    assert code == 0 and "2 unit(s) re-derived" in out
    report = validate_dataset(str(ds), source="all")
    assert report.ok and report.source_units_checked == 3


# ---- readers refuse what validate rejects, in one line (found by a second break-it review) ----

def _reader_outputs(d) -> dict[str, tuple[int, str]]:
    from pipeline import read_dataset
    from pipeline.errors import DatasetError

    out = {}
    r = CliRunner().invoke(main, ["inspect", str(d)])
    out["inspect"] = (r.exit_code, r.output)
    try:
        read_dataset(str(d), verify_checksums=False)
        out["read_dataset"] = (0, "")
    except DatasetError as err:
        out["read_dataset"] = (1, str(err))
    return out


def test_readers_refuse_a_row_dropped_with_the_checksum_fixed(ds):
    m = manifest(ds)
    rel = m["shards"][0]["path"]
    table = pq.read_table(ds / rel)
    pq.write_table(table.slice(1).replace_schema_metadata(table.schema.metadata), ds / rel, row_group_size=50)
    from pipeline.storage import OutputDir

    out = OutputDir(str(ds))
    m["shards"][0].update(bytes=out.size(rel), sha256=out.sha256(rel))
    write_manifest(ds, m)  # rows left as they were: the footer says one fewer
    for name, (code, text) in _reader_outputs(ds).items():
        assert code == 1 and f"{table.num_rows - 1} rows, the manifest says {table.num_rows}" in text, (name, text)


def test_readers_report_bit_rot_in_one_line(ds):
    m = manifest(ds)
    rel = m["shards"][0]["path"]
    data = bytearray((ds / rel).read_bytes())
    # inside a compressed page of a column every reader decodes (inspect scans the technology codes);
    # the manifest is left alone
    meta = pq.ParquetFile(ds / rel).metadata.row_group(0)
    chunk = next(meta.column(i) for i in range(meta.num_columns)
                 if meta.column(i).path_in_schema.endswith("spacePoint_technology"))
    middle = chunk.data_page_offset + chunk.total_compressed_size // 2
    for i in range(middle, middle + 32):  # a run of flipped bits: one flip can decode to other valid values
        data[i] ^= 0x10
    (ds / rel).write_bytes(bytes(data))
    for name, (code, text) in _reader_outputs(ds).items():
        assert code == 1 and "Traceback" not in text and rel in text, (name, text)


@pytest.mark.parametrize("key", ["skipped", "statistics"])
def test_readers_refuse_a_manifest_without_a_key_they_read(ds, key):
    m = manifest(ds)
    del m[key]
    write_manifest(ds, m)
    for name, (code, text) in _reader_outputs(ds).items():
        assert code == 1 and f"key {key}" in text, (name, text)


@pytest.mark.parametrize(("key", "value"), [("format_version", 99), ("dataset_id", None), ("units", -5)])
def test_manifest_keys_readers_rely_on(ds, key, value):
    m = manifest(ds)
    if value is None:
        del m[key]
    else:
        m[key] = value
    write_manifest(ds, m)
    code, out = run(ds)
    assert code == 1 and key in out
    for name, (code, text) in _reader_outputs(ds).items():
        assert code == 1 and f"key {key}" in text, (name, text)
