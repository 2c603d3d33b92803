"""Convert's Parquet codec, measured: write and read events/s per core and bytes/event per codec.

    .venv/bin/python bench/bench_codecs.py [--events 2000] [--repeat 3]

Two simulated inputs (``muon-pipeline simulate``; about 100 and 350 hits/event) are converted once
with the defaults; the output table is then written with each codec exactly as convert's writer does
(``pipeline/units.py``: row groups of 2000 events, dictionary encoding only for ``source_file``, no
statistics), into memory, one thread, and read back (one thread). Each codec runs with and without
BYTE_STREAM_SPLIT on the floating-point columns. Reported per codec and input: bytes/event, write
events/s per core, read events/s per core (what the training loader decodes), and the whole convert's
events/s per core estimated as ``events / (t_convert_default - t_write_default + t_write_codec)``
(CPU seconds of this process, medians; convert runs in-process with one worker).

Rule for the default (stated in the README): among the settings whose files are within 10 % of the
smallest at *both* hit counts, take the one with the highest estimated convert events/s at 100 hits/event
(the filtered-dataset size); break ties (< 3 %) by the smaller file.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from _common import simulated

from pipeline import convert, read_dataset
from pipeline.config import ConvertConfig

CODECS = [("none", None), ("lz4_raw", None), ("snappy", None), ("zstd", 1), ("zstd", 3), ("zstd", 6), ("zstd", 9)]
INPUTS = {100: 50, 350: 300}  # hits/event (approx.) -> simulated background hits/event


def float_columns(table: pa.Table) -> list[str]:
    """Parquet leaf paths of the floating-point columns (``hits.list.element.r`` ...)."""
    buf = pa.BufferOutputStream()
    pq.write_table(table.slice(0, 1), buf)
    schema = pq.ParquetFile(pa.BufferReader(buf.getvalue())).schema
    return [schema.column(i).path for i in range(len(schema)) if schema.column(i).physical_type in ("FLOAT", "DOUBLE")]


def write(table: pa.Table, codec: str, level: int | None, bss: list[str] | bool) -> pa.Buffer:
    buf = pa.BufferOutputStream()
    kw = {"compression": codec}
    if level is not None:
        kw["compression_level"] = level
    pq.write_table(table, buf, row_group_size=2000, use_dictionary=["source_file"], write_statistics=False,
                   use_byte_stream_split=bss, **kw)
    return buf.getvalue()


def read(data: pa.Buffer) -> pa.Table:
    return pq.read_table(pa.BufferReader(data), use_threads=False)


def timed(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    tmp = Path(tempfile.mkdtemp())
    results: dict[str, dict[int, dict[str, float]]] = {}
    for hits, background in INPUTS.items():
        [raw] = simulated("codecs", args.events, background)
        out = tmp / f"ds{hits}"

        def run_convert(out=out, raw=raw):
            shutil.rmtree(out, ignore_errors=True)
            convert([str(raw)], str(out), ConvertConfig(schema_version=2, shard_events=10**9), workers=1, quiet=True)

        run_convert()  # warm-up: imports and first-call costs are not per-event work
        t_convert = timed(run_convert, args.repeat)
        table = read_dataset(str(out))
        events = table.num_rows
        n_hits = json.loads((out / "_manifest.json").read_text())["totals"]["hits"]
        floats = float_columns(table)
        default = ConvertConfig(schema_version=2).compression
        t_default = timed(partial(write, table, default.codec, default.writer_kwargs().get("compression_level"),
                                  False), args.repeat)
        rest = max(t_convert - t_default, 1e-9)
        print(f"# {hits} hits/event input: {events} events, {n_hits / events:.0f} hits/event, {len(floats)} float "
              f"columns; convert {t_convert:.2f} CPU-s, of which the default write ({default}) {t_default:.2f} s")
        for codec, level in CODECS:
            for bss in (False, True):
                name = f"{codec}{'' if level is None else f':{level}'}{' +bss' if bss else ''}"
                data = write(table, codec, level, floats if bss else False)
                t_w = timed(partial(write, table, codec, level, floats if bss else False), args.repeat)
                t_r = timed(partial(read, data), args.repeat)
                results.setdefault(name, {})[hits] = {"bytes_per_event": data.size / events,
                                                      "write_eps": events / t_w, "read_eps": events / t_r,
                                                      "convert_eps": events / (rest + t_w)}
    print("\n| codec | B/event @100 | B/event @350 | write ev/s/core @100 | @350 | read ev/s/core @100 | @350 "
          "| convert ev/s/core @100 | @350 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r[100]['bytes_per_event']:,.0f} | {r[350]['bytes_per_event']:,.0f} "
              f"| {r[100]['write_eps']:,.0f} | {r[350]['write_eps']:,.0f} | {r[100]['read_eps']:,.0f} "
              f"| {r[350]['read_eps']:,.0f} | {r[100]['convert_eps']:,.0f} | {r[350]['convert_eps']:,.0f} |")
    smallest = {h: min(r[h]["bytes_per_event"] for r in results.values()) for h in INPUTS}
    eligible = [n for n, r in results.items() if all(r[h]["bytes_per_event"] <= 1.10 * smallest[h] for h in INPUTS)]
    best = max(eligible, key=lambda n: results[n][100]["convert_eps"])
    close = [n for n in eligible if results[n][100]["convert_eps"] >= 0.97 * results[best][100]["convert_eps"]]
    pick = min(close, key=lambda n: results[n][100]["bytes_per_event"])
    print(f"\n# within 10 % of the smallest files at both sizes: {', '.join(eligible)}")
    print(f"# rule's choice: {pick} (fastest convert at 100 hits/event; ties < 3 % to the smaller file)")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
