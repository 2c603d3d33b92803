"""Loader throughput vs the model's appetite, on this machine.

    .venv/bin/python bench/bench_loader.py [--data DIR] [--events 4000] [--workers 0,1,2] [--device cpu]

Prints, per DataLoader worker count: events/s the loader delivers alone (and per worker), events/s the
model consumes (train steps/s × batch size, on cached batches), and the stall fraction of a real
training loop (time waiting for the next batch / wall time). A stall fraction near 0 means the
loader keeps up; the loader is worth optimising only where it does not.

Without ``--data`` a dataset is made with ``muon-pipeline simulate`` + ``convert``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from pipeline.train.config import check_against_schema, load_config
from pipeline.train.data import make_loader, make_stream, muon_values, normalisation_for, open_dataset
from pipeline.train.model import build_model
from pipeline.train.task import fit_target_scaling

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def make_dataset(out: Path, events: int, seed: int = 1, background: int = 300,
                 pt_max: float | None = None) -> tuple[Path, str]:
    """A converted dataset of ``events`` simulated events in ``out`` (cached); returns (path, how)."""
    how = f"simulate (background {background}/event{f', pT up to {pt_max:g} GeV' if pt_max else ''}) + convert"
    if (out / "manifest.json").exists():
        return out, how
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    raw = out.parent / f"{out.name}.root"
    subprocess.run([str(BIN / "muon-pipeline"), "simulate", str(raw), "--events", str(events), "--seed", str(seed),
                    "--background-per-event", str(background), *(["--pt-max", str(pt_max)] if pt_max else [])],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run([str(BIN / "muon-pipeline"), "convert", str(raw), "--output", str(out), "-q",
                    "--row-group-size", "500"], check=True, stdout=subprocess.DEVNULL)
    return out, how


def setup(data: Path, config: Path, batch_size: int, device: str):
    cfg = load_config(config)
    info = open_dataset(data)
    hit_fields = check_against_schema(cfg, info.schema)
    norm = normalisation_for(info, hit_fields)
    centres, scales = fit_target_scaling(muon_values(info, "train", cfg.data), cfg.fields, cfg.inverse_fields)
    model = build_model(cfg, hit_fields, info.muon_fields, centres, scales).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def stream(workers: int):
        return make_stream(info, hit_fields, norm, "train", cfg, shuffle=True, num_workers=workers,
                           batch_size=batch_size)

    def step(batch) -> None:
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
            out = model(batch)
        loss = model.task.loss(out, batch["muons"], batch["muon_mask"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return stream, step


def loader_rate(stream) -> float:
    t0 = time.perf_counter()
    n = sum(len(b["event"]) for b in make_loader(stream))
    return n / (time.perf_counter() - t0)


def model_rate(stream, step, device: str, batches: int = 30) -> float:
    cached = [b for _, b in zip(range(batches), stream, strict=False)]
    step(cached[0])  # warm-up (kernels, allocator)
    _sync(device)
    t0 = time.perf_counter()
    n = 0
    for b in cached[1:]:
        step(b)
        n += len(b["event"])
    _sync(device)
    return n / (time.perf_counter() - t0)


def stall_fraction(stream, step, device: str) -> tuple[float, float]:
    """(stall fraction, events/s) of a training epoch fed by the real DataLoader."""
    it = iter(make_loader(stream))
    waited, n = 0.0, 0
    t0 = time.perf_counter()
    while True:
        tw = time.perf_counter()
        try:
            b = next(it)
        except StopIteration:
            break
        waited += time.perf_counter() - tw
        step(b)
        _sync(device)
        n += len(b["event"])
    wall = time.perf_counter() - t0
    return waited / wall, n / wall


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path)
    ap.add_argument("--events", type=int, default=4000)
    ap.add_argument("--config", type=Path, default=REPO / "configs" / "inverse_pt.yaml")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--workers", default="0,1,2")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/muon-pipeline-bench"))
    args = ap.parse_args()
    data, how = (args.data, "given") if args.data else make_dataset(args.cache / f"loader-{args.events}", args.events)
    stream, step = setup(data, args.config, args.batch_size, args.device)
    s0 = stream(0)
    print(f"# dataset {data} ({how}): {s0.events} train events, batch {args.batch_size}, device {args.device}, "
          f"torch threads {torch.get_num_threads()}, {len(s0.units)} row groups")
    consume = model_rate(s0, step, args.device)
    print(f"# model consumption (train step on cached batches): {consume:,.0f} events/s")
    print("| workers | loader events/s | per worker | model events/s | stall fraction | training events/s |")
    print("|---:|---:|---:|---:|---:|---:|")
    for w in (int(x) for x in args.workers.split(",")):
        rate = loader_rate(stream(w))
        stall, train_rate = stall_fraction(stream(w), step, args.device)
        print(f"| {w} | {rate:,.0f} | {rate / max(w, 1):,.0f} | {consume:,.0f} | {stall:.1%} | {train_rate:,.0f} |")


if __name__ == "__main__":
    main()
