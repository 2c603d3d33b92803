"""Memory and time per event of the hit encoder with full vs windowed attention, 1k–10k hits (CPU).

Each (attention, hits) point runs in a fresh process (peak RSS is per process): one event of random hits
through the shipped hit filter's encoder (dim 32, 2 layers, 4 heads, 23 inputs), forward + backward
(training) and forward alone under inference mode (predict), median of a few repeats. Peak memory is the
process's peak RSS minus its RSS after torch and the model are loaded.

    python bench/attention_scaling.py [--hits 1000,3000,7000,10000] [--window 256] [--threads 1] [--kernels]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, statistics, sys, time
import torch
from pipeline.train.attention import AttentionSpec
from pipeline.train.model import HitEncoder
kind, n, window, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
torch.manual_seed(0)
enc = HitEncoder(23, 32, 2, 4, 0.0, AttentionSpec(kind, window, key_index=21))
hits, mask = torch.randn(1, n, 23), torch.ones(1, n, dtype=torch.bool)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
def train():
    enc(hits, mask).square().mean().backward()
def infer():
    with torch.inference_mode():
        enc(hits, mask)
out = {}
for name, fn, reps in (("infer", infer, 3), ("train", train, 3)):
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter(); fn(); times.append(time.perf_counter() - t)
    out[name + "_s"] = statistics.median(times)
    out[name + "_peak_mib"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
print(json.dumps(out))
"""


def point(kind: str, hits: int, window: int, threads: int) -> dict:
    r = subprocess.run([sys.executable, "-c", CHILD, kind, str(hits), str(window), str(threads)],
                       capture_output=True, text=True, timeout=600)
    if r.returncode:
        return {"error": (r.stderr.strip().splitlines() or ["killed"])[-1][:120]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def kernels(hits: int, window: int, threads: int) -> None:
    """One SDPA call of 4 heads × 8 dims at ``hits`` hits: no mask, a banded boolean mask (|i - j| < w/2),
    and blocks of ``window`` (what windowed attention runs): why blocks, not a banded mask."""
    import time

    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    q, k, v = (torch.randn(1, 4, hits, 8) for _ in range(3))
    i = torch.arange(hits)
    band = (i[:, None] - i[None, :]).abs() < window // 2
    n = -(-hits // window)
    qb, kb, vb = (torch.randn(n, 4, window, 8) for _ in range(3))

    def best(fn) -> float:
        fn()
        times = []
        for _ in range(3):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)

    print(f"{hits} hits, one SDPA call: no mask {best(lambda: F.scaled_dot_product_attention(q, k, v)):.4f} s, "
          f"banded mask {best(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=band)):.4f} s, "
          f"blocks of {window} {best(lambda: F.scaled_dot_product_attention(qb, kb, vb)):.4f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hits", default="1000,3000,7000,10000")
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--kernels", action="store_true", help="only compare SDPA with no mask, a banded mask, blocks")
    args = ap.parse_args()
    if args.kernels:
        for n in (int(x) for x in args.hits.split(",")):
            kernels(n, args.window, args.threads)
        return
    print("| hits | attention | predict s/event | predict peak MiB | train s/event | train peak MiB |")
    print("|---:|---|---:|---:|---:|---:|")
    for n in (int(x) for x in args.hits.split(",")):
        for kind in ("full", "window"):
            r = point(kind, n, args.window, args.threads)
            label = kind if kind == "full" else f"window {args.window}"
            if "error" in r:
                print(f"| {n:,} | {label} | {r['error']} | | | |", flush=True)
                continue
            print(f"| {n:,} | {label} | {r['infer_s']:.3f} | {r['infer_peak_mib']:.0f} | {r['train_s']:.3f} | "
                  f"{r['train_peak_mib']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
