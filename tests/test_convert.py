"""convert: selection vs a slow per-event reference, bit-exact round trip, manifest bookkeeping."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import uproot
from click.testing import CliRunner

from pipeline import convert, read_dataset
from pipeline.cli import main
from pipeline.config import ConvertConfig
from pipeline.selection import TECHNOLOGIES, SelectionConfig
from pipeline.transform import TransformConfig


def slow_reference(path, min_pt=5.0, max_abs_eta=2.7, min_hits=3, technologies=tuple(TECHNOLOGIES)):
    """The existing preparation's loop, per event and per track, in plain Python."""
    tree = uproot.open(path)["MuonHitDump"]
    arrays = tree.arrays(library="np")
    allowed = {TECHNOLOGIES[t] for t in technologies}
    events = []
    for i in range(tree.num_entries):
        hit_fields = {k: list(arrays[k][i]) for k in arrays if k.startswith("spacePoint_")}
        keep_hit = [t in allowed for t in hit_fields["spacePoint_technology"]]
        hits = [{k: v[j] for k, v in hit_fields.items()} for j in range(len(keep_hit)) if keep_hit[j]]
        muons = []
        new_index = {}
        for m in range(len(arrays["truthMuon_pt"][i])):
            n = sum(1 for h in hits if h["spacePoint_truthLink"] == m)
            pt, eta = arrays["truthMuon_pt"][i][m], arrays["truthMuon_eta"][i][m]
            if pt >= min_pt and abs(eta) <= max_abs_eta and n >= min_hits:
                new_index[m] = len(muons)
                muons.append({k: arrays[k][i][m] for k in ("truthMuon_pt", "truthMuon_eta", "truthMuon_phi", "truthMuon_q")})
        if not muons:
            continue
        for h in hits:
            h["spacePoint_truthLink"] = new_index.get(h["spacePoint_truthLink"], -1)
        events.append({"eventNumber": arrays["eventNumber"][i], "source_entry": i, "hits": hits, "truthMuons": muons})
    return events


def _compare(dataset_dir, reference):
    table = read_dataset(str(dataset_dir))
    rows = table.to_pylist()
    assert len(rows) == len(reference)
    for got, ref in zip(rows, reference):
        assert got["eventNumber"] == ref["eventNumber"] and got["source_entry"] == ref["source_entry"]
        assert len(got["hits"]) == len(ref["hits"]) and len(got["truthMuons"]) == len(ref["truthMuons"])
        for gh, rh in zip(got["hits"], ref["hits"]):
            for k, v in rh.items():
                # bit-exact: the float32 raw value read back equals the ROOT value
                assert np.float32(gh[k]) == v if isinstance(v, np.floating) else gh[k] == v, k
        for gm, rm in zip(got["truthMuons"], ref["truthMuons"]):
            for k, v in rm.items():
                assert np.float32(gm[k]) == v if isinstance(v, np.floating) else gm[k] == v, k
            assert np.float32(gm["truthMuon_qpt"]) == np.float32(np.float64(rm["truthMuon_q"]) / np.float64(rm["truthMuon_pt"]))


def test_selection_equals_slow_reference_on_random_dump(tmp_path, random_dump):
    out = tmp_path / "ds"
    convert([str(random_dump)], str(out), ConvertConfig(schema_version=2, shard_events=150), workers=1, quiet=True)
    _compare(out, slow_reference(random_dump))


def test_selection_options_equal_slow_reference(tmp_path, random_dump):
    sel = SelectionConfig(min_pt=10.0, max_abs_eta=2.0, min_hits=2, technologies=("MDT", "TGC", "MM"))
    out = tmp_path / "ds"
    convert([str(random_dump)], str(out), ConvertConfig(schema_version=2, transform=TransformConfig(sel)),
            workers=1, quiet=True)
    _compare(out, slow_reference(random_dump, 10.0, 2.0, 2, ("MDT", "TGC", "MM")))


def test_selection_equals_slow_reference_on_shipped_sample(converted_sample, sample_root):
    _compare(converted_sample, slow_reference(sample_root))


def test_manifest_reconciles_and_describes_the_data(converted_sample, sample_root):
    m = json.loads((converted_sample / "_manifest.json").read_text())
    cf = m["cutflow"]
    entries = uproot.open(sample_root)["MuonHitDump"].num_entries
    assert cf["entries_in"] == entries == cf["events_out"] + cf["events_cut"] + cf["entries_skipped"]
    assert cf["muons_in"] == cf["muons_fail_pt"] + cf["muons_fail_eta"] + cf["muons_fail_hits"] + cf["muons_out"]
    table = read_dataset(str(converted_sample))
    assert m["totals"]["events"] == table.num_rows == cf["events_out"]
    assert m["inputs"][0]["uuid"] == str(uproot.open(sample_root).file.uuid)
    # streaming statistics equal a direct numpy computation over all hits
    hits = table.column("hits").combine_chunks().values
    for name in ("r", "eta", "spacePoint_time"):
        v = hits.field(name).to_numpy().astype(np.float64)
        st = m["statistics"]["hits"][name]
        assert st["count"] == v.size
        assert st["mean"] == pytest.approx(v.mean(), rel=1e-12, abs=1e-9)
        assert st["std"] == pytest.approx(v.std(), rel=1e-9)
        assert (st["min"], st["max"]) == (v.min(), v.max())
    for shard in m["shards"]:
        md = pq.ParquetFile(converted_sample / shard["path"]).schema_arrow.metadata
        assert json.loads(md[b"muon_pipeline.schema"]) == {"name": "muon-hits", "version": 2}


def test_output_independent_of_step_size(tmp_path, random_dump):
    cfg = ConvertConfig(schema_version=2, row_group_size=64)
    convert([str(random_dump)], str(tmp_path / "a"), cfg, workers=1, step_size=37, quiet=True)
    convert([str(random_dump)], str(tmp_path / "b"), cfg, workers=1, step_size="10 MB", quiet=True)
    ma = json.loads((tmp_path / "a/_manifest.json").read_text())
    mb = json.loads((tmp_path / "b/_manifest.json").read_text())
    assert [s["sha256"] for s in ma["shards"]] == [s["sha256"] for s in mb["shards"]]
    # row group k holds the selected events of input entries [64k, 64k + 64)
    pf = pq.ParquetFile(tmp_path / "a" / ma["shards"][0]["path"])
    for k in range(pf.num_row_groups):
        entries = pf.read_row_group(k, columns=["source_entry"]).column(0).to_numpy()
        assert len(set(entries // 64)) == 1
    assert ma["statistics"] == mb["statistics"]


def test_invalid_values_error_names_file_entry_field(tmp_path):
    import awkward as ak
    from rawdump import random_events, write_dump

    ev = random_events(20, seed=3)
    hits = ev["spacePoint"]
    x = ak.to_numpy(ak.flatten(hits["globEdgeLowX"])).copy()
    y = ak.to_numpy(ak.flatten(hits["globEdgeLowY"])).copy()
    counts = ak.num(hits)
    first_of_7 = int(np.sum(ak.to_numpy(counts)[:7]))
    x[first_of_7 + 1] = 0.0
    y[first_of_7 + 1] = 0.0  # on the beam axis: eta = inf
    hits = ak.with_field(hits, ak.unflatten(x, counts), "globEdgeLowX")
    hits = ak.with_field(hits, ak.unflatten(y, counts), "globEdgeLowY")
    ev["spacePoint"] = hits
    path = tmp_path / "bad.root"
    write_dump(path, ev)
    res = CliRunner().invoke(main, ["convert", str(path), "-o", str(tmp_path / "o"), "-q"])
    assert res.exit_code == 1
    assert f"file {path}, entry 7, field eta" in res.output
    assert not list((tmp_path / "o" / "shards").glob("*.parquet"))  # nothing partial is visible
    for policy, events_invalid in (("drop-event", 1), ("drop-hit", 0)):
        out = tmp_path / policy
        res = CliRunner().invoke(main, ["convert", str(path), "-o", str(out), "-q", "--on-invalid", policy,
                                        "--min-pt", "0", "--max-abs-eta", "10", "--min-hits", "0", "--keep-empty-events"])
        assert res.exit_code == 0, res.output
        cf = json.loads((out / "_manifest.json").read_text())["cutflow"]
        assert cf["events_invalid"] == events_invalid and cf["hits_invalid"] == 1 - events_invalid
        assert cf["entries_in"] == 20 == cf["events_out"] + cf["events_cut"]


def test_cli_usage_errors(tmp_path, random_dump):
    r = CliRunner().invoke(main, ["convert", str(random_dump), "-o", str(tmp_path / "o"), "--technologies", "MDT,XYZ"])
    assert r.exit_code == 2 and "unknown technolog" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["convert", str(random_dump), "-o", str(tmp_path / "o"), "--compression", "rar"])
    assert r.exit_code == 2 and "unknown compression" in r.output
    r = CliRunner().invoke(main, ["convert", str(random_dump), "-o", str(tmp_path / "o"), "--step-size", "lots"])
    assert r.exit_code == 2 and "--step-size" in r.output
    r = CliRunner().invoke(main, ["convert", str(random_dump), "-o", str(tmp_path / "o"), "--schema-version", "9"])
    assert r.exit_code != 0 and "unknown schema version 9" in r.output


def test_changed_configuration_is_refused_then_reconfigured(tmp_path, random_dump):
    out = str(tmp_path / "o")
    base = ["convert", str(random_dump), "-o", out, "-q", "-j", "1"]
    assert CliRunner().invoke(main, base).exit_code == 0
    r = CliRunner().invoke(main, [*base, "--min-pt", "7"])
    assert r.exit_code == 2 and "min_pt: 5.0 -> 7.0" in r.output
    r = CliRunner().invoke(main, [*base, "--min-pt", "7", "--reconfigure"])
    assert r.exit_code == 0
    m = json.loads((tmp_path / "o/_manifest.json").read_text())
    assert m["config"]["selection"]["min_pt"] == 7.0
    assert len(list((tmp_path / "o/shards").glob("*.parquet"))) == len(m["shards"])  # stale shards removed


def test_preprocessing_never_imports_the_training_stack(tmp_path, random_dump):
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from pipeline.cli import main\n"
        f"r = CliRunner().invoke(main, ['convert', {str(random_dump)!r}, '-o', {str(tmp_path / 'o')!r}, '-q', '-j', '1'])\n"
        "assert r.exit_code == 0, r.output\n"
        "CliRunner().invoke(main, ['--help'])\n"
        "heavy = sorted(m for m in ('torch', 'lightning', 'matplotlib') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_batch_logs_get_plain_progress_lines(tmp_path, random_dump):
    import io

    from pipeline.progress import Reporter

    stream = io.StringIO()  # not a terminal: periodic lines, no redrawn bar
    with Reporter(1000, interval=0.0, stream=stream) as rep:
        rep.advance(250, 5000)
        rep.advance(750, 15000)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("converted 250/1000 entries (25.0 %)") and "M hits/s" in lines[0] and "ETA" in lines[0]
    assert lines[-1].startswith("converted 1000/1000 entries (100.0 %)")
    quiet = io.StringIO()
    with Reporter(10, quiet=True, interval=0.0, stream=quiet) as rep:
        rep.advance(10, 1)
        rep.log("x")
    assert quiet.getvalue() == ""


def test_public_api_resolves():
    import pipeline

    for name in pipeline.__all__:
        assert getattr(pipeline, name) is not None, name
    with pytest.raises(AttributeError):
        pipeline.no_such_thing  # noqa: B018


def test_layout_file_maps_other_branch_names(tmp_path, random_dump):
    """A dump with another tree and other branch names converts with a small YAML layout."""
    import awkward as ak
    from rawdump import random_events, write_dump

    ev = random_events(500, seed=1)  # the same events as random_dump
    renamed = {"hit": ev["spacePoint"], "mu": ev["truthMuon"], "evt": ev["eventNumber"]}
    other = tmp_path / "other.root"
    write_dump(other, renamed, tree="Events")
    layout = tmp_path / "layout.yaml"
    lines = ["tree: Events", "branches:", "  eventNumber: evt"]
    lines += [f"  spacePoint_{f}: hit_{f}" for f in ak.fields(ev["spacePoint"])]
    lines += [f"  truthMuon_{f}: mu_{f}" for f in ak.fields(ev["truthMuon"])]
    layout.write_text("\n".join(lines) + "\n")
    r = CliRunner().invoke(main, ["convert", str(other), "-o", str(tmp_path / "a"), "--layout", str(layout), "-q"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["convert", str(random_dump), "-o", str(tmp_path / "b"), "-q"])
    a = read_dataset(str(tmp_path / "a")).drop_columns(["source_file"])
    b = read_dataset(str(tmp_path / "b")).drop_columns(["source_file"])
    assert a.equals(b)
    layout.write_text("tree: Events\nbranches: {spacePoint_nope: x}\n")
    r = CliRunner().invoke(main, ["convert", str(other), "-o", str(tmp_path / "c"), "--layout", str(layout)])
    assert r.exit_code == 2 and "spacePoint_nope" in r.output and "not raw fields" in r.output


def test_inspect_counts_match_the_data(converted_sample):
    r = CliRunner().invoke(main, ["inspect", str(converted_sample), "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    hits = read_dataset(str(converted_sample)).column("hits").combine_chunks().values
    tech = hits.field("spacePoint_technology").to_numpy()
    names = {v: k for k, v in TECHNOLOGIES.items()}
    assert info["technology_hits"] == {names[t]: int((tech == t).sum()) for t in np.unique(tech)}
    assert info["hits_on_muons"] == int((hits.field("spacePoint_truthLink").to_numpy() >= 0).sum())
    assert info["events"] == info["cutflow"]["events_out"] and len(info["model_inputs"]) == 23
    r = CliRunner().invoke(main, ["inspect", str(converted_sample)])
    assert r.exit_code == 0 and "cut flow" in r.output and "hits.eta" in r.output


@pytest.mark.parametrize(("group", "field", "dtype", "value", "name"), [
    ("spacePoint", "channel", np.uint32, 3_000_000_000, "spacePoint_channel"),  # wraps to -1 294 967 296
    (None, "eventNumber", np.uint64, 2**63, "eventNumber"),  # wraps to -2**63
])
def test_unsigned_values_beyond_the_signed_range_are_refused(tmp_path, group, field, dtype, value, name):
    """Issue 9, case 5: same-width unsigned → signed casts wrap silently; checked by value range now."""
    import awkward as ak
    from rawdump import random_events, write_dump

    ev = random_events(12, seed=4)
    if group is None:
        x = ev[field].astype(dtype)
        x[5] = value
        ev[field] = x
    else:
        hits = ev[group]
        counts = ak.num(hits)
        x = ak.to_numpy(ak.flatten(hits[field])).astype(dtype)
        x[int(np.sum(ak.to_numpy(counts)[:5]))] = value  # first hit of entry 5
        ev[group] = ak.with_field(hits, ak.unflatten(x, counts), field)
    path = tmp_path / "wide.root"
    write_dump(path, ev)
    res = CliRunner().invoke(main, ["convert", str(path), "-o", str(tmp_path / "o"), "-q"])
    assert res.exit_code == 1, res.output
    assert f"entry 5, field {name}" in res.output and str(value) in res.output
    assert not list((tmp_path / "o").rglob("*.parquet"))
    # in-range values of the same unsigned dtype still convert, bit for bit
    ev2 = random_events(12, seed=4)
    ev2["eventNumber"] = ev2["eventNumber"].astype(np.uint64)
    write_dump(tmp_path / "ok.root", ev2)
    res = CliRunner().invoke(main, ["convert", str(tmp_path / "ok.root"), "-o", str(tmp_path / "ok"), "-q"])
    assert res.exit_code == 0, res.output


def test_file_names_are_names_not_syntax(tmp_path, random_dump):
    """Issue 9, case 8: an existing literal path wins over glob expansion; '.root:' is not split off."""
    import shutil

    from rawdump import random_events, write_dump

    shutil.copy(random_dump, tmp_path / "sample[1].root")
    write_dump(tmp_path / "sample1.root", random_events(7, seed=9))  # what the glob would pick instead
    shutil.copy(random_dump, tmp_path / "dump.root:v2.root")
    want = json.loads(_convert_cli(tmp_path, random_dump, "ref"))
    for name in ("sample[1].root", "dump.root:v2.root"):
        got = json.loads(_convert_cli(tmp_path, tmp_path / name, name.replace(":", "_")))
        assert got["cutflow"] == want["cutflow"]
        assert [i["path"] for i in got["inputs"]] == [str(tmp_path / name)]
    # file:// URLs follow the same rules: literal first, then a glob
    url = f"file://{tmp_path / 'sample[1].root'}"
    got = json.loads(_convert_cli(tmp_path, url, "url-literal"))
    assert [i["path"] for i in got["inputs"]] == [url] and got["cutflow"] == want["cutflow"]
    got = json.loads(_convert_cli(tmp_path, f"file://{tmp_path / 'sample?.root'}", "url-glob"))
    assert [i["path"] for i in got["inputs"]] == [f"file://{tmp_path / 'sample1.root'}"]


def _convert_cli(tmp_path, path, out_name) -> str:
    out = tmp_path / f"out-{out_name}"
    res = CliRunner().invoke(main, ["convert", str(path), "-o", str(out), "-q"])
    assert res.exit_code == 0, res.output
    return (out / "_manifest.json").read_text()


def test_unit_where_nothing_passes_gives_a_shard_every_reader_opens(tmp_path, random_dump):
    """Issue 9, case 9: a unit with no selected event wrote a Parquet file without row groups."""
    import awkward as ak

    out = tmp_path / "none"
    res = CliRunner().invoke(main, ["convert", str(random_dump), "-o", str(out), "-q", "--min-pt", "1e6"])
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["cutflow"]["events_out"] == 0 and manifest["cutflow"]["entries_in"] == 500
    files = [str(out / s["path"]) for s in manifest["shards"]]
    assert files and all(pq.ParquetFile(f).num_row_groups == 1 for f in files)
    assert len(ak.concatenate([ak.from_parquet(f) for f in files])) == 0  # the README's awkward recipe
    res = CliRunner().invoke(main, ["validate", str(out)])
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize(("group", "field", "value", "name", "why"), [
    ("truthMuon", "q", 5, "truthMuon_q", "not in [-1, 1]"),
    ("truthMuon", "q", 0, "truthMuon_q", "not in [-1, 1]"),
    ("spacePoint", "globEdgeHighX", 3e30, "spacePoint_globEdgeHighX", "outside [-30000, 30000]"),
    ("spacePoint", "technology", 300, "spacePoint_technology", "outside [-1, 255]"),  # codes 6..255 are kept
])
def test_convert_never_writes_what_validate_rejects(tmp_path, group, field, value, name, why):
    """Issue 9, case 4: values outside the schema's ranges and allowed sets were written, then rejected
    by validate. Now one set of rules (pipeline.rules) serves the writer and validate."""
    import awkward as ak
    from rawdump import random_events, write_dump

    ev = random_events(40, seed=12)
    rec = ev[group]
    counts = ak.num(rec)
    x = ak.to_numpy(ak.flatten(rec[field])).copy()
    entry = int(np.flatnonzero(ak.to_numpy(counts) > 0)[6])
    x[int(np.sum(ak.to_numpy(counts)[:entry]))] = value
    ev[group] = ak.with_field(rec, ak.unflatten(x, counts), field)
    path = tmp_path / "bad.root"
    write_dump(path, ev)
    loose = ["--min-pt", "0", "--max-abs-eta", "10", "--min-hits", "0", "--keep-empty-events"]
    res = CliRunner().invoke(main, ["convert", str(path), "-o", str(tmp_path / "o"), "-q", *loose])
    assert res.exit_code == 1, res.output
    assert f"entry {entry}, field {name}" in res.output and why in res.output
    for policy in ("drop-event", "drop-hit"):
        out = tmp_path / policy
        res = CliRunner().invoke(main, ["convert", str(path), "-o", str(out), "-q", "--on-invalid", policy, *loose])
        assert res.exit_code == 0, res.output
        cf = json.loads((out / "_manifest.json").read_text())["cutflow"]
        assert cf["events_invalid"] + cf["hits_invalid"] == 1
        assert cf["entries_in"] == 40 == cf["events_out"] + cf["events_cut"]
        res = CliRunner().invoke(main, ["validate", str(out)])
        assert res.exit_code == 0, res.output


def test_batch_logs_get_a_heartbeat_while_nothing_finishes():
    """Issue 9, case 7: a stalled read left the batch log silent; a heartbeat line says the job lives."""
    import io
    import time

    from pipeline.progress import Reporter

    stream = io.StringIO()
    with Reporter(1000, interval=0.2, stream=stream) as rep:
        time.sleep(0.7)  # no chunk finishes
        rep.advance(1000, 10)
    lines = stream.getvalue().splitlines()
    beats = [ln for ln in lines if ln.startswith("still working: 0/1000 entries done")]
    assert len(beats) >= 2, lines
    quiet = io.StringIO()
    with Reporter(10, quiet=True, interval=0.05, stream=quiet):
        time.sleep(0.2)
    assert quiet.getvalue() == ""


def test_a_plan_with_a_key_this_version_does_not_know_is_resumed(tmp_path, random_dump):
    """A unit of _work/plan.json with an unknown key ended in a TypeError traceback; the plan is read with
    the keys this version knows and the finished units are reused."""
    import json as _json

    from click.testing import CliRunner

    from pipeline.cli import main

    out = tmp_path / "ds"
    assert CliRunner().invoke(main, ["convert", str(random_dump), "-o", str(out), "-q"]).exit_code == 0
    plan = out / "_work" / "plan.json"
    doc = _json.loads(plan.read_text())
    doc["units"][0]["extra"] = 1
    plan.write_text(_json.dumps(doc))
    r = CliRunner().invoke(main, ["convert", str(random_dump), "-o", str(out)])
    assert r.exit_code == 0 and "already done" in r.output, r.output


def test_a_repeated_event_number_is_refused_before_anything_is_written(tmp_path, random_dump):
    """A dump whose eventNumber repeats within the file (a duplicated event, a damaged basket) converted with
    exit 0, then validate rejected the dataset ("eventNumber unique per input"). convert now refuses it while
    planning, for every executor (each runs from that plan), even when the repeat spans two units; with
    --skip-bad-files the input is skipped and counted like any unreadable one."""
    from collections import Counter

    from rawdump import random_events, write_dump

    ev = random_events(120, seed=21)
    numbers = ev["eventNumber"].copy()
    numbers[100], numbers[119], numbers[50] = numbers[10], numbers[10], numbers[7]  # units 0-59 and 60-119
    ev["eventNumber"] = numbers
    path = tmp_path / "dup.root"
    write_dump(path, ev, basket_entries=30)
    counts = Counter(numbers.tolist())
    repeated = sorted(v for v, n in counts.items() if n > 1)
    first = repeated[0]
    entries = [i for i, v in enumerate(numbers.tolist()) if v == first]
    want = (f"file {path}, entry {entries[1]}, field eventNumber: eventNumber {first} occurs {counts[first]} times "
            f"(entries {', '.join(map(str, entries))}); {len(repeated)} value(s) repeat")
    executors = [["-j", "1"], ["-j", "2"], ["--task-index", "1", "--task-count", "2"]]
    try:
        import distributed  # noqa: F401

        executors.append(["--scheduler", "local", "-j", "1"])
    except ImportError:
        pass
    for executor in executors:
        out = tmp_path / "o"
        r = CliRunner().invoke(main, ["convert", str(path), "-o", str(out), "--shard-events", "60", "-q", *executor])
        assert r.exit_code == 1, (executor, r.output)
        assert want in r.output and len(r.output.strip().splitlines()) == 1, (executor, r.output)
        assert not out.exists(), executor  # nothing visible, not even a plan
    out = tmp_path / "skipped"
    r = CliRunner().invoke(main, ["convert", str(random_dump), str(path), "-o", str(out), "--shard-events", "60",
                                  "--skip-bad-files", "-q"])
    assert r.exit_code == 3 and str(path) in r.output, r.output
    m = json.loads((out / "_manifest.json").read_text())
    assert [(s["path"], s["field"], s["entries"]) for s in m["skipped"]["inputs"]] == [(str(path), "eventNumber", 120)]
    assert m["cutflow"]["entries_skipped"] == 120
    assert CliRunner().invoke(main, ["validate", str(out)]).exit_code == 0
