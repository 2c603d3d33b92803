"""Records auto-mapped: an RNTuple written as collections of records names its fields ``spacePoint.time``
(what uproot and RNTuple writers make of a vector of structs), a TTree may name its branches
``spacePoint.time`` or ``spacePoint/time``; each is the raw field ``spacePoint_time`` without doubt, and
needed a hand-written layout line per field (20 of them). Now they are mapped where one spelling fits,
and refused with one line listing the candidates where several do. The dumps are made here.
"""

from __future__ import annotations

import json

import awkward as ak
import pytest
import uproot
from click.testing import CliRunner
from rawdump import flat_branches, random_events, write_dump, write_rntuple

from pipeline import read_dataset
from pipeline.cli import main
from pipeline.layout import branch_candidates, file_branch
from pipeline.schema import load_schema

RAW = [f.source for f in load_schema(2).fields if f.source]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def table(out):
    return read_dataset(str(out)).drop_columns(["source_file"])


def write_named(path, events: dict, rename) -> None:
    """A TTree of ``events`` whose branch ``spacePoint_time`` (…) is named ``rename("spacePoint_time")``."""
    flat = flat_branches(events)
    renamed = {rename(k) if k != "eventNumber" else k: v for k, v in flat.items()}
    with uproot.recreate(path) as f:
        f.mktree("MuonHitDump", {k: v.type if isinstance(v, ak.Array) else v.dtype for k, v in renamed.items()})
        f["MuonHitDump"].extend(renamed)


@pytest.fixture(scope="module")
def events():
    return random_events(200, seed=31)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, events):
    """The same events as a TTree with the raw names, converted."""
    d = tmp_path_factory.mktemp("ref")
    write_dump(d / "raw.root", events)
    assert run("convert", d / "raw.root", "-o", d / "out", "-q", "-j", "1").exit_code == 0
    return table(d / "out")


@pytest.mark.parametrize("kind", ["rntuple of records", "ttree a.b", "ttree a/b"])
def test_records_convert_without_a_layout(tmp_path, events, reference, kind):
    path = tmp_path / "dump.root"
    if kind == "rntuple of records":
        write_rntuple(path, events)  # fields spacePoint.time, truthMuon.pt, …
    else:
        sep = "." if kind.endswith("a.b") else "/"
        write_named(path, events, lambda k: k.replace("_", sep, 1))
    res = run("convert", path, "-o", tmp_path / "out", "-j", "1")
    assert res.exit_code == 0, res.output
    assert table(tmp_path / "out").equals(reference)
    recorded = json.loads((tmp_path / "out" / "_manifest.json").read_text())["inputs"][0]["branches"]
    sep = "/" if kind.endswith("a/b") else "."
    assert recorded["spacePoint_time"]["branch"] == f"spacePoint{sep}time"  # the manifest says what was read
    assert recorded["eventNumber"]["branch"] == "eventNumber"
    res = run("validate", tmp_path / "out", "--source", "all")
    assert res.exit_code == 0, res.output


def test_two_spellings_of_one_field_are_refused_with_the_candidates(tmp_path, events):
    """A TTree holding both ``spacePoint.time`` and ``spacePoint/time`` (…): which one is meant is not
    known; one line names the file, the field and both candidates, and nothing is written. A layout
    naming one settles it."""
    path = tmp_path / "both.root"
    flat = flat_branches(events)
    both = {"eventNumber": flat["eventNumber"]}
    for k, v in flat.items():
        if k != "eventNumber":
            both[k.replace("_", ".", 1)] = v
            both[k.replace("_", "/", 1)] = v
    with uproot.recreate(path) as f:
        f.mktree("MuonHitDump", {k: v.type if isinstance(v, ak.Array) else v.dtype for k, v in both.items()})
        f["MuonHitDump"].extend(both)
    res = run("convert", path, "-o", tmp_path / "out", "-q")
    lines = res.output.strip().splitlines()
    assert res.exit_code == 1 and len(lines) == 1 and "Traceback" not in res.output, res.output
    assert f"file {path}" in lines[0] and "'spacePoint.globEdgeHighX', 'spacePoint/globEdgeHighX'" in lines[0]
    assert "--layout" in lines[0]
    assert not (tmp_path / "out").exists()
    layout = tmp_path / "layout.yaml"
    layout.write_text("branches:\n" + "".join(f"  {k}: {k.replace('_', '.', 1)}\n" for k in RAW if k != "eventNumber"))
    res = run("convert", path, "-o", tmp_path / "ok", "-q", "-j", "1", "--layout", layout)
    assert res.exit_code == 0, res.output


def test_branch_candidates_on_the_names_of_real_files(tmp_path, events):
    """The mapping against the names uproot lists for a record RNTuple and a TTree, hand-checked."""
    write_rntuple(tmp_path / "r.root", events)
    write_dump(tmp_path / "t.root", events)
    with uproot.open(tmp_path / "r.root") as f:
        rnames = set(f["MuonHitDump"].keys())
    with uproot.open(tmp_path / "t.root") as f:
        tnames = set(f["MuonHitDump"].keys())
    assert {"spacePoint", "spacePoint.time", "truthMuon.pt"} <= rnames
    assert branch_candidates("spacePoint_time", rnames) == ["spacePoint.time"]
    assert branch_candidates("truthMuon_q", rnames) == ["truthMuon.q"]
    assert branch_candidates("spacePoint", rnames) == []  # the collection itself is no member
    assert all(file_branch(k, rnames) == k.replace("_", ".", 1) for k in RAW if k != "eventNumber")
    assert all(file_branch(k, tnames) == k for k in RAW)  # the raw names: nothing to map
    # a ROOT split branch is listed under its parent; a different field is never a candidate
    split = {"spacePoint", "spacePoint/spacePoint.time", "spacePoint/spacePoint.timeErr"}
    assert branch_candidates("spacePoint_time", split) == ["spacePoint/spacePoint.time"]
    assert branch_candidates("spacePoint_time", {"spacePoint.Time", "spacepoint.time", "spacePoint.time_"}) == []
    assert file_branch("spacePoint_time", {"spacePoint.time", "spacePoint/time"}) == "spacePoint_time"  # ambiguous
