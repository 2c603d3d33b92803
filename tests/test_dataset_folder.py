"""The dataset folder reads with the usual one-liners, shards carry their units, old folders still work.

The manifest is ``_manifest.json``: Parquet readers given the folder itself skip names starting with
``_`` (and ``_work/``), so ``pd.read_parquet(DS)`` and ``pyarrow.dataset.dataset(DS)`` read the
shards. Datasets written before the rename (``manifest.json``) are still read, and a ``convert`` re-run
or a ``migrate`` writes the new name.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from pipeline.cli import main


def _events(ds: Path) -> int:
    return json.loads((ds / "_manifest.json").read_text())["totals"]["events"]


def test_the_manifest_starts_with_an_underscore(converted_random):
    assert (converted_random / "_manifest.json").is_file()
    assert not (converted_random / "manifest.json").exists()


def test_pandas_reads_the_dataset_folder(converted_random):
    pd = pytest.importorskip("pandas")
    assert len(pd.read_parquet(converted_random)) == _events(converted_random)


def test_pyarrow_dataset_reads_the_dataset_folder(converted_random):
    import pyarrow.dataset as pads

    assert pads.dataset(converted_random).to_table().num_rows == _events(converted_random)


def test_pyarrow_parquet_reads_the_dataset_folder(converted_random):
    assert pq.read_table(converted_random).num_rows == _events(converted_random)


def test_polars_reads_the_dataset_folder_glob(converted_random):
    pl = pytest.importorskip("polars")
    assert pl.read_parquet(f"{converted_random}/**/*.parquet").height == _events(converted_random)


def test_duckdb_reads_the_dataset_folder_glob(converted_random):
    duckdb = pytest.importorskip("duckdb")
    rows = duckdb.sql(f"select count(*) from '{converted_random}/**/*.parquet'").fetchall()
    assert rows == [(_events(converted_random),)]


def test_awkward_reads_the_dataset_folder(converted_random):
    ak = pytest.importorskip("awkward")
    events = ak.from_parquet(str(converted_random))
    assert len(events) == _events(converted_random) and "eta" in events.hits.fields


def test_every_field_carries_its_unit_and_description(converted_random):
    from pipeline.schema import load_schema

    schema = load_schema(2)
    arrow = pq.read_schema(next((converted_random / "shards").glob("*.parquet")))
    got = {f.name: f.metadata for f in arrow}
    for col in ("hits", "truthMuons"):
        got.update({f.name: f.metadata for f in arrow.field(col).type.value_field.type})
    for f in schema.fields:
        assert got[f.name] is not None, f.name
        assert got[f.name][b"unit"].decode() == f.unit, f.name
        assert got[f.name][b"description"].decode() == " ".join(f.description.split()), f.name
    assert got["spacePoint_globEdgeLowX"][b"unit"] == b"mm" and got["truthMuon_pt"][b"unit"] == b"GeV"


def test_inspect_shows_the_selection_the_inputs_and_the_units(converted_random):
    r = CliRunner().invoke(main, ["inspect", str(converted_random)], env={"COLUMNS": "160"})
    assert r.exit_code == 0, r.output
    out = r.output
    assert "selection" in out and "pT >= 5.0 GeV" in out and "|eta| <= 2.7" in out and ">= 3 hits" in out
    assert "random.root" in out and "inputs" in out  # the input table, with the file's name
    assert "work unit" in out
    assert "unit" in out and " mm " in out and " GeV " in out  # the statistics' unit column
    info = json.loads(CliRunner().invoke(main, ["inspect", str(converted_random), "--json", "--no-scan"]).output)
    assert info["selection"]["min_pt"] == 5.0 and info["input_files"][0]["path"].endswith("random.root")
    assert info["field_units"]["truthMuon_pt"] == "GeV"


@pytest.fixture
def legacy(tmp_path, converted_random) -> Path:
    """A dataset in the layout written before the rename: ``manifest.json``."""
    ds = tmp_path / "legacy"
    shutil.copytree(converted_random, ds)
    (ds / "_manifest.json").rename(ds / "manifest.json")
    return ds


def test_a_dataset_written_before_the_rename_still_reads(legacy):
    from pipeline import read_dataset
    from pipeline.train.data.info import require_manifest

    r = CliRunner().invoke(main, ["validate", str(legacy)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["inspect", str(legacy), "--no-scan"])
    assert r.exit_code == 0, r.output
    assert read_dataset(str(legacy)).num_rows == json.loads((legacy / "manifest.json").read_text())["totals"]["events"]
    assert require_manifest(legacy) == legacy


def test_migrate_of_an_old_folder_writes_the_new_name(tmp_path, converted_random_v1):
    src = tmp_path / "v1"
    shutil.copytree(converted_random_v1, src)
    (src / "_manifest.json").rename(src / "manifest.json")
    r = CliRunner().invoke(main, ["migrate", str(src), "--to-version", "2", "-o", str(tmp_path / "v2")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "v2" / "_manifest.json").is_file() and not (tmp_path / "v2" / "manifest.json").exists()


def test_finalize_upgrades_an_old_folder_to_the_new_name(legacy):
    r = CliRunner().invoke(main, ["finalize", str(legacy)])
    assert r.exit_code == 0, r.output
    assert (legacy / "_manifest.json").is_file() and not (legacy / "manifest.json").exists()
    assert CliRunner().invoke(main, ["validate", str(legacy)]).exit_code == 0


@pytest.mark.parametrize("command", ["inspect", "validate", "migrate", "read_dataset", "train", "evaluate"])
def test_a_deeply_nested_manifest_is_one_line_in_every_reader(tmp_path, converted_random, command):
    """A hostile `[[[[...]]]]` manifest made inspect, migrate, train, evaluate and read_dataset end in a
    RecursionError traceback (only ValueError was caught)."""

    from click.testing import CliRunner

    from pipeline.cli import main

    ds = tmp_path / "ds"
    shutil.copytree(converted_random, ds)
    for name in ("_manifest.json", "manifest.json"):
        if (ds / name).exists():
            (ds / name).write_text("[" * 200_000 + "]" * 200_000)
    if command == "read_dataset":
        from pipeline import read_dataset
        from pipeline.errors import DatasetError

        with pytest.raises(DatasetError, match="nested too deeply"):
            read_dataset(str(ds))
        return
    args = {"inspect": ["inspect", str(ds)], "validate": ["validate", str(ds)],
            "migrate": ["migrate", str(ds), "--to-version", "2", "-o", str(tmp_path / "m")],
            "train": ["train", "--config", "inverse_pt", "--data", str(ds), "-o", str(tmp_path / "run")],
            "evaluate": ["evaluate", str(tmp_path), "--data", str(ds)]}[command]
    r = CliRunner().invoke(main, args)
    assert r.exit_code in (1, 2) and "Traceback" not in r.output and "RecursionError" not in r.output, r.output
    assert "nested too deeply" in r.output or command == "evaluate", r.output
