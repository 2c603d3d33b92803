"""``muon-pipeline predict``: the per-hit scores of a hit-filter run over a dataset, as a scores folder.

SCORES is in the one scores format (:mod:`pipeline.scores`, ``docs/reference/scores.md``), the one
``filter`` reads::

    _manifest.json               written last: parent dataset, run (checkpoint sha256, pos_weight), split, files
    scores/part-KEY.parquet      one per parent shard with events of the split: [row,] eventNumber, score
    _work/predict.json           while running: what this output is being made from (for a resume)

``--split all`` scores every event (no ``row`` column): scores ``filter`` takes. A hash split scores its
events only and adds the ``row`` column (the row in the parent shard).

Streaming: one parent row group at a time (one output row group per parent row group), the parent read
under the readers' lock (:func:`pipeline.locks.reading`). Atomic: each file appears under its name only
when complete, the manifest last, so a reader (:func:`pipeline.scores.open_scores`) sees all or nothing.
Resumable: a re-run skips the finished files and redoes the one a kill interrupted; a re-run of a
finished output says so and changes nothing. A parent dataset, a checkpoint or a split that differs
from what the output was started with is refused by name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DatasetError
from ..format import MANIFEST
from ..scores import (
    ALL,
    SCORES_DIR,
    SCORES_FORMAT,
    ParentRef,
    file_entry,
    parent_ref,
    scores_file_name,
    scores_manifest,
    scores_schema,
    scores_table,
)
from ..scores import PREDICT_PLAN as PLAN


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def leaf_paths(pf: Any, list_column: str, fields: tuple[str, ...], where: str | Path) -> list[str]:
    """Parquet column paths (``hits.list.element.X``, as the writer named them) of ``fields`` of a
    list<struct> column: reading them alone skips the other fields of every hit."""
    paths = [pf.schema.column(i).path for i in range(len(pf.schema))]
    found = [p for p in paths if p.startswith(list_column + ".") and p.rsplit(".", 1)[-1] in fields]
    if len(found) != len(fields):
        raise DatasetError(f"{where}: {list_column} lacks some of the fields {', '.join(fields)}")
    return found


def score_chunk(model: Any, chunk: Any, device: str, batch_size: int,
                on_batch: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Scores [N_hits] float32 of every hit of ``chunk`` (a :class:`~.data.chunks.Chunk`), in its order.

    Events are batched by hit count (little padding); each batch's scores go back to the chunk's
    positions of its hits, so the output is aligned hit by hit whatever the batching. ``on_batch(events,
    hits)`` after each batch (progress)."""
    import torch

    from .data.batches import bucket_batches, collate
    from .task_config import UNCAPPED_MUONS

    flat = np.zeros(len(chunk.hits), dtype=np.float32)
    autocast = device.startswith("cuda") and torch.cuda.is_bf16_supported()
    for idx in bucket_batches(chunk.n_hits, batch_size, None):
        batch = collate(chunk, idx, UNCAPPED_MUONS)
        tensors = {k: torch.from_numpy(batch[k]).to(device) for k in ("hits", "hit_mask", "link")}
        with torch.inference_mode(), torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=autocast):
            out = model(tensors)  # [B, L]
        scores = model.scores(out).cpu().numpy()  # [B, L] float32
        mask = batch["hit_mask"]
        pos = chunk.hit_offsets[idx][:, None] + np.arange(mask.shape[1])[None, :]  # [B, L]
        flat[pos[mask]] = scores[mask]
        if on_batch is not None:
            on_batch(len(idx), int(mask.sum()))
    return flat


def load_hit_filter(run_dir: str | Path) -> tuple[Any, Path]:
    """(the run's LightningModule, its checkpoint); a run of another task is refused with one line."""
    from .runfiles import find_checkpoint, load_module

    ckpt = find_checkpoint(Path(run_dir))
    module = load_module(ckpt)
    if module.cfg.task != "hit_filter":
        raise ConfigError(f"{run_dir}: a {module.cfg.task} run; predict writes per-hit scores of a hit_filter run "
                          "(train one with --config hit_filter)")
    return module, ckpt


def prepare_model(module: Any, device: str | None) -> tuple[Any, str]:
    """(the run's model on ``device`` in eval mode, the device's name). On a CPU, torch's threads are set
    as training sets them (``trainer.threads``; 0 = one thread on <= 4 cores, where two ran 7x slower)."""
    import torch

    from .device import normalise, torch_device
    from .fit import resolve_threads

    model = module.model.to(torch_device(normalise(device))).eval()
    dev = str(next(model.parameters()).device)
    if dev == "cpu":
        torch.set_num_threads(resolve_threads(module.cfg.trainer.threads))
    return model, dev


def open_split(module: Any, data_dir: str | Path, split: str, batch_size: int | None = None) -> tuple[Any, Any]:
    """(the dataset as the run reads it, a non-shuffling stream of ``split``) with the run's inputs."""
    from .config import check_against_schema
    from .data import Normalisation, open_training_set
    from .data.stream import make_stream

    cfg, hp = module.cfg, module.hparams
    info = open_training_set(data_dir, verify_checksums=cfg.data.verify_checksums)
    check_against_schema(cfg, info.schema)
    norm = Normalisation.from_dict(hp.normalisation)
    stream = make_stream(info, list(hp.hit_fields), norm, split, cfg, shuffle=False, num_workers=0,
                         batch_size=batch_size or cfg.data.batch_size)
    return info, stream


def scored_row_groups(model: Any, stream: Any, device: str, units: list[int] | None = None,
                      cache: dict[str, Any] | None = None,
                      on_batch: Callable[[int, int], None] | None = None) -> Iterator[tuple[Any, Any, np.ndarray]]:
    """(row group, its events of the split as a Chunk, their scores [N_hits]) for ``units`` (default all)."""
    cache = {} if cache is None else cache
    for g in range(len(stream.units)) if units is None else units:
        unit = stream.units[g]
        chunk = stream.read_segment((g, 0, unit.events), cache)
        yield unit, chunk, score_chunk(model, chunk, device, stream.batch_size, on_batch)


def _identity(run_dir: Path, ckpt: Path, data_dir: str | Path, split: str, cfg: Any, batch_size: int) -> dict[str, Any]:
    """What the output is made from: ``parent``, ``run`` and ``split`` as the scores manifest records them.
    The batch size is part of it: scores of one event differ in the last bit between batch sizes (padding
    changes the kernels' blocking), so a resume with another one would mix two results."""
    d = cfg.data
    run = {"tool": "muon-pipeline", "run": str(run_dir.resolve()), "checkpoint": ckpt.name,
           "checkpoint_sha256": file_sha256(ckpt), "pos_weight": cfg.pos_weight, "batch_size": batch_size}
    fractions = {"name": split, "train_fraction": d.train_fraction, "val_fraction": d.val_fraction,
                 "seed": d.split_seed}
    return {"parent": parent_ref(str(data_dir))[0].to_dict(), "run": run, "split": ALL if split == ALL else fractions}


def _differs(saved: dict[str, Any], now: dict[str, Any], where: str, output: str | Path) -> str | None:
    """The first difference between a saved identity and the present one, as a sentence (None if equal)."""
    checks = [(("parent", "manifest_sha256"), "the parent dataset changed: its manifest sha256"),
              (("parent", "dataset_id"), "the parent dataset's id"),
              (("run", "checkpoint_sha256"), "the run's checkpoint changed: its sha256"),
              (("split",), "the split"), (("run", "batch_size"), "the batch size")]
    for keys, what in checks:
        a, b = saved, now
        for k in keys:
            a, b = (a or {}).get(k), (b or {}).get(k)
        if a != b:
            return (f"{output}: {what} is {b} now but {a} in {where}; write the scores of this run and dataset to "
                    "a new --output")
    return None


def _totals(manifest: dict[str, Any]) -> dict[str, int]:
    return {"events": sum(f["rows"] for f in manifest["files"]), "hits": sum(f["hits"] for f in manifest["files"])}


def predict(run_dir: str | Path, data_dir: str | Path, output: str | Path, *, split: str = "all",
            device: str | None = None, batch_size: int | None = None, quiet: bool = True) -> dict[str, Any]:
    """Write the scores folder ``output`` (see the module docstring); return its manifest plus ``events``,
    ``hits``, ``seconds``, ``resumed_parts`` (files kept from an interrupted run) and ``already_complete``.

    Raises ConfigError (an output that holds other files, or was started from another parent, checkpoint
    or split; the parent being written), DatasetError (an empty split)."""
    import time

    from ..locks import reading
    from ..storage import OutputDir, refuse_output_within

    run_dir = Path(run_dir)
    module, ckpt = load_hit_filter(run_dir)
    out = OutputDir(str(output))
    out.check_writable()
    refuse_output_within(str(output), {"dataset": str(data_dir)})
    if Path(output).exists() and not Path(output).is_dir():
        raise ConfigError(f"--output {output}: exists and is not a folder")
    with reading(str(data_dir), "predict"):
        info, stream = open_split(module, data_dir, split, batch_size)
        if stream.events == 0:
            raise DatasetError(f"{data_dir}: the {split} split is empty; nothing to score")
        identity = _identity(run_dir, ckpt, data_dir, split, module.cfg, stream.batch_size)
        t0 = time.perf_counter()
        foreign = [n for n in out.listdir(".") if n not in (MANIFEST, SCORES_DIR, "_work") and not n.startswith(".")]
        if foreign and not out.exists(MANIFEST) and not out.exists(PLAN):
            raise ConfigError(f"--output {output}: a folder that holds other files ({', '.join(foreign[:3])}); "
                              "predict writes a new scores folder or resumes its own: give another --output")
        with out.lock(what="predict"):
            if out.exists(MANIFEST):
                done = out.read_json(MANIFEST)
                if not isinstance(done, dict) or done.get("format") != SCORES_FORMAT:
                    raise ConfigError(f"--output {output}: its {MANIFEST} is not a scores manifest; give another "
                                      "--output")
                problem = _differs(done, identity, MANIFEST, output)
                if problem:
                    raise ConfigError(problem)
                return {**done, **_totals(done), "already_complete": True, "resumed_parts": len(done["files"]),
                        "seconds": 0.0}
            if out.exists(PLAN):
                problem = _differs(out.read_json(PLAN), identity, PLAN, output)
                if problem:
                    raise ConfigError(problem)
            else:
                out.write_json(PLAN, identity)
            manifest, resumed = _score_files(out, module, device, info, stream, identity, quiet)
            out.write_json(MANIFEST, manifest)
            out.remove(PLAN)
            if out.local and not out.listdir("_work"):
                Path(out.path("_work")).rmdir()
    return {**manifest, **_totals(manifest), "already_complete": False, "resumed_parts": resumed,
            "seconds": time.perf_counter() - t0}


def _score_files(out: Any, module: Any, device: str | None, info: Any, stream: Any, identity: dict[str, Any],
                 quiet: bool) -> tuple[dict[str, Any], int]:
    """Write (or keep, from an interrupted run) one scores file per parent shard with events of the split;
    return (the scores manifest, files kept)."""
    from ..progress import Reporter

    if out.exists(SCORES_DIR):
        out.clean_temporaries(SCORES_DIR)
    model, dev = prepare_model(module, device)
    shards: dict[int, list[int]] = {}
    for g, unit in enumerate(stream.units):
        shards.setdefault(unit.shard_index, []).append(g)
    files, resumed = [], 0
    subset = identity["split"] != ALL
    with Reporter(stream.events, quiet=quiet, label="predict", noun="events") as progress:
        for si in sorted(shards):
            groups = shards[si]
            shard = info.manifest["shards"][si]["path"]
            name = scores_file_name(shard)
            if out.exists(name):
                resumed += 1
                progress.advance(sum(stream.units[g].events for g in groups))
            else:
                _write_file(out, name, shard, model, stream, groups, dev, progress, subset)
            files.append(_file_record(out, name, shard))
            progress.unit_done()
    return scores_manifest(ParentRef(**identity["parent"]), files, identity["run"], identity["split"]), resumed


def _write_file(out: Any, name: str, shard: str, model: Any, stream: Any, groups: list[int], device: str,
                progress: Any, subset: bool) -> None:
    """Score the row groups ``groups`` of parent shard ``shard`` into the scores file ``name``: every row
    in order (no ``row`` column), or with ``subset`` the split's rows and their row numbers."""
    import pyarrow.parquet as pq

    with out.atomic(name, native=True) as tmp, pq.ParquetWriter(tmp, scores_schema(subset), compression="zstd") as w:
        last = -1
        for _, chunk, flat in scored_row_groups(model, stream, device, groups, on_batch=progress.advance):
            rows = (chunk.row & 0xFFFFFFFF).astype(np.int64)
            rising = (np.diff(np.r_[last, rows]) > 0).all()
            if not rising or (not subset and not np.array_equal(rows, np.arange(last + 1, last + 1 + len(rows)))):
                raise DatasetError(f"{shard}: the stream gave rows out of the shard's order (this is a bug)")
            last = int(rows[-1]) if len(rows) else last
            w.write_table(scores_table(chunk.event, chunk.hit_offsets, flat, rows if subset else None))


def _file_record(out: Any, name: str, shard: str) -> dict[str, Any]:
    """The manifest entry of a finished scores file: its rows and hits read back from the file."""
    import pyarrow.parquet as pq

    table = pq.read_table(out.path(name), columns=["score"])
    hits = int(sum(len(c.values) for c in table.column(0).chunks))
    return file_entry(out, name, shard, table.num_rows, hits)
