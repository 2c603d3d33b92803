"""Issue 11: real dumps as they come: RNTuple, other dtypes (precision policy), missing branches (fill),
every technology code, --min-hits 0 against the reference script, distinct invalid-data messages."""

from __future__ import annotations

import json
from fractions import Fraction

import awkward as ak
import numpy as np
import pyarrow.parquet as pq
import pytest
import uproot
from click.testing import CliRunner
from rawdump import flat_branches, random_events, write_dump, write_rntuple

from pipeline import read_dataset
from pipeline.cli import main
from pipeline.selection import TECHNOLOGIES

#: keep every event, hit and muon the dump has (so the dataset's flat columns are the dump's, in order)
KEEP_ALL = ["--min-pt", "0", "--max-abs-eta", "10", "--min-hits", "0", "--keep-muons-without-hits",
            "--keep-empty-events"]


def run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def convert_ok(inp, out, *args: str) -> dict:
    res = run("convert", inp, "-o", out, "-q", "-j", "1", *args)
    assert res.exit_code == 0, res.output
    return json.loads((out / "_manifest.json").read_text())


def hit_column(out, name: str) -> np.ndarray:
    return read_dataset(str(out)).column("hits").combine_chunks().values.field(name).to_numpy()


def muon_column(out, name: str) -> np.ndarray:
    return read_dataset(str(out)).column("truthMuons").combine_chunks().values.field(name).to_numpy()


def reference_script(path, min_pt=5.0, max_abs_eta=2.7, min_hits=3, codes=None, muons_without_hits=False):
    """The reference preparation, per event and per track in plain Python: tracks are the distinct
    truth links of the (technology-filtered) hits, so a muon no hit points to is not a track;
    ``muons_without_hits`` instead considers every truth muon (the other documented behaviour)."""
    arrays = uproot.open(path)["MuonHitDump"].arrays(library="np")
    events = []
    for i in range(len(arrays["eventNumber"])):
        hit_fields = {k: list(arrays[k][i]) for k in arrays if k.startswith("spacePoint_")}
        n = len(hit_fields["spacePoint_technology"])
        hits = [{k: v[j] for k, v in hit_fields.items()} for j in range(n)
                if codes is None or hit_fields["spacePoint_technology"][j] in codes]
        n_mu = len(arrays["truthMuon_pt"][i])
        tracks = range(n_mu) if muons_without_hits else sorted({h["spacePoint_truthLink"] for h in hits} - {-1})
        new_index, muons = {}, []
        for m in tracks:
            nh = sum(1 for h in hits if h["spacePoint_truthLink"] == m)
            pt, eta = arrays["truthMuon_pt"][i][m], arrays["truthMuon_eta"][i][m]
            if pt >= min_pt and abs(eta) <= max_abs_eta and nh >= min_hits:
                new_index[m] = len(muons)
                muons.append({k: arrays[k][i][m] for k in ("truthMuon_pt", "truthMuon_eta", "truthMuon_q")})
        if not muons:
            continue
        for h in hits:
            h["spacePoint_truthLink"] = new_index.get(h["spacePoint_truthLink"], -1)
        events.append({"source_entry": i, "hits": hits, "truthMuons": muons})
    return events


def assert_equals_reference(out, reference) -> None:
    rows = read_dataset(str(out)).to_pylist()
    assert [r["source_entry"] for r in rows] == [e["source_entry"] for e in reference]
    for got, ref in zip(rows, reference):
        assert len(got["hits"]) == len(ref["hits"]) and len(got["truthMuons"]) == len(ref["truthMuons"])
        for gh, rh in zip(got["hits"], ref["hits"]):
            assert all(gh[k] == v for k, v in rh.items()), (got["source_entry"], rh)
        for gm, rm in zip(got["truthMuons"], ref["truthMuons"]):
            assert all(gm[k] == v for k, v in rm.items()), (got["source_entry"], rm)


# ------------------------------------------------------------------------------------------------
# RNTuple
# ------------------------------------------------------------------------------------------------

def test_rntuple_dump_converts_to_the_same_shards_as_the_ttree(tmp_path, monkeypatch):
    """The same simulated events as a TTree and as an RNTuple (both named dump.root, converted from
    their own folder so source_file is the same): byte-identical shards, same cut flow and statistics,
    in several units and several chunks per unit."""
    manifests = {}
    for fmt in ("ttree", "rntuple"):
        d = tmp_path / fmt
        d.mkdir()
        monkeypatch.chdir(d)
        res = run("simulate", "dump.root", "-n", "300", "--seed", "5", "--format", fmt)
        assert res.exit_code == 0, res.output
        assert uproot.open(d / "dump.root").classnames()["MuonHitDump;1"] == ("ROOT::RNTuple" if fmt == "rntuple"
                                                                               else "TTree")
        manifests[fmt] = convert_ok("dump.root", d / "out", "--shard-events", "120", "--row-group-size", "40",
                                    "--step-size", "100 kB")
    t, r = manifests["ttree"], manifests["rntuple"]
    assert len(t["shards"]) == 3 and t["cutflow"]["events_out"] > 0
    # the same data, row group by row group (the files differ only in the identity metadata each shard
    # carries: its unit's key hashes the input's ROOT UUID)
    for s_r, s_t in zip(r["shards"], t["shards"], strict=True):
        f_r, f_t = (pq.ParquetFile(tmp_path / fmt / "out" / s["path"]) for fmt, s in (("rntuple", s_r), ("ttree", s_t)))
        assert f_r.num_row_groups == f_t.num_row_groups
        for k in range(f_t.num_row_groups):
            assert f_r.read_row_group(k).equals(f_t.read_row_group(k))
    assert r["cutflow"] == t["cutflow"] and r["statistics"] == t["statistics"]
    assert (r["inputs"][0]["container"], t["inputs"][0]["container"]) == ("RNTuple", "TTree")
    assert r["inputs"][0]["branches"] == t["inputs"][0]["branches"]
    assert run("validate", tmp_path / "rntuple" / "out").exit_code == 0


def test_rntuple_with_record_fields_reads_through_the_layout(tmp_path, random_dump):
    """An RNTuple whose hits are one collection of records (fields ``spacePoint.time`` ...) converts
    with a layout mapping the raw fields to those names; equal to the TTree conversion."""
    ev = random_events(500, seed=1)  # the events of random_dump
    path = tmp_path / "records.root"
    write_rntuple(path, ev)
    layout = tmp_path / "layout.yaml"
    names = [k for k in flat_branches(ev) if k != "eventNumber"]
    layout.write_text("branches:\n" + "".join(f"  {k}: {k.replace('_', '.', 1)}\n" for k in names))
    convert_ok(path, tmp_path / "a", "--layout", layout)
    convert_ok(random_dump, tmp_path / "b")
    a = read_dataset(str(tmp_path / "a")).drop_columns(["source_file"])
    b = read_dataset(str(tmp_path / "b")).drop_columns(["source_file"])
    assert a.num_rows > 0 and a.equals(b)
    # without the layout too: `spacePoint.time` is the one spelling of spacePoint_time (tests/test_record_names.py);
    # a member the records lack is reported as missing, with the nearest field names
    convert_ok(path, tmp_path / "c")
    assert read_dataset(str(tmp_path / "c")).drop_columns(["source_file"]).equals(b)
    lacking = tmp_path / "lacking.root"
    write_rntuple(lacking, {**ev, "spacePoint": ev["spacePoint"][[f for f in ak.fields(ev["spacePoint"])
                                                                  if f != "globEdgeHighX"]]})
    res = run("convert", lacking, "-o", tmp_path / "e", "-q")
    assert res.exit_code == 1 and "the layout maps no branch to 'spacePoint_globEdgeHighX'" in res.output
    assert "'spacePoint.globEdgeHighY'" in res.output and "Traceback" not in res.output  # among the nearest
    res = run("convert", path, "-o", tmp_path / "d", "-q", "--tree", "Hits")
    assert res.exit_code == 1 and "no tree 'Hits'; the file has ['MuonHitDump']" in res.output


def test_rntuple_field_uproot_cannot_read_is_named(tmp_path, monkeypatch):
    """An RNTuple field type this uproot cannot read gives one line naming the field and its type
    (the check reads the field's form, no entry; here uproot is made to fail on one field)."""
    from uproot.models.RNTuple import RField

    path = tmp_path / "r.root"
    write_rntuple(path, flat_branches(random_events(10, seed=2)))
    real = RField.to_akform

    def failing(self, *args, **kwargs):
        if self.name == "spacePoint_driftR":
            raise NotImplementedError("unsupported column type")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(RField, "to_akform", failing)
    res = run("convert", path, "-o", tmp_path / "o", "-q")
    assert res.exit_code == 1, res.output
    assert res.output.strip().splitlines() == [
        f"Error: file {path}, field spacePoint_driftR: uproot {uproot.__version__} cannot read RNTuple field "
        "'spacePoint_driftR' of type std::vector<float> (NotImplementedError: unsupported column type)"]


def test_damaged_rntuple_gives_the_same_errors_as_a_ttree(tmp_path):
    """A truncated RNTuple file and one with a damaged page: one line each, like the TTree (a cut
    footer used to escape as an OSError traceback), and --skip-bad-files converts the rest."""
    good = tmp_path / "good.root"
    with uproot.recreate(good, compression=uproot.ZLIB(4)) as f:
        f.mkrntuple("MuonHitDump", flat_branches(random_events(120, seed=3)))
    data = good.read_bytes()
    (tmp_path / "cut.root").write_bytes(data[: len(data) // 2])
    flipped = bytearray(data)
    for i in range(len(data) // 3, len(data) // 3 + 64):
        flipped[i] ^= 0xFF
    (tmp_path / "flip.root").write_bytes(bytes(flipped))
    for name, want in (("cut", f"file is truncated: its header says {len(data)} bytes, it has {len(data) // 2}"),
                       ("flip", "cannot read entries 0-120 of branch 'spacePoint_")):
        res = run("convert", tmp_path / f"{name}.root", "-o", tmp_path / name, "-q")
        assert res.exit_code == 1 and len(res.output.strip().splitlines()) == 1, res.output
        assert f"file {tmp_path / name}.root" in res.output and want in res.output, res.output
    res = run("convert", good, tmp_path / "cut.root", tmp_path / "flip.root", "-o", tmp_path / "all", "-q",
              "--skip-bad-files")
    assert res.exit_code == 3, res.output
    m = json.loads((tmp_path / "all" / "_manifest.json").read_text())
    assert m["cutflow"]["entries_skipped"] == 120 and m["cutflow"]["entries_in"] == 240  # the cut file has none


# ------------------------------------------------------------------------------------------------
# precision: float64 and integer dumps
# ------------------------------------------------------------------------------------------------

FLOATS = ["spacePoint_globEdgeLowX", "spacePoint_globEdgeHighZ", "spacePoint_time", "spacePoint_covXX",
          "spacePoint_covXY", "truthMuon_pt", "truthMuon_eta"]


def _float64_dump(path, n=40, seed=7, exact=("truthMuon_eta",)) -> dict:
    """Flat branches with FLOATS as float64: float32 values plus a small offset (not representable),
    except ``exact`` ones (float64 holding float32 values)."""
    rng = np.random.default_rng(seed)
    b = flat_branches(random_events(n, seed=seed))
    for name in FLOATS:
        flat = ak.to_numpy(ak.flatten(b[name])).astype(np.float64)
        if name not in exact:
            flat = flat + rng.uniform(-1e-3, 1e-3, flat.size) * np.maximum(np.abs(flat), 1.0) * 1e-4
        b[name] = ak.unflatten(flat, ak.num(b[name]))
    write_dump(path, b)
    return b


def _nearest_float32(x: float, got: float) -> bool:
    """``got`` is the float32 nearest to ``x`` (ties to even), checked in exact rational arithmetic."""
    g = np.float32(got)
    d = abs(Fraction(x) - Fraction(float(g)))
    below = abs(Fraction(x) - Fraction(float(np.nextafter(g, np.float32(-np.inf)))))
    above = abs(Fraction(x) - Fraction(float(np.nextafter(g, np.float32(np.inf)))))
    even = int(g.view(np.uint32)) % 2 == 0
    return d < below and d < above or (d <= below and d <= above and even)


def test_float64_dump_converts_correctly_rounded_under_the_policy(tmp_path):
    path = tmp_path / "f64.root"
    b = _float64_dump(path)
    # default: exact, and the refusal names file, entry, field, value and the option
    res = run("convert", path, "-o", tmp_path / "exact", "-q", *KEEP_ALL)
    assert res.exit_code == 1
    first = ak.to_numpy(ak.flatten(b["spacePoint_globEdgeHighZ"]))[0]  # first float64 field of the schema here
    entry = int(np.flatnonzero(ak.to_numpy(ak.num(b["spacePoint_globEdgeHighZ"])) > 0)[0])
    assert (f"file {path}, entry {entry}, field spacePoint_globEdgeHighZ: branch 'spacePoint_globEdgeHighZ' has "
            f"dtype float64 and value {float(first)!r} is not representable as float32") in res.output
    assert "--precision round" in res.output
    assert not list((tmp_path / "exact").rglob("*.parquet"))
    # --precision round: every stored value is the correctly rounded float64 value
    m = convert_ok(path, tmp_path / "round", "--precision", "round", *KEEP_ALL)
    totals = {}
    for name in FLOATS:
        want = ak.to_numpy(ak.flatten(b[name]))
        got = (hit_column if name.startswith("spacePoint") else muon_column)(tmp_path / "round", name)
        assert got.dtype == np.float32 and len(got) == len(want)
        assert all(_nearest_float32(float(x), float(g)) for x, g in zip(want, got)), name
        rounded = sum(1 for x, g in zip(want, got) if Fraction(float(x)) != Fraction(float(g)))
        assert m["inputs"][0]["branches"][name] == {"branch": name, "dtype": "float64", "rounded": rounded}
        if rounded:
            totals[name] = rounded
    assert totals["spacePoint_time"] > 0 and "truthMuon_eta" not in totals  # exact float64 values: not rounded
    assert m["inputs"][0]["branches"]["spacePoint_driftR"] == {"branch": "spacePoint_driftR", "dtype": "float32",
                                                                 "rounded": 0}
    assert m["reading"] == {"precision": "round", "filled": {}, "rounded": totals}
    assert run("validate", tmp_path / "round").exit_code == 0


def test_precision_per_field_in_the_layout_and_out_of_range_is_always_an_error(tmp_path):
    path = tmp_path / "f64.root"
    _float64_dump(path, exact=[n for n in FLOATS if n != "spacePoint_time"])  # only time needs rounding
    layout = tmp_path / "layout.yaml"
    layout.write_text("precision: {spacePoint_time: round}\n")
    m = convert_ok(path, tmp_path / "a", "--layout", layout, *KEEP_ALL)
    assert m["config"]["layout"]["precision"] == {"spacePoint_time": "round"}
    assert list(m["reading"]["rounded"]) == ["spacePoint_time"]
    layout.write_text("precision: {spacePoint_covXX: round}\n")  # time is not allowed to round now
    res = run("convert", path, "-o", tmp_path / "b", "-q", "--layout", layout)
    assert res.exit_code == 1 and "field spacePoint_time" in res.output and "not representable" in res.output
    layout.write_text("precision: {spacePoint_time: nearest}\n")
    res = run("convert", path, "-o", tmp_path / "c", "-q", "--layout", layout)
    assert res.exit_code == 2 and "precision must be one of ('exact', 'round')" in res.output
    # a finite float64 beyond the float32 range would round to inf: refused even under round
    b = flat_branches(random_events(12, seed=3))
    flat = ak.to_numpy(ak.flatten(b["spacePoint_covYY"])).astype(np.float64)
    counts = ak.to_numpy(ak.num(b["spacePoint_covYY"]))
    flat[int(counts[:4].sum())] = 1e39  # first hit of entry 4
    b["spacePoint_covYY"] = ak.unflatten(flat, counts)
    write_dump(tmp_path / "huge.root", b)
    res = run("convert", tmp_path / "huge.root", "-o", tmp_path / "d", "-q", "--precision", "round")
    assert res.exit_code == 1
    assert ("entry 4, field spacePoint_covYY: branch 'spacePoint_covYY' has dtype float64 and value 1e+39 is "
            "outside the float32 range") in res.output


def test_unsigned_and_narrow_integer_dumps_convert_exactly(tmp_path):
    b = flat_branches(random_events(30, seed=8))
    originals = {}
    for name, dtype in (("spacePoint_channel", np.uint32), ("spacePoint_layer", np.uint8),
                        ("spacePoint_stationEta", np.int16), ("spacePoint_readOutSide", np.int64),
                        ("truthMuon_q", np.int16), ("spacePoint_stationPhi", np.uint64)):
        flat = ak.to_numpy(ak.flatten(b[name]))
        if name == "spacePoint_stationEta":
            flat = flat - 4  # negative values in int16
        originals[name] = flat.astype(dtype)
        b[name] = ak.unflatten(originals[name], ak.num(b[name]))
    b["eventNumber"] = (np.arange(30) + 2**62).astype(np.uint64)  # beyond int32, inside int64
    write_dump(tmp_path / "ints.root", b)
    m = convert_ok(tmp_path / "ints.root", tmp_path / "o", *KEEP_ALL)
    for name, want in originals.items():
        got = (hit_column if name.startswith("spacePoint") else muon_column)(tmp_path / "o", name)
        assert got.dtype == np.int32 and got.tolist() == want.tolist(), name
        assert m["inputs"][0]["branches"][name]["dtype"] == str(want.dtype)
    rows = read_dataset(str(tmp_path / "o"), columns=["eventNumber"]).column(0).to_pylist()
    assert rows == [2**62 + i for i in range(30)]
    assert m["reading"]["rounded"] == {}


@pytest.mark.parametrize(("name", "dtype", "value", "why"), [
    ("spacePoint_readOutSide", np.int64, 2**40, "is outside the int32 range [-2147483648, 2147483647]"),
    ("spacePoint_stationEta", np.int64, -(2**31) - 1, "is outside the int32 range"),
    ("spacePoint_channel", np.uint64, 2**63 + 5, "is outside the int32 range"),
    ("eventNumber", np.uint64, 2**64 - 1, "is outside the int64 range"),
])
def test_integers_beyond_the_target_range_are_refused_with_the_value(tmp_path, name, dtype, value, why):
    b = flat_branches(random_events(12, seed=4))
    if name == "eventNumber":
        x = b[name].astype(dtype)
        x[6] = value
        b[name] = x
    else:
        counts = ak.to_numpy(ak.num(b[name]))
        x = ak.to_numpy(ak.flatten(b[name])).astype(dtype)
        x[int(counts[:6].sum())] = value  # first hit of entry 6
        b[name] = ak.unflatten(x, counts)
    write_dump(tmp_path / "bad.root", b)
    for extra in ([], ["--precision", "round"]):  # integers never round
        res = run("convert", tmp_path / "bad.root", "-o", tmp_path / f"o{len(extra)}", "-q", *extra)
        assert res.exit_code == 1
        assert f"entry 6, field {name}: branch {name!r} has dtype {np.dtype(dtype)} and value {value} {why}" in res.output


def test_integer_branch_for_a_float_field_and_float_branch_for_an_integer_field(tmp_path):
    b = flat_branches(random_events(12, seed=5))
    counts = ak.to_numpy(ak.num(b["spacePoint_covXX"]))
    c = np.round(ak.to_numpy(ak.flatten(b["spacePoint_covXX"]))).astype(np.int32)
    c[int(counts[:3].sum())] = 2**24 + 1  # not a float32: 16777216 or 16777218
    b["spacePoint_covXX"] = ak.unflatten(c, counts)
    write_dump(tmp_path / "t.root", b)
    res = run("convert", tmp_path / "t.root", "-o", tmp_path / "a", "-q", *KEEP_ALL)
    assert res.exit_code == 1 and "entry 3, field spacePoint_covXX" in res.output and "value 16777217" in res.output
    m = convert_ok(tmp_path / "t.root", tmp_path / "b", "--precision", "round", *KEEP_ALL)
    got = hit_column(tmp_path / "b", "spacePoint_covXX")
    assert got.tolist() == [float(v) if v != 2**24 + 1 else 16777216.0 for v in c.tolist()]  # ties to even
    assert m["reading"]["rounded"] == {"spacePoint_covXX": 1}
    # a float branch fills an integer field with whole numbers only (a charge stored as ±1.0), never rounded
    b["truthMuon_q"] = ak.values_astype(b["truthMuon_q"], np.float64)
    b["spacePoint_channel"] = ak.values_astype(b["spacePoint_channel"], np.float32)
    write_dump(tmp_path / "c.root", b)
    m = convert_ok(tmp_path / "c.root", tmp_path / "c", "--precision", "round", *KEEP_ALL)
    assert muon_column(tmp_path / "c", "truthMuon_q").tolist() == ak.to_list(ak.flatten(b["truthMuon_q"]))
    assert hit_column(tmp_path / "c", "spacePoint_channel").dtype == np.int32
    assert m["inputs"][0]["branches"]["truthMuon_q"]["dtype"] == "float64"
    for value, why in ((2.5, "is not a whole number"), (np.nan, "is not a whole number"),
                       (2.0**31, "is outside the int32 range")):
        ch = ak.to_numpy(ak.flatten(b["spacePoint_channel"])).copy()
        ch[int(counts[:7].sum())] = value
        write_dump(tmp_path / "d.root", dict(b, spacePoint_channel=ak.unflatten(ch, counts)))
        res = run("convert", tmp_path / "d.root", "-o", tmp_path / f"d{value}", "-q", "--precision", "round")
        assert res.exit_code == 1 and f"entry 7, field spacePoint_channel: branch 'spacePoint_channel' has dtype " \
                                      f"float32 and value {float(np.float32(value))!r} {why}" in res.output, res.output


# ------------------------------------------------------------------------------------------------
# layout: fill
# ------------------------------------------------------------------------------------------------

MISSING = ("spacePoint_readOutSide", "spacePoint_covXY", "spacePoint_covYX")


def test_dump_missing_three_branches_converts_with_a_filling_layout(tmp_path):
    full = flat_branches(random_events(60, seed=9))
    write_dump(tmp_path / "full.root", full)
    write_dump(tmp_path / "partial.root", {k: v for k, v in full.items() if k not in MISSING})
    res = run("convert", tmp_path / "partial.root", "-o", tmp_path / "x", "-q")
    assert res.exit_code == 1
    assert ("field spacePoint_readOutSide: the layout maps no branch to 'spacePoint_readOutSide': the TTree has no "
            "branch of that name") in res.output and "'fill:'" in res.output
    layout = tmp_path / "layout.yaml"
    layout.write_text("fill:\n  spacePoint_readOutSide: 0\n  spacePoint_covXY: 0.0\n  spacePoint_covYX: 0\n")
    m = convert_ok(tmp_path / "partial.root", tmp_path / "p", "--layout", layout)
    ref = convert_ok(tmp_path / "full.root", tmp_path / "f")
    assert m["reading"]["filled"] == {"spacePoint_readOutSide": 0, "spacePoint_covXY": 0.0, "spacePoint_covYX": 0.0}
    assert m["config"]["layout"]["fill"] == m["reading"]["filled"]
    assert not set(MISSING) & set(m["inputs"][0]["branches"])
    hits = read_dataset(str(tmp_path / "p")).column("hits").combine_chunks().values
    assert hits.field("spacePoint_readOutSide").type == "int32"
    for name in MISSING:
        assert set(hits.field(name).to_numpy().tolist()) == {0}
    a = read_dataset(str(tmp_path / "p")).drop_columns(["source_file"])
    b = read_dataset(str(tmp_path / "f")).drop_columns(["source_file"])
    # everything else is the full dump's conversion (the selection does not use the filled fields)
    assert a.num_rows == b.num_rows > 0 and m["cutflow"] == ref["cutflow"]
    ah, bh = a.column("hits").combine_chunks().values, b.column("hits").combine_chunks().values
    for name in ah.type.names if hasattr(ah.type, "names") else [f.name for f in ah.type]:
        if name not in MISSING:
            assert ah.field(name).equals(bh.field(name)), name
    assert run("validate", tmp_path / "p").exit_code == 0
    res = run("convert", tmp_path / "partial.root", "-o", tmp_path / "p", "--layout", layout)  # summary
    assert "fields filled with a constant: spacePoint_readOutSide=0" in res.output


def test_layout_mapping_to_an_absent_branch_names_the_nearest(tmp_path, random_dump):
    layout = tmp_path / "layout.yaml"
    layout.write_text("branches: {spacePoint_time: spacePoint_tim}\n")
    res = run("convert", random_dump, "-o", tmp_path / "o", "-q", "--layout", layout)
    assert res.exit_code == 1
    assert ("field spacePoint_time: the layout maps 'spacePoint_time' to branch 'spacePoint_tim', which the TTree "
            "does not have (nearest: 'spacePoint_time'") in res.output


@pytest.mark.parametrize(("text", "why"), [
    ("fill: {spacePoint_readOutSide: 0.5}", "fill spacePoint_readOutSide: 0.5 is not an integer"),
    ("fill: {spacePoint_covXX: -1}", "fill spacePoint_covXX: -1: value -1.0 outside [0, 1e+09]"),
    ("fill: {truthMuon_q: 0}", "fill truthMuon_q: 0: value 0 not in [-1, 1]"),
    ("fill: {spacePoint_time: .nan}", "fill spacePoint_time: nan is not a finite float32 value"),
    ("fill: {spacePoint_time: '3'}", "fill spacePoint_time: '3' is not a number"),
    ("fill: {spacePoint_time: 1e39}", "'1e39' is not a number (quoted, or YAML 1.1 read it as text"),
    ("fill: {spacePoint_covXY: 0.1}", "0.1 is not exactly a float32 value (the nearest is 0.10000000149011612)"),
    ("fill: {spacePoint_time: 1}\nbranches: {spacePoint_time: t}", "are both mapped to a branch and filled"),
    ("fill: {spacePoint_nope: 1}", "fill: ['spacePoint_nope'] are not raw fields of the schema"),
    ("fill: {truthMuon_pt: 10, truthMuon_eta: 0, truthMuon_phi: 0, truthMuon_q: 1}",
     "every muon field is filled; at least one must come from a branch"),
])
def test_bad_fill_values_are_usage_errors(tmp_path, random_dump, text, why):
    layout = tmp_path / "layout.yaml"
    layout.write_text(text + "\n")
    res = run("convert", random_dump, "-o", tmp_path / "o", "-q", "--layout", layout)
    assert res.exit_code == 2 and why in res.output and "Traceback" not in res.output, res.output


# ------------------------------------------------------------------------------------------------
# technologies and --min-hits 0
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mixed_dump(tmp_path_factory):
    """random events whose hits carry CSC (1), unnamed codes 7 and -1 besides the usual ones."""
    ev = random_events(300, seed=21)
    rng = np.random.default_rng(21)
    counts = ak.to_numpy(ak.num(ev["spacePoint"]))
    tech = ak.to_numpy(ak.flatten(ev["spacePoint"]["technology"])).copy()
    tech[rng.random(tech.size) < 0.2] = 1
    tech[rng.random(tech.size) < 0.03] = 7
    tech[rng.random(tech.size) < 0.02] = -1
    ev["spacePoint"] = ak.with_field(ev["spacePoint"], ak.unflatten(tech, counts), "technology")
    path = tmp_path_factory.mktemp("mixed") / "mixed.root"
    write_dump(path, ev)
    return path, tech


def test_csc_and_unnamed_codes_are_kept_by_default_and_counted(tmp_path, mixed_dump):
    path, tech = mixed_dump
    out = tmp_path / "o"
    res = run("convert", path, "-o", out, "-j", "1")
    assert res.exit_code == 0, res.output
    m = json.loads((out / "_manifest.json").read_text())
    assert_equals_reference(out, reference_script(path))
    assert m["cutflow"]["hits_removed_technology"] == 0
    assert m["cutflow"]["hits_unknown_technology"] == {"-1": int((tech == -1).sum()), "7": int((tech == 7).sum())}
    assert f"hits of unnamed technology codes: code -1 {(tech == -1).sum()}, code 7 {(tech == 7).sum()}" in res.output
    kept = hit_column(out, "spacePoint_technology")
    assert {1, 7, -1} <= set(kept.tolist())
    info = json.loads(run("inspect", out, "--json").output)
    assert info["technology_hits"] == {("code -1" if c == -1 else "code 7" if c == 7 else
                                        {v: k for k, v in TECHNOLOGIES.items()}[c]): int((kept == c).sum())
                                       for c in sorted(set(kept.tolist()))}
    assert "hits_unknown_technology [7]" in run("inspect", out).output
    assert run("validate", out).exit_code == 0


@pytest.mark.parametrize(("spec", "codes"), [("csc", {1}), ("MDT,7", {0, 7}), ("-1,RPC,cSc", {-1, 1, 2})])
def test_technologies_select_by_name_or_code(tmp_path, mixed_dump, spec, codes):
    path, tech = mixed_dump
    out = tmp_path / "o"
    m = convert_ok(path, out, "--technologies", spec, "--min-hits", "1")
    assert_equals_reference(out, reference_script(path, min_hits=1, codes=codes))
    assert set(hit_column(out, "spacePoint_technology").tolist()) <= codes
    assert m["cutflow"]["hits_removed_technology"] == int((~np.isin(tech, list(codes))).sum())


def test_min_hits_zero_matches_the_reference_script(tmp_path, mixed_dump):
    """A truth muon no hit points to is no track in the reference script: not kept with --min-hits 0;
    --keep-muons-without-hits is the other behaviour, against its own per-event reference."""
    path, _ = mixed_dump
    arrays = uproot.open(path)["MuonHitDump"].arrays(["spacePoint_truthLink", "truthMuon_pt"], library="np")
    hitless = sum(len(set(range(len(pt))) - set(links.tolist()))
                  for links, pt in zip(arrays["spacePoint_truthLink"], arrays["truthMuon_pt"]))
    assert hitless > 3  # the case exists in this dump
    loose = ["--min-pt", "0", "--max-abs-eta", "10", "--min-hits", "0"]
    m = convert_ok(path, tmp_path / "ref", *loose)
    assert_equals_reference(tmp_path / "ref", reference_script(path, 0, 10, 0))
    m2 = convert_ok(path, tmp_path / "all", *loose, "--keep-muons-without-hits")
    assert_equals_reference(tmp_path / "all", reference_script(path, 0, 10, 0, muons_without_hits=True))
    assert m2["cutflow"]["muons_out"] - m["cutflow"]["muons_out"] == hitless
    assert m["cutflow"]["muons_fail_hits"] == hitless
    # after a technology filter a muon whose hits are all removed has no hit either
    convert_ok(path, tmp_path / "mdt", *loose, "--technologies", "MDT")
    assert_equals_reference(tmp_path / "mdt", reference_script(path, 0, 10, 0, codes={0}))


# ------------------------------------------------------------------------------------------------
# invalid data messages and old manifests
# ------------------------------------------------------------------------------------------------

def test_non_finite_value_and_bad_link_have_distinct_messages(tmp_path):
    ev = random_events(20, seed=3)
    counts = ak.to_numpy(ak.num(ev["spacePoint"]))
    nmu = ak.to_numpy(ak.num(ev["truthMuon"]))
    e = int(np.flatnonzero((nmu == 2) & (counts > 0))[0])
    for field, value, want in (("time", np.nan, f"entry {e}, field spacePoint_time: non-finite value nan"),
                               ("driftR", -np.inf, f"entry {e}, field spacePoint_driftR: non-finite value -inf"),
                               ("truthLink", 7, f"entry {e}, field spacePoint_truthLink: truth link 7 points to no "
                                                "truth muon: the event has 2, so a link must be -1..1")):
        x = ak.to_numpy(ak.flatten(ev["spacePoint"][field])).copy()
        x[int(counts[:e].sum())] = value
        bad = dict(ev, spacePoint=ak.with_field(ev["spacePoint"], ak.unflatten(x, counts), field))
        write_dump(tmp_path / f"{field}.root", bad)
        res = run("convert", tmp_path / f"{field}.root", "-o", tmp_path / field, "-q")
        assert res.exit_code == 1 and want in res.output, res.output
        other = "truth link" if field != "truthLink" else "non-finite"
        assert other not in res.output


def test_old_manifests_still_load_inspect_validate_and_migrate(tmp_path, random_dump):
    """A manifest written before this issue (no reading section, no per-branch dtypes, no unknown-code
    tally, technologies as a list, no keep_muons_without_hits) still works everywhere."""
    from pipeline.config import ConvertConfig

    out = tmp_path / "v1"
    m = convert_ok(random_dump, out, "--schema-version", "1")
    old = json.loads(json.dumps(m))
    del old["reading"], old["cutflow"]["hits_unknown_technology"]
    for i in old["inputs"]:
        del i["container"], i["branches"]
    (out / "_manifest.json").write_text(json.dumps(old))
    # an old configuration loads as what it meant (the dataset itself is refused by validate's shard
    # identity check once its configuration is edited, so this part is checked on the dict alone)
    old_config = json.loads(json.dumps(old["config"]))
    del old_config["selection"]["keep_muons_without_hits"]
    old_config["selection"]["technologies"] = ["MDT", "RPC", "TGC", "STGC", "MM"]
    cfg = ConvertConfig.from_dict(old_config)
    assert cfg.transform.selection.technologies == ("MDT", "RPC", "TGC", "STGC", "MM")
    assert cfg.transform.selection.keep_muons_without_hits  # what min_hits 0 meant then
    assert cfg.layout.fill == {} and cfg.layout.precision == "exact"
    res = run("inspect", out, "--json")
    assert res.exit_code == 0 and json.loads(res.output)["reading"] == {}
    assert run("inspect", out).exit_code == 0
    assert run("validate", out).exit_code == 0
    res = run("migrate", out, "--to-version", "2", "-o", tmp_path / "v2")
    assert res.exit_code == 0, res.output
    assert run("validate", tmp_path / "v2").exit_code == 0


def test_rntuple_fill_and_rounding_are_the_same_in_worker_processes(tmp_path):
    """The reading settings travel to pool workers (the configuration as a dict): an RNTuple with float64
    fields and a missing branch gives the same shards, cut flow and reading section with -j 2 as in-process."""
    b = flat_branches(random_events(200, seed=31))
    b.pop("spacePoint_readOutSide")
    b["spacePoint_time"] = ak.values_astype(b["spacePoint_time"], np.float64) + 1e-5
    path = tmp_path / "r.root"
    write_rntuple(path, b)
    layout = tmp_path / "layout.yaml"
    layout.write_text("fill: {spacePoint_readOutSide: 1}\nprecision: {spacePoint_time: round}\n")
    args = ["--layout", layout, "--shard-events", "50", "--technologies", "MDT,CSC,7"]
    m1 = convert_ok(path, tmp_path / "one", *args)
    res = run("convert", path, "-o", tmp_path / "two", "-q", "-j", "2", *args)
    assert res.exit_code == 0, res.output
    m2 = json.loads((tmp_path / "two" / "_manifest.json").read_text())
    assert len(m1["shards"]) == 4 and [s["sha256"] for s in m1["shards"]] == [s["sha256"] for s in m2["shards"]]
    assert m1["reading"] == m2["reading"] and m1["reading"]["rounded"]["spacePoint_time"] > 0
    assert m1["cutflow"] == m2["cutflow"] and m1["inputs"] == m2["inputs"]


def test_a_fill_constant_follows_the_precision_policy(tmp_path):
    """`fill: {covXY: 0.1}` was stored as float32(0.1) while the manifest recorded 0.1; now it is refused
    under the default exact policy and, under `round`, stored and recorded as the same float32 value."""
    b = flat_branches(random_events(80, seed=7))
    b.pop("spacePoint_covXY")
    path = tmp_path / "d.root"
    write_dump(path, b)
    layout = tmp_path / "layout.yaml"
    layout.write_text("fill: {spacePoint_covXY: 0.1}\nprecision: {spacePoint_covXY: round}\n")
    m = convert_ok(path, tmp_path / "out", "--layout", layout)
    want = float(np.float32(0.1))
    assert m["config"]["layout"]["fill"]["spacePoint_covXY"] == want
    hits = read_dataset(str(tmp_path / "out")).column("hits").combine_chunks().flatten()
    assert set(np.asarray(hits.field("spacePoint_covXY")).tolist()) == {want}
