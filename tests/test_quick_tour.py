"""The README's Quick tour runs as written (at small sizes), and its dataset one-liners work (issue 12).

The commands are taken from the README itself (the ```bash block after the ``quick-tour`` marker), so
the README cannot drift from what is tested. Only sizes change: fewer events, a few training steps.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
BIN = Path(sys.executable).parent
#: README value -> test value; each must occur in the tour, so a changed README fails here loudly.
SMALL = {"--events 2000": "--events 300", "--max-steps 200": "--max-steps 3"}


def block_after(marker: str, lang: str) -> list[str]:
    start = README.index(marker)
    m = re.compile(rf"```{lang}\n(.*?)```", re.S).search(README, start)
    assert m, f"no ```{lang} block after {marker!r}"
    return [ln for ln in m.group(1).splitlines() if ln.strip()]


def tour_commands() -> list[str]:
    lines = block_after("<!-- quick-tour", "bash")
    setup, rest = lines[0], lines[1:]
    assert setup.split("#")[0].strip() == "make setup && . .venv/bin/activate", setup
    text = "\n".join(rest)
    for big, small in SMALL.items():
        assert big in text, f"the Quick tour no longer says {big!r}; update SMALL in this test"
        text = text.replace(big, small)
    return text.splitlines()


def test_makefile_has_the_setup_target():
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    res = subprocess.run(["make", "-n", "setup"], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert 'pip install -q -e ".[dask,remote,train,readers]"' in res.stdout and "torch==" in res.stdout
    # the tour's last line reads the shards with polars: `make setup` must install it (a newcomer's
    # `make setup` venv had no polars, pandas or duckdb; the test venv has them through [test])
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {"pandas", "polars", "duckdb"} <= {d.split(">")[0].split("=")[0] for d in extras["readers"]}


@pytest.mark.slow
@pytest.mark.train
def test_quick_tour_runs_as_written(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("lightning")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "MPLBACKEND": "Agg"}
    outputs = []
    for cmd in tour_commands():
        res = subprocess.run(["bash", "-eo", "pipefail", "-c", cmd], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=600)
        assert res.returncode == 0, f"{cmd}\n{res.stdout}\n{res.stderr}"
        assert "Traceback" not in res.stderr, res.stderr
        outputs.append(res.stdout + res.stderr)
    for path in ("data/_manifest.json", "old_v1/_manifest.json", "new_v2/_manifest.json", "runs/inv/checkpoints/last.ckpt",
                 "runs/direct/eval/metrics.json", "runs/inv/eval/pt_resolution_vs_pt.png", "cmp/compare.md",
                 "cmp/pt_resolution_overlay.png"):
        assert (tmp_path / path).is_file(), path
    joined = "\n".join(outputs)
    assert "evaluate: wrote runs/inv/eval/" in joined and "compare: wrote cmp/compare.md" in joined
    assert "train: wrote runs/inv/" in joined
    for noise in ("GPU available", "Total FLOPs", "v_num", "Tip:", "srun", "LOCAL_RANK"):  # Lightning chatter
        assert noise not in joined, noise
    assert re.search(r"^\(\d+, 5\)$", outputs[-1], re.M), outputs[-1]  # polars reads the shards glob: 5 columns


def test_dataset_one_liners(converted_random, tmp_path, monkeypatch):
    """Each reader's one-liner from the README, run on a converted dataset; all agree on the counts."""
    import pyarrow.parquet as pq

    lines = block_after("<!-- dataset-one-liners", "python")
    (tmp_path / "data").symlink_to(converted_random)
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    for ln in lines:
        exec(ln, ns)  # the README's own code, on a dataset this test made
    events = sum(pq.ParquetFile(f).metadata.num_rows for f in (Path(converted_random) / "shards").glob("*.parquet"))
    hits = sum(pq.read_table(f, columns=["hits"]).column(0).combine_chunks().value_lengths().to_numpy().sum()
               for f in (Path(converted_random) / "shards").glob("*.parquet"))
    assert len(ns["pdf"]) == ns["plf"].height == ns["table"].num_rows == len(ns["events"]) == events
    assert ns["counts"] == [(events, hits)]


@pytest.mark.slow
def test_the_tour_up_to_migrate_runs_again_in_the_same_folder(tmp_path):
    """A second run of the tour in the same folder: simulate overwrote raw.root (a new ROOT file), so the
    second convert refused data/ ("input file(s) replaced"). Now the same simulate keeps the file it wrote,
    and every dataset line is a no-op that succeeds; the datasets keep every byte."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    lines = [c for c in tour_commands() if c.split()[:2] != ["muon-pipeline", "train"]]
    lines = lines[: next(i for i, c in enumerate(lines) if c.startswith("muon-pipeline evaluate"))]
    assert [c.split()[1] for c in lines] == ["simulate", "convert", "validate", "inspect", "convert", "migrate"]
    snapshots = []
    for _ in range(2):
        for cmd in lines:
            res = subprocess.run(["bash", "-eo", "pipefail", "-c", cmd], cwd=tmp_path, env=env, capture_output=True,
                                 text=True, timeout=600)
            assert res.returncode == 0, f"{cmd}\n{res.stdout}\n{res.stderr}"
        snapshots.append({p.relative_to(tmp_path).as_posix(): p.read_bytes() for p in sorted(tmp_path.rglob("*"))
                          if p.is_file()})
    assert snapshots[0] == snapshots[1]
