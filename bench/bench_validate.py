"""What each validate level costs, what the trainer's checksum pass costs, and how many planted breakages
each level catches.

    .venv/bin/python bench/bench_validate.py [--events 10000] [--repeat 3]

1. Costs, on a simulated dataset (``simulate --events N`` with 300 background hits/event, ``convert
   --shard-events N/4``): medians of ``--repeat`` runs of ``validate`` at each level (structure only,
   + checksums, + values, + ``--source 1``; ``--source all`` once), and of the trainer's opener with and
   without the sha256 pass, beside one pass of the training loader over the train split (the ratio says
   what the check adds to an epoch).
2. Breakages: the planted breakages of ``tests/test_validate_breakage.py`` (the issue's list, with the
   manifest recomputed to match each) and 19 single-bit flips with the sha256 updated, on the 3-shard test
   dataset; counted as caught by the default level, and by the default level or ``--source all``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _common import BIN, CACHE, median_time, simulated  # noqa: E402

from pipeline.validate import validate_dataset  # noqa: E402


def costs(events: int, repeat: int) -> None:
    raw = simulated("validate", events)
    ds = CACHE / f"validate-ds-{events}"
    if not (ds / "_manifest.json").exists():
        shutil.rmtree(ds, ignore_errors=True)
        subprocess.run([str(BIN / "muon-pipeline"), "convert", *map(str, raw), "-o", str(ds), "-q", "-j", "1",
                        "--shard-events", str(max(events // 4, 1))], check=True)
    m = json.loads((ds / "_manifest.json").read_text())
    mb = m["totals"]["bytes"] / 1e6
    print(f"dataset: {m['totals']['events']} events, {m['totals']['hits']} hits, {len(m['shards'])} shards, "
          f"{mb:.0f} MB")
    levels = [("structure (--no-values --no-checksums)", dict(check_values=False, check_checksums=False)),
              ("+ checksums (--no-values)", dict(check_values=False)),
              ("+ values (default)", {}),
              ("+ --source 1", dict(source=1))]
    for name, kw in levels:
        t, _ = median_time(lambda kw=kw: _ok(validate_dataset(str(ds), **kw)), repeat)
        print(f"validate {name:40s} {t:7.2f} s")
    t0 = time.perf_counter()
    _ok(validate_dataset(str(ds), source="all"))
    print(f"validate {'+ --source all':40s} {time.perf_counter() - t0:7.2f} s (once)")

    from pipeline.train.config import TrainConfig
    from pipeline.train.data import normalisation_for
    from pipeline.train.data import open_training_set as open_dataset
    from pipeline.train.data.stream import make_stream

    with_sum, _ = median_time(lambda: open_dataset(ds, verify_checksums=True), repeat)
    without, _ = median_time(lambda: open_dataset(ds, verify_checksums=False), repeat)
    info = open_dataset(ds, verify_checksums=False)
    cfg = TrainConfig()
    norm = normalisation_for(info, info.schema.inputs("hit"))
    stream = make_stream(info, info.schema.inputs("hit"), norm, "train", cfg, shuffle=False, num_workers=0)
    epoch, _ = median_time(lambda: sum(1 for _ in stream.iter_numpy()), 1)
    print(f"trainer open, sha256 verified   {with_sum:7.2f} s")
    print(f"trainer open, --no-verify-checksums {without:7.2f} s  -> the check costs {with_sum - without:.2f} s "
          f"({mb / max(with_sum - without, 1e-9):.0f} MB/s)")
    print(f"one loader pass over the train split ({stream.events} events, frame inputs on, 1 process) {epoch:.2f} s:"
          f" the check adds {100 * (with_sum - without) / epoch:.1f} % of one epoch, once per run")


def _ok(report) -> None:
    assert report.ok, [str(p) for p in report.problems][:5]


def breakages() -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import test_validate_breakage as t
    from rawdump import random_events, write_dump

    from pipeline import convert
    from pipeline.config import ConvertConfig
    from pipeline.storage import OutputDir

    tmp = Path(tempfile.mkdtemp(prefix="bench-validate-"))
    write_dump(tmp / "random.root", random_events(500, seed=1))
    good = tmp / "good"
    convert([str(tmp / "random.root")], str(good), ConvertConfig(schema_version=2, shard_events=200, row_group_size=50),
            workers=1, quiet=True)

    def fresh():
        d = tmp / "copy"
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(good, d)
        return d

    def shard(d, i=0):
        return t.manifest(d)["shards"][i]["path"]

    def swap_entry(d):
        rel = shard(d, 1)
        e = pq.read_table(d / rel, columns=["source_entry"]).column(0).to_numpy()
        row = int(np.flatnonzero(np.diff(e) > 1)[0])
        t.rewrite(d, lambda tb: tb.set_column(tb.column_names.index("source_entry"), tb.schema.field("source_entry"),
                                              pa.array(np.where(np.arange(len(e)) == row, e + 1, e))), shard=1)

    def edit(fn):
        def plant(d):
            m = t.manifest(d)
            fn(m)
            t.write_manifest(d, m)
        return plant

    def dir_shard(d):
        (d / shard(d)).unlink()
        (d / shard(d)).mkdir()

    def swap_config(d):  # a shard of the same input converted with another min_pt, under this shard's name
        from pipeline.selection import SelectionConfig
        from pipeline.transform import TransformConfig

        other = tmp / "other"
        if not other.exists():
            convert([str(tmp / "random.root")], str(other), ConvertConfig(
                schema_version=2, shard_events=200, row_group_size=50,
                transform=TransformConfig(SelectionConfig(min_pt=4.0))), workers=1, quiet=True)
        shutil.copy(other / shard(other, 1), d / shard(d, 1))
        t.recompute(d)

    def listed_twice(d):
        m = t.manifest(d)
        m["shards"].append(dict(m["shards"][0]))
        t.write_manifest(d, m)
        t.recompute(d)

    def cut(field, value):
        def plant(d):
            def fn(tb):
                tb = t.replace_child(tb, "truthMuons", field, lambda v: np.where(np.arange(len(v)) == 3, value, v))
                mu = tb.column("truthMuons").combine_chunks().values
                q, pt = mu.field("truthMuon_q").to_numpy(), mu.field("truthMuon_pt").to_numpy()
                return t.replace_child(tb, "truthMuons", "truthMuon_qpt",
                                       lambda v: (q / pt.astype(np.float64)).astype(np.float32))
            t.rewrite(d, fn)
        return plant

    planted = {
        "duplicated event": lambda d: t.rewrite(d, lambda tb: pa.concat_tables([tb.slice(0, 8), tb.slice(7, 1),
                                                                                tb.slice(8)])),
        "rows shuffled in a shard": lambda d: t.rewrite(d, lambda tb: pa.concat_tables(
            [tb.slice(0, 40).take(np.random.default_rng(3).permutation(40)), tb.slice(40)])),
        "shard from another dataset (manifest updated)": swap_config,
        "shard listed twice": listed_twice,
        "muon below min_pt": cut("truthMuon_pt", 4.5),
        "muon above max |eta|": cut("truthMuon_eta", 2.75),
        "q/pT sign flipped": lambda d: t.rewrite(d, lambda tb: t.replace_child(
            tb, "truthMuons", "truthMuon_qpt", lambda v: np.where(np.arange(len(v)) == 5, -v, v))),
        "truth links of two muons swapped": lambda d: t.rewrite(d, t._two_muon_swap),
        "source_entry edited (order kept)": swap_entry,
        "statistics x 10": edit(lambda m: m["statistics"]["hits"]["r"].update(
            {k: v * 10 for k, v in m["statistics"]["hits"]["r"].items()})),
        "config min_pt edited": edit(lambda m: m["config"]["selection"].update(min_pt=4.0)),
        "stray part-x.parquet.bak": lambda d: shutil.copy(d / shard(d), d / "shards" / "part-x.parquet.bak"),
        "shard path is a directory": dir_shard,
        "manifest entry without sha256": edit(lambda m: m["shards"][0].pop("sha256")),
    }
    rows = []
    for name, plant in planted.items():
        d = fresh()
        plant(d)
        default = not validate_dataset(str(d)).ok
        source = default or not validate_dataset(str(d), source="all").ok
        rows.append((name, default, source))
    rng = np.random.default_rng(19)
    d = fresh()
    rel = shard(d, 1)
    original = (d / rel).read_bytes()
    m0 = t.manifest(d)
    for k in range(19):
        pos = int(rng.integers(0, len(original)))
        data = bytearray(original)
        data[pos] ^= 1 << int(rng.integers(0, 8))
        (d / rel).write_bytes(bytes(data))
        m = json.loads(json.dumps(m0))
        m["shards"][1]["sha256"] = OutputDir(str(d)).sha256(rel)
        t.write_manifest(d, m)
        default = not validate_dataset(str(d)).ok
        source = default or not validate_dataset(str(d), source="all").ok
        rows.append((f"bit flip {k + 1} at byte {pos}, sha256 updated", default, source))
    for name, default, source in rows:
        print(f"  {name:50s} default: {'caught' if default else 'passed'}   with --source all: "
              f"{'caught' if source else 'passed'}")
    print(f"planted {len(rows)}: caught by the default level {sum(r[1] for r in rows)}, "
          f"by default or --source all {sum(r[2] for r in rows)}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-costs", action="store_true")
    args = ap.parse_args()
    breakages()
    if not args.skip_costs:
        costs(args.events, args.repeat)
