"""Loader throughput vs the model's appetite, on this machine: streaming loader, device-resident path, model step.

    .venv/bin/python bench/bench_loader.py [--data DIR] [--events 4000] [--workers 0,1,2] [--device cpu]
                                           [--batch-size 128[,1000]] [--compile]

Prints, in one run and per batch size:

* the model's consumption: events/s of a train step (forward, loss, backward, AdamW) on batches already
  on the device, eager and (``--compile``) under ``torch.compile``;
* per data path: events/s the path delivers alone (the streaming loader per DataLoader worker count,
  and per worker; the device-resident path of ``pipeline/train/data/resident.py``, which runs in the training
  process), and the stall fraction of a real training loop fed by it (time waiting for the next batch /
  wall time) with its training events/s. A stall fraction near 0 means the data path keeps up.

The ratio ``resident / streaming (0 workers)`` compares the two paths in one process each. Medians of
``--repeat`` passes. Without ``--data`` a dataset is made with ``muon-pipeline simulate`` + ``convert``
(cached under ``--cache``). On a GPU host run it with ``--device cuda --batch-size 200,1000 --compile``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from pipeline.errors import DatasetError
from pipeline.train.config import check_against_schema, load_config
from pipeline.train.data import muon_values, normalisation_for
from pipeline.train.data import open_training_set as open_dataset
from pipeline.train.data.resident import ResidentStream, make_resident_loader
from pipeline.train.data.stream import make_loader, make_stream
from pipeline.train.fit import resolve_threads
from pipeline.train.model import build_model
from pipeline.train.module import compile_model
from pipeline.train.task import fit_target_scaling

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def make_dataset(out: Path, events: int, seed: int = 1, background: int = 300,
                 pt_max: float | None = None) -> tuple[Path, str]:
    """A converted dataset of ``events`` simulated events in ``out`` (cached); returns (path, how)."""
    how = f"simulate (background {background}/event{f', pT up to {pt_max:g} GeV' if pt_max else ''}) + convert"
    if (out / "_manifest.json").exists():
        try:
            open_dataset(out)  # a cache made by an older version of the format is made again
            return out, how + ", reused from an earlier run (delete the folder to make it anew)"
        except DatasetError:
            pass
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    raw = out.parent / f"{out.name}.root"
    subprocess.run([str(BIN / "muon-pipeline"), "simulate", str(raw), "--events", str(events), "--seed", str(seed),
                    "--background-per-event", str(background), *(["--pt-max", str(pt_max)] if pt_max else [])],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run([str(BIN / "muon-pipeline"), "convert", str(raw), "--output", str(out), "-q",
                    "--row-group-size", "500"], check=True, stdout=subprocess.DEVNULL)
    return out, how


def setup(data: Path, config: Path, batch_size: int, device: str, compile: bool = False):
    """(stream factory ``workers -> ShardStream``, train step ``batch -> None``) for ``config`` on ``data``."""
    cfg = load_config(config)
    info = open_dataset(data)
    hit_fields = check_against_schema(cfg, info.schema)
    norm = normalisation_for(info, hit_fields)
    centres, scales = fit_target_scaling(muon_values(info, "train", cfg.data), cfg.fields, cfg.inverse_fields)
    model = build_model(cfg, hit_fields, info.muon_fields, centres, scales).to(device)
    net = compile_model(model) if compile else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def stream(workers: int):
        return make_stream(info, hit_fields, norm, "train", cfg, shuffle=True, num_workers=workers,
                           batch_size=batch_size)

    def step(batch) -> None:
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
            out = net(batch)
        loss = model.task.loss(out, batch["muons"], batch["muon_mask"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return stream, step


def _loader(source):
    return make_resident_loader(source) if isinstance(source, ResidentStream) else make_loader(source)


def loader_rate(source, device: str = "cpu", min_seconds: float = 1.0) -> tuple[float, float]:
    """(events/s of wall time, events per CPU-second of this process) of a data path alone: whole epochs
    after a warm-up epoch until ``min_seconds``, device work synchronised. The CPU-time rate is the robust one on a shared
    machine; it counts only this process (for DataLoader workers, read the wall rate)."""
    loader = _loader(source)
    for _ in loader:  # warm-up epoch: worker start-up (persistent workers), first-call costs, resident load
        pass
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while True:
        for b in loader:
            n += len(b["event"])
        _sync(device)
        if time.perf_counter() - t0 >= min_seconds:
            return n / (time.perf_counter() - t0), n / max(time.process_time() - c0, 1e-9)


def model_rate(stream, step, device: str, batches: int = 30, warmup: int = 3, warm_all: bool = False) -> float:
    """events/s of ``step`` on ``batches`` cached batches after ``warmup`` ones (kernels, allocator); with
    ``warm_all`` every timed batch has run once before (compiled steps: shapes not seen yet recompile)."""
    cached = [b for _, b in zip(range(batches + warmup), stream, strict=False)]
    for b in cached if warm_all else cached[:warmup]:
        step(b)
    _sync(device)
    t0 = time.perf_counter()
    n = 0
    for b in cached[warmup:]:
        step(b)
        n += len(b["event"])
    _sync(device)
    return n / (time.perf_counter() - t0)


def stall_fraction(source, step, device: str, max_batches: int = 0) -> tuple[float, float]:
    """(stall fraction, events/s) of a training epoch (or its first ``max_batches``) fed by the real
    DataLoader of ``source``."""
    it = iter(_loader(source))
    waited, n, k = 0.0, 0, 0
    t0 = time.perf_counter()
    while not max_batches or k < max_batches:
        k += 1
        tw = time.perf_counter()
        try:
            b = next(it)
        except StopIteration:
            break
        _sync(device)  # a resident batch is made by queued device kernels: count them as waiting
        waited += time.perf_counter() - tw
        step(b)
        _sync(device)
        n += len(b["event"])
    wall = time.perf_counter() - t0
    return waited / wall, n / wall


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def median(fn, repeat: int) -> tuple[float, ...]:
    runs = [fn() for _ in range(repeat)]
    return tuple(statistics.median(r[i] for r in runs) for i in range(len(runs[0])))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path)
    ap.add_argument("--events", type=int, default=4000)
    ap.add_argument("--background", type=int, default=300, help="background hits per simulated event")
    ap.add_argument("--config", type=Path, default=REPO / "configs" / "inverse_pt.yaml")
    ap.add_argument("--batch-size", default="128", help="comma-separated batch sizes")
    ap.add_argument("--workers", default="0,1,2")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--compile", action="store_true", help="also measure the step under torch.compile")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--stall-batches", type=int, default=0, help="cap on the batches of each stall loop (0 = epoch)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads on CPU (0 = the trainer's rule)")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/muon-pipeline-bench"))
    args = ap.parse_args()
    if args.data:
        data, how = args.data, "given"
    else:
        data, how = make_dataset(args.cache / f"loader-{args.events}-bkg{args.background}", args.events,
                                 background=args.background)
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(resolve_threads(args.threads))
    workers = [int(x) for x in args.workers.split(",")]
    for batch_size in (int(x) for x in args.batch_size.split(",")):
        stream, step = setup(data, args.config, batch_size, args.device)
        s0 = stream(0)
        hits = sum(int(s["hits"]) for s in s0.info.manifest["shards"]) / max(
            sum(int(s["rows"]) for s in s0.info.manifest["shards"]), 1)
        print(f"\n# dataset {data} ({how}): {s0.events} train events, {hits:.0f} hits/event, "
              f"{len(s0.hit_fields)} + {len(s0.frame_fields)} inputs, batch {batch_size}, device {args.device}, "
              f"torch threads {torch.get_num_threads()}, {len(s0.units)} row groups")
        consume = model_rate(s0, step, args.device)
        line = f"# model step (batches on the device): eager {consume:,.0f} events/s"
        if args.compile:
            _, cstep = setup(data, args.config, batch_size, args.device, compile=True)
            t0 = time.perf_counter()
            compiled = model_rate(s0, cstep, args.device, warm_all=True)
            line += f", compiled {compiled:,.0f} events/s ({compiled / consume:.2f}x; " \
                    f"compiling and a warm-up pass took {time.perf_counter() - t0:.0f} s)"
        print(line)
        resident = ResidentStream(s0, device)
        resident.load()
        print(f"# resident: loaded {resident.events} events ({resident._store.nbytes / 2**20:.1f} MiB) in "
              f"{resident.load_seconds:.2f} s")
        print("| data path | workers | events/s delivered | per worker | events per CPU-s (in process) "
              "| stall fraction | training events/s |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        rates = {}
        for w in workers:
            rate, cpu = median(lambda w=w, f=stream: loader_rate(f(w), args.device), args.repeat)
            rates[w] = (rate, cpu)
            stall, train_rate = stall_fraction(stream(w), step, args.device, args.stall_batches)
            print(f"| streaming | {w} | {rate:,.0f} | {rate / max(w, 1):,.0f} | {cpu:,.0f}{'' if w == 0 else ' (main)'} "
                  f"| {stall:.1%} | {train_rate:,.0f} |")
        r_rate, r_cpu = median(lambda r=resident: loader_rate(r, args.device), args.repeat)
        stall, train_rate = stall_fraction(resident, step, args.device, args.stall_batches)
        print(f"| resident | – | {r_rate:,.0f} | – | {r_cpu:,.0f} | {stall:.1%} | {train_rate:,.0f} |")
        if 0 in rates:
            print(f"# resident / streaming in one process: {r_rate / rates[0][0]:.1f}x wall, "
                  f"{r_cpu / rates[0][1]:.1f}x per CPU-second; model step {consume:,.0f} events/s")

if __name__ == "__main__":
    main()
