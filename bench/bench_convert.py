"""Convert throughput vs the I/O floor, single process, medians of several runs.

floor = reading the same branches with uproot alone (same entry ranges)
      + writing the same output table with pyarrow alone (same codec and row groups).
Goal (issue): convert <= 1.25 x floor.

    .venv/bin/python bench/bench_convert.py [--events 20000] [--background 300] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import uproot
from _common import median_time, simulated

from pipeline import convert, read_dataset
from pipeline.config import ConvertConfig
from pipeline.schema import load_schema
from pipeline.source import raw_fields


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--background", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    [raw] = simulated("convert", args.events, args.background)
    cfg = ConvertConfig(schema_version=2, shard_events=10**9)  # one unit: a single process end to end
    schema = load_schema(2)
    branches = [f.source for fields in raw_fields(schema).values() for f in fields]
    tmp = Path(tempfile.mkdtemp())
    out = tmp / "ds"

    def run_convert():
        shutil.rmtree(out, ignore_errors=True)
        convert([str(raw)], str(out), cfg, workers=1, quiet=True)

    run_convert()
    table = read_dataset(str(out))
    manifest = json.loads((out / "_manifest.json").read_text())
    tree = uproot.open(raw)["MuonHitDump"]
    step = int(tree.num_entries_for("100 MB", branches))

    def floor_read():
        for start in range(0, tree.num_entries, step):
            tree.arrays(branches, entry_start=start, entry_stop=min(start + step, tree.num_entries), library="ak", how=dict)

    def floor_write():
        pq.write_table(table, tmp / "floor.parquet", row_group_size=cfg.row_group_size,
                       use_dictionary=["source_file"], write_statistics=False, **cfg.compression.writer_kwargs())

    t_conv, all_conv = median_time(run_convert, args.repeat)
    t_read, _ = median_time(floor_read, args.repeat)
    t_write, _ = median_time(floor_write, args.repeat)
    floor = t_read + t_write
    cf = manifest["cutflow"]
    size_mb = raw.stat().st_size / 1e6
    print(f"input: {raw.name}, {cf['entries_in']} events, {cf['hits_in']} hits, {size_mb:.1f} MB "
          f"-> {cf['events_out']} events, {cf['hits_out']} hits, {manifest['totals']['bytes'] / 1e6:.1f} MB Parquet")
    print(f"convert (median of {args.repeat}): {t_conv:.3f} s  [{', '.join(f'{t:.2f}' for t in all_conv)}]")
    print(f"  {cf['entries_in'] / t_conv:,.0f} events/s, {cf['hits_in'] / t_conv / 1e6:.2f} M hits/s, {size_mb / t_conv:.1f} MB/s in")
    print(f"floor: uproot read {t_read:.3f} s + pyarrow write {t_write:.3f} s = {floor:.3f} s")
    print(f"ratio convert / floor = {t_conv / floor:.2f}  (goal <= 1.25)")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
