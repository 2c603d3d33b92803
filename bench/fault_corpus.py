"""Corrupted-input corpus: every damaged dump is either refused by name or converted into a valid dataset.

    .venv/bin/python bench/fault_corpus.py [--flips 24] [--truncations 8] [--seed 1] [--out DIR]

Makes a small simulated dump, then damaged copies: random byte flips (anywhere in the file, so in
headers, streamers and compressed baskets alike), truncations at random lengths, and dumps whose
values break the schema (out-of-range coordinates, charges of 0 or 5, unknown technology codes,
non-finite values, unsigned values beyond the signed range) or validate's rules (eventNumber repeated
within the file). Each is converted; the outcome must be
one of
  * refused: exit 1 with one line naming the file (and, where known, entry and field), nothing visible;
  * converted: exit 0 and ``muon-pipeline validate`` accepts the dataset.
A dataset written and then rejected by validate is the failure this script counts (goal: 0). ROOT
stores no checksum for compressed baskets, so a flip that still decompresses into in-range values
is converted as data: only ``validate --source``-style comparison with a second copy could see it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from rawdump import random_events, write_dump  # noqa: E402

BIN = Path(sys.executable).parent


def value_cases(base: dict) -> dict[str, dict]:
    """Dumps whose values break the schema's rules, one rule each."""
    import awkward as ak

    def edit(group: str, field: str, value, dtype=None) -> dict:
        ev = {k: v for k, v in base.items()}
        rec = ev[group]
        counts = ak.num(rec)
        x = ak.to_numpy(ak.flatten(rec[field])).astype(dtype or ak.to_numpy(ak.flatten(rec[field])).dtype)
        x[len(x) // 2] = value
        ev[group] = ak.with_field(rec, ak.unflatten(x, counts), field)
        return ev

    def repeat_event_numbers() -> dict:  # the second half of the entries repeats the first half's numbers
        ev = {k: v for k, v in base.items()}
        numbers = np.asarray(ev["eventNumber"]).copy()
        half = len(numbers) // 2
        numbers[half: 2 * half] = numbers[:half]
        ev["eventNumber"] = numbers
        return ev

    return {
        "coordinate 3e30": edit("spacePoint", "globEdgeLowX", 3e30),
        "coordinate nan": edit("spacePoint", "globEdgeHighZ", np.nan),
        "drift radius inf": edit("spacePoint", "driftR", np.inf),
        "charge 0": edit("truthMuon", "q", 0),
        "charge 5": edit("truthMuon", "q", 5),
        "pt negative": edit("truthMuon", "pt", -3.0),
        "technology 300": edit("spacePoint", "technology", 300),  # codes -1..255 are kept and counted
        "truth link 7": edit("spacePoint", "truthLink", 7),
        "channel uint32 3e9": edit("spacePoint", "channel", 3_000_000_000, np.uint32),
        "event numbers repeated": repeat_event_numbers(),
    }


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flips", type=int, default=24, help="byte-flipped copies (default 24)")
    ap.add_argument("--truncations", type=int, default=8, help="truncated copies (default 8)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("/tmp/muon-pipeline-bench/fault_corpus"))
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    import uproot

    base = random_events(300, seed=args.seed)
    good = args.out / "good.root"
    write_dump(good, base, compression=uproot.ZSTD(3))
    data = good.read_bytes()
    cases: dict[str, Path] = {}
    for i in range(args.flips):
        flipped = bytearray(data)
        for pos in rng.integers(0, len(data), size=3):
            flipped[pos] ^= 1 << int(rng.integers(0, 8))
        p = args.out / f"flip{i:02d}.root"
        p.write_bytes(bytes(flipped))
        cases[f"3 bit flips #{i}"] = p
    for i, n in enumerate(sorted(rng.integers(100, len(data), size=args.truncations))):
        p = args.out / f"trunc{i:02d}.root"
        p.write_bytes(data[:n])
        cases[f"truncated at {n} of {len(data)} bytes"] = p
    for name, events in value_cases(base).items():
        p = args.out / (name.replace(" ", "_") + ".root")
        write_dump(p, events)
        cases[name] = p

    rows, counts = [], {"refused": 0, "converted, valid": 0, "written then rejected": 0, "other": 0}
    for name, path in cases.items():
        out = args.out / f"ds-{path.stem}"
        r = run([str(BIN / "muon-pipeline"), "convert", str(path), "-o", str(out), "-q"])
        if r.returncode == 1:
            lines = (r.stdout + r.stderr).strip().splitlines()
            ok = len(lines) == 1 and str(path) in lines[0] and not list(out.rglob("*.parquet"))
            outcome = "refused" if ok else "other"
            detail = lines[-1] if lines else ""
        elif r.returncode == 0:
            v = run([str(BIN / "muon-pipeline"), "validate", str(out)])
            outcome = "converted, valid" if v.returncode == 0 else "written then rejected"
            detail = "validate OK" if v.returncode == 0 else (v.stdout + v.stderr).strip().splitlines()[-1]
        else:
            outcome, detail = "other", f"exit {r.returncode}: {(r.stdout + r.stderr).strip()[-200:]}"
        counts[outcome] += 1
        rows.append({"case": name, "outcome": outcome, "detail": detail[:160]})
        print(f"{outcome:22s} {name:34s} {detail[:110]}", flush=True)
    print(f"\n{len(cases)} corrupted inputs: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    (args.out / "results.json").write_text(json.dumps({"counts": counts, "cases": rows}, indent=1))


if __name__ == "__main__":
    main()
