"""kill -9 at random moments: every interrupted command resumes into the uninterrupted result.

    .venv/bin/python bench/fault_kill.py [--trials 20] [--events 4000] [--seed 1] [--out DIR]

For each kind of writing command — ``convert -j 2`` (a process pool), ``convert --scheduler local``
(an embedded Dask cluster), ``finalize``, ``migrate`` and one task of a 4-task job array — the script first runs it uninterrupted (the reference, also timing
it), then ``--trials`` times: starts it, sends SIGKILL to the main process at a moment drawn
uniformly from [0, reference duration], checks that no process of that command is left after 5 s
(pool and Dask workers must end with their parent; processes are traced by an environment variable
they inherit), re-runs the same command to completion, and compares the
dataset with the reference:

* the same files outside ``_work/`` (shards and manifest), byte for byte for the shards;
* the same manifest apart from its ``timing`` block (which records when it was written);
* no temporary file (``.tmp-*``) left anywhere in the output;
* ``muon-pipeline validate`` exits 0.

Prints one line per kind (trials, kills that landed before the command ended, identical resumes,
orphans) and a JSON summary. Exit status 1 if any trial differs or leaves an orphan.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from rawdump import random_events, write_dump  # noqa: E402

CLI = str(Path(sys.executable).parent / "muon-pipeline")


def run(args: list[str]) -> None:
    r = subprocess.run([CLI, *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({r.returncode}): {r.stdout}{r.stderr}")


def digest(ds: Path) -> dict:
    """What must be identical after a resume: data files byte for byte, the manifest but its timing."""
    files = {}
    for p in sorted(ds.rglob("*")):
        rel = p.relative_to(ds).as_posix()
        if p.is_file() and not rel.startswith("_work/") and rel != "_manifest.json":
            files[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    manifest = json.loads((ds / "_manifest.json").read_text())
    manifest.pop("timing", None)
    return {"files": files, "manifest": manifest}


def leftovers(ds: Path) -> list[str]:
    return [p.relative_to(ds).as_posix() for p in ds.rglob("*") if p.name.startswith(".tmp-")]


TAG = "MUON_PIPELINE_FAULT_TRIAL"


def processes_tagged(token: str) -> list[int]:
    """Live PIDs whose environment holds ``TAG=token``: the killed command and everything it started
    (forked pool workers, Dask's spawned workers and resource tracker inherit the environment)."""
    pids, needle = [], f"{TAG}={token}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
            state = next(line for line in (entry / "status").read_text().splitlines() if line.startswith("State:"))
        except (OSError, StopIteration):
            continue
        if needle in env and "zombie" not in state:
            pids.append(int(entry.name))
    return pids


def kill_at(args: list[str], delay: float, token: str) -> bool:
    """Start the command, SIGKILL its main process after ``delay`` s; True if it was still running."""
    proc = subprocess.Popen([CLI, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, TAG: token})
    try:
        proc.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return True


def orphans_after(token: str, grace: float = 5.0) -> list[int]:
    deadline = time.time() + grace
    while time.time() < deadline:
        left = processes_tagged(token)
        if not left:
            return []
        time.sleep(0.2)
    left = processes_tagged(token)
    for pid in left:  # clean up so the next trial starts clean; they are counted as failures
        with contextlib.suppress(OSError):
            os.kill(pid, 9)
    return left


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--events", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--kinds", default="", help="comma-separated subset of the kinds (default: all)")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    work = args.out or Path(tempfile.mkdtemp(prefix="fault_kill_"))
    work.mkdir(parents=True, exist_ok=True)
    dump = work / "dump.root"
    write_dump(dump, random_events(args.events, seed=args.seed), basket_entries=250)
    unit = ["--shard-events", str(max(args.events // 8, 1)), "-q"]

    # the sources that finalize and migrate start from
    v1 = work / "v1"
    run(["convert", str(dump), "-o", str(v1), "--schema-version", "1", "-j", "1", *unit])
    tasks_src = work / "tasks-src"
    for k in range(4):
        run(["convert", str(dump), "-o", str(tasks_src), "--task-index", str(k), "--task-count", "4", "-j", "1", *unit])

    kinds = {
        # name: (prepare(ds) before each run, args(ds) of the command killed, finish(ds) after its resume)
        "convert -j 2": (lambda ds: None, lambda ds: ["convert", str(dump), "-o", str(ds), "-j", "2", *unit],
                         lambda ds: None),
        "convert dask": (lambda ds: None, lambda ds: ["convert", str(dump), "-o", str(ds), "--scheduler", "local",
                                                      "-j", "2", *unit], lambda ds: None),
        "finalize": (lambda ds: shutil.copytree(tasks_src, ds), lambda ds: ["finalize", str(ds)], lambda ds: None),
        "migrate": (lambda ds: None, lambda ds: ["migrate", str(v1), "--to-version", "2", "--output", str(ds)],
                    lambda ds: None),
        "job-array task": (
            lambda ds: [run(["convert", str(dump), "-o", str(ds), "--task-index", str(k), "--task-count", "4",
                             "-j", "1", *unit]) for k in (0, 1, 3)],
            lambda ds: ["convert", str(dump), "-o", str(ds), "--task-index", "2", "--task-count", "4", "-j", "1", *unit],
            lambda ds: run(["finalize", str(ds)])),
    }
    summary, failed = {}, False
    wanted = [k.strip() for k in args.kinds.split(",") if k.strip()] or list(kinds)
    unknown = [k for k in wanted if k not in kinds]
    if unknown:
        ap.error(f"--kinds: unknown {unknown}; the kinds are {list(kinds)}")
    for name, (prepare, command, finish) in kinds.items():
        if name not in wanted:
            continue
        ref = work / f"ref-{name.replace(' ', '_')}"
        prepare(ref)
        t0 = time.perf_counter()
        run(command(ref))
        duration = time.perf_counter() - t0
        finish(ref)
        want = digest(ref)
        landed = identical = orphaned = 0
        problems = []
        for trial in range(args.trials):
            ds = work / f"trial-{name.replace(' ', '').replace('-', '')}-{trial}"
            prepare(ds)
            token = f"{os.getpid()}-{ds.name}"
            landed += kill_at(command(ds), rng.uniform(0, duration), token)
            left = orphans_after(token)
            orphaned += bool(left)
            run(command(ds))  # the resume: the same command again
            finish(ds)
            ok = digest(ds) == want and not leftovers(ds)
            check = subprocess.run([CLI, "validate", str(ds)], capture_output=True, text=True)
            valid = check.returncode == 0
            identical += ok and valid
            if not (ok and valid) or left:
                problems.append({"trial": trial, "identical": ok, "valid": valid, "orphans": left,
                                 "leftovers": leftovers(ds), "kept": str(ds),
                                 "validate": (check.stdout + check.stderr)[-2000:]})
                continue  # kept for inspection
            shutil.rmtree(ds)
        failed |= bool(problems)
        summary[name] = {"trials": args.trials, "killed_while_running": landed, "identical_after_resume": identical,
                         "runs_with_orphans": orphaned, "reference_seconds": round(duration, 2), "problems": problems}
        print(f"{name:15s} {args.trials} trials, {landed} killed while running (uniform in 0-{duration:.1f} s), "
              f"{identical} identical after resume, {orphaned} with orphan processes", flush=True)
    print(json.dumps(summary, indent=2))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
