"""migrate v1 -> v2 equals a direct v2 convert, without touching the ROOT files."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.validate import validate_dataset


def test_migrate_equals_direct_convert(tmp_path, random_dump):
    run = CliRunner().invoke
    common = ["-q", "-j", "1", "--shard-events", "200", "--row-group-size", "64"]
    assert run(main, ["convert", str(random_dump), "-o", str(tmp_path / "v1"), "--schema-version", "1", *common]).exit_code == 0
    assert run(main, ["convert", str(random_dump), "-o", str(tmp_path / "v2"), *common]).exit_code == 0
    v1 = json.loads((tmp_path / "v1/manifest.json").read_text())
    assert "eta" not in pq.read_schema(tmp_path / "v1" / v1["shards"][0]["path"]).field("hits").type.value_type.names
    r = run(main, ["migrate", str(tmp_path / "v1"), "--to-version", "2", "-o", str(tmp_path / "m")])
    assert r.exit_code == 0, r.output
    assert validate_dataset(str(tmp_path / "m")).ok
    direct = json.loads((tmp_path / "v2/manifest.json").read_text())
    migrated = json.loads((tmp_path / "m/manifest.json").read_text())
    for key in direct:
        if key != "timing":
            assert migrated[key] == direct[key], key  # statistics included, bit for bit
    for s_direct, s_mig in zip(direct["shards"], migrated["shards"]):
        assert pq.read_table(tmp_path / "m" / s_mig["path"]).equals(pq.read_table(tmp_path / "v2" / s_direct["path"]))


def test_migrate_refuses_bad_requests(tmp_path, converted_random):
    r = CliRunner().invoke(main, ["migrate", str(converted_random), "--to-version", "2", "-o", str(tmp_path / "x")])
    assert r.exit_code == 2 and "already at v2" in r.output
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    r = CliRunner().invoke(main, ["migrate", str(converted_random), "--to-version", "2", "-o", str(tmp_path / "full")])
    assert r.exit_code == 2 and "not empty" in r.output
