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
    v1 = json.loads((tmp_path / "v1/_manifest.json").read_text())
    assert "eta" not in pq.read_schema(tmp_path / "v1" / v1["shards"][0]["path"]).field("hits").type.value_type.names
    r = run(main, ["migrate", str(tmp_path / "v1"), "--to-version", "2", "-o", str(tmp_path / "m")])
    assert r.exit_code == 0, r.output
    assert validate_dataset(str(tmp_path / "m")).ok
    direct = json.loads((tmp_path / "v2/_manifest.json").read_text())
    migrated = json.loads((tmp_path / "m/_manifest.json").read_text())
    for key in direct:
        if key != "timing":
            assert migrated[key] == direct[key], key  # statistics included, bit for bit
    for s_direct, s_mig in zip(direct["shards"], migrated["shards"]):
        assert pq.read_table(tmp_path / "m" / s_mig["path"]).equals(pq.read_table(tmp_path / "v2" / s_direct["path"]))


def test_migrate_refuses_bad_requests(tmp_path, converted_random, converted_random_v1):
    r = CliRunner().invoke(main, ["migrate", str(converted_random), "--to-version", "2", "-o", str(tmp_path / "x")])
    assert r.exit_code == 2 and "already at v2" in r.output
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    r = CliRunner().invoke(main, ["migrate", str(converted_random_v1), "--to-version", "2", "-o", str(tmp_path / "full")])
    assert r.exit_code == 2 and "not empty" in r.output and "(f)" in r.output
    assert (tmp_path / "full" / "f").read_text() == "x"


def _v1_copy(tmp_path, converted_random_v1):
    import shutil

    src = tmp_path / "v1"
    shutil.copytree(converted_random_v1, src)
    return src, json.loads((src / "_manifest.json").read_text())


def test_migrate_refuses_a_shard_whose_checksum_changed(tmp_path, converted_random_v1):
    """Issue 9, case 3: a corrupted v1 shard was migrated and given a fresh checksum."""
    import pyarrow as pa

    src, manifest = _v1_copy(tmp_path, converted_random_v1)
    shard = src / manifest["shards"][0]["path"]
    table = pq.read_table(shard)
    numbers = table.column("eventNumber").to_numpy().copy()
    numbers[3] += 1  # a valid-looking file with one value changed after the manifest was written
    table = table.set_column(0, "eventNumber", pa.array(numbers))
    pq.write_table(table, shard)
    r = CliRunner().invoke(main, ["migrate", str(src), "--to-version", "2", "-o", str(tmp_path / "m")])
    assert r.exit_code == 1 and manifest["shards"][0]["path"] in r.output and "sha256" in r.output
    assert not (tmp_path / "m" / "_manifest.json").exists()


def test_migrate_refuses_a_non_finite_eta(tmp_path):
    """Issue 9, case 3: a hit on the beam axis (accepted at v1, no eta) became eta = +inf at v2."""
    import awkward as ak
    import numpy as np
    from rawdump import random_events, write_dump

    ev = random_events(30, seed=8)
    hits = ev["spacePoint"]
    counts = ak.num(hits)
    first = int(np.sum(ak.to_numpy(counts)[:11]))
    for c in ("globEdgeLowX", "globEdgeLowY"):
        x = ak.to_numpy(ak.flatten(hits[c])).copy()
        x[first] = 0.0
        hits = ak.with_field(hits, ak.unflatten(x, counts), c)
    ev["spacePoint"] = hits
    write_dump(tmp_path / "axis.root", ev)
    common = ["-q", "--min-pt", "0", "--max-abs-eta", "10", "--min-hits", "0", "--keep-empty-events"]
    r = CliRunner().invoke(main, ["convert", str(tmp_path / "axis.root"), "-o", str(tmp_path / "v1"),
                                  "--schema-version", "1", *common])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["migrate", str(tmp_path / "v1"), "--to-version", "2", "-o", str(tmp_path / "m")])
    assert r.exit_code == 1 and "source entry 11), field eta" in r.output and "non-finite value" in r.output
    assert not (tmp_path / "m" / "_manifest.json").exists()
    assert not list((tmp_path / "m").rglob("*.parquet"))  # nothing partial is visible


def test_an_interrupted_migration_resumes_by_re_running_it(tmp_path, converted_random_v1):
    """Issue 9, case 3: a killed migrate left complete shards without a manifest; re-running was refused."""
    src, _ = _v1_copy(tmp_path, converted_random_v1)
    ref = tmp_path / "ref"
    assert CliRunner().invoke(main, ["migrate", str(src), "--to-version", "2", "-o", str(ref)]).exit_code == 0
    out = tmp_path / "m"
    assert CliRunner().invoke(main, ["migrate", str(src), "--to-version", "2", "-o", str(out)]).exit_code == 0
    (out / "_manifest.json").unlink()  # as if killed after the shards, before the manifest
    (out / "shards" / ".tmp-part-x.parquet.1.ab").write_bytes(b"half")
    r = CliRunner().invoke(main, ["migrate", str(src), "--to-version", "2", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert not [p for p in (out / "shards").iterdir() if p.name.startswith(".tmp-")]
    a, b = json.loads((out / "_manifest.json").read_text()), json.loads((ref / "_manifest.json").read_text())
    assert a["shards"] == b["shards"] and a["statistics"] == b["statistics"]
    # a foreign file in the output is still refused by name
    (out / "_manifest.json").unlink()
    (out / "shards" / "part-foreign.parquet").write_bytes(b"not ours")
    r = CliRunner().invoke(main, ["migrate", str(src), "--to-version", "2", "-o", str(out)])
    assert r.exit_code == 2 and "part-foreign.parquet" in r.output


def test_re_running_a_finished_migration_is_a_no_op(tmp_path, converted_random_v1, random_dump):
    """A kill after the manifest's rename (or a plain re-run) was refused as 'not empty'. So was a re-run
    after a convert resume that had nothing to do but rewrote the source manifest's timing: a migration
    is keyed by the source manifest without its timing block. A different source is still refused."""
    src, _ = _v1_copy(tmp_path, converted_random_v1)
    out = tmp_path / "m"
    assert CliRunner().invoke(main, ["migrate", str(src), "--to-version", "2", "-o", str(out)]).exit_code == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    r = CliRunner().invoke(main, ["migrate", str(src), "--to-version", "2", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert {p.name: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before  # nothing rewritten
    m = json.loads((src / "_manifest.json").read_text())
    m["timing"]["finalized_at"] = "2000-01-01T00:00:00+00:00"  # what a no-op convert resume rewrites
    (src / "_manifest.json").write_text(json.dumps(m, indent=1))
    r = CliRunner().invoke(main, ["migrate", str(src), "--to-version", "2", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert {p.name: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before
    other = tmp_path / "other"  # another dataset: the same events cut into other shards
    r = CliRunner().invoke(main, ["convert", str(random_dump), "-o", str(other), "--schema-version", "1",
                                  "--shard-events", "50", "-q", "-j", "1"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["migrate", str(other), "--to-version", "2", "-o", str(out)])
    assert r.exit_code == 2 and "manifest of another dataset" in r.output


def test_migrate_refuses_its_own_source_under_another_name_or_inside_it(tmp_path, converted_random_v1):
    """`-o` through a link to the source, or a spelling with `..`, was refused only by the lock it had
    taken itself ("another command is writing"); `-o SRC/shards/v2` migrated into the source and broke it."""
    src, _ = _v1_copy(tmp_path, converted_random_v1)
    (tmp_path / "link").symlink_to(src)
    before = sorted(p.relative_to(src).as_posix() for p in src.rglob("*"))
    for output in (tmp_path / "link", f"{src}/../v1", f"{src}/"):
        r = CliRunner().invoke(main, ["migrate", str(src), "--to-version", "2", "-o", str(output)])
        assert r.exit_code == 2 and "is the input dataset folder" in r.output, (output, r.output)
    for output in (src / "shards" / "v2", tmp_path / "link" / "v2"):
        r = CliRunner().invoke(main, ["migrate", str(src), "--to-version", "2", "-o", str(output)])
        assert r.exit_code == 2 and "is inside the input dataset folder" in r.output, (output, r.output)
    assert sorted(p.relative_to(src).as_posix() for p in src.rglob("*")) == before
    assert CliRunner().invoke(main, ["validate", str(src)]).exit_code == 0


def test_a_finished_migration_missing_a_shard_is_redone(tmp_path, converted_random_v1):
    """A re-run of a finished migration whose output had lost a shard said "migrated" and exited 0 while
    `validate` failed: now the migration is redone (the same bytes as the first time)."""
    src, _ = _v1_copy(tmp_path, converted_random_v1)
    out = tmp_path / "m"
    assert CliRunner().invoke(main, ["migrate", str(src), "--to-version", "2", "-o", str(out)]).exit_code == 0
    shards = {p.name: p.read_bytes() for p in (out / "shards").iterdir()}
    victim = sorted(shards)[0]
    (out / "shards" / victim).unlink()
    assert CliRunner().invoke(main, ["validate", str(out)]).exit_code == 1
    r = CliRunner().invoke(main, ["migrate", str(src), "--to-version", "2", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert {p.name: p.read_bytes() for p in (out / "shards").iterdir()} == shards
    assert CliRunner().invoke(main, ["validate", str(out)]).exit_code == 0

