"""``muon-pipeline predict``: the per-hit scores of a hit-filter run over a dataset, as a scores dataset.

Layout of SCORES (the format, for writers of other tools too, is in ``docs/reference/scores.md``)::

    _scores.json                  the manifest (written last): parent dataset, producer, parts
    parts/<shard stem>.parquet    one per parent shard with events of the split: shard, row, eventNumber,
                                  scores (list<float32>, one per hit in the parent's hit order)
    _work/predict.json            while running: what this output is being made from (for a resume)

Streaming: one parent row group at a time (one output row group per parent row group). Atomic: each part
appears under its name only when complete, the manifest last, so a reader (:func:`open_scores`) sees
all or nothing. Resumable: a re-run skips the finished parts and redoes the one a kill interrupted; a
re-run of a finished output says so and changes nothing. A parent dataset or a checkpoint that differs
from what the output was started with is refused by name.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DatasetError
from ..format import LEGACY_MANIFEST, MANIFEST, manifest_name

SCORES_FORMAT = "muon-pipeline/hit-scores"
SCORES_VERSION = 1
SCORES_MANIFEST = "_scores.json"
PARTS = "parts"
PLAN = "_work/predict.json"
#: Columns of a part, in order.
COLUMNS = ("shard", "row", "eventNumber", "scores")


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def parent_manifest(data_dir: str | Path) -> Path:
    """The manifest file of a dataset folder (``_manifest.json``, or the legacy name)."""
    root = Path(data_dir)
    name = manifest_name(lambda n: (root / n).is_file())
    if name is None:
        raise DatasetError(f"{data_dir}: no {MANIFEST} (or {LEGACY_MANIFEST}); not a dataset folder")
    return root / name


def parent_identity(data_dir: str | Path) -> dict[str, Any]:
    """``{path, dataset_id, manifest_sha256}`` of a dataset folder (the bytes of its manifest file)."""
    path = parent_manifest(data_dir)
    manifest = json.loads(path.read_text())
    return {"path": str(Path(data_dir).resolve()), "dataset_id": manifest.get("dataset_id", ""),
            "manifest_sha256": file_sha256(path)}


def leaf_paths(pf: Any, list_column: str, fields: tuple[str, ...], where: str | Path) -> list[str]:
    """Parquet column paths (``hits.list.element.X``, as the writer named them) of ``fields`` of a
    list<struct> column: reading them alone skips the other fields of every hit."""
    paths = [pf.schema.column(i).path for i in range(len(pf.schema))]
    found = [p for p in paths if p.startswith(list_column + ".") and p.rsplit(".", 1)[-1] in fields]
    if len(found) != len(fields):
        raise DatasetError(f"{where}: {list_column} lacks some of the fields {', '.join(fields)}")
    return found


def scores_parquet_schema() -> Any:
    import pyarrow as pa

    return pa.schema([("shard", pa.string()), ("row", pa.int64()), ("eventNumber", pa.int64()),
                      ("scores", pa.list_(pa.float32()))])


def scores_table(shard: str, rows: np.ndarray, events: np.ndarray, offsets: np.ndarray, flat: np.ndarray) -> Any:
    """One part's rows: events ``rows`` [E] (row in the parent shard) with scores ``flat`` [N_hits] cut by
    ``offsets`` [E + 1] (event i's hits are ``flat[offsets[i]:offsets[i + 1]]``, in the parent's order)."""
    import pyarrow as pa

    scores = pa.ListArray.from_arrays(pa.array(np.asarray(offsets, np.int32)), pa.array(flat, pa.float32()))
    return pa.table([pa.array([shard] * len(rows), pa.string()), pa.array(rows, pa.int64()),
                     pa.array(events, pa.int64()), scores], schema=scores_parquet_schema())


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


def _identity(run_dir: Path, ckpt: Path, data_dir: str | Path, split: str, cfg: Any) -> dict[str, Any]:
    d = cfg.data
    return {"format": SCORES_FORMAT, "format_version": SCORES_VERSION, "parent": parent_identity(data_dir),
            "producer": {"tool": "muon-pipeline", "run": str(run_dir.resolve()), "checkpoint": ckpt.name,
                         "checkpoint_sha256": file_sha256(ckpt)},
            "split": split, "split_fractions": {"train": d.train_fraction, "val": d.val_fraction, "seed": d.split_seed},
            "score": "sigmoid of the hit filter's logit, in [0, 1], higher = more muon-like (a calibrated "
                     "probability only when the run's pos_weight is 1)", "pos_weight": cfg.pos_weight}


def _differs(saved: dict[str, Any], now: dict[str, Any], where: str, output: str | Path) -> str | None:
    """The first difference between a saved identity and the present one, as a sentence (None if equal)."""
    checks = [(("parent", "manifest_sha256"), "the parent dataset changed: its manifest sha256"),
              (("parent", "dataset_id"), "the parent dataset's id"),
              (("producer", "checkpoint_sha256"), "the run's checkpoint changed: its sha256"),
              (("split",), "the split"), (("split_fractions",), "the split fractions")]
    for keys, what in checks:
        a, b = saved, now
        for k in keys:
            a, b = (a or {}).get(k), (b or {}).get(k)
        if a != b:
            return (f"{output}: {what} is {b} now but {a} in {where}; write the scores of this run and dataset to "
                    "a new --output")
    return None


def predict(run_dir: str | Path, data_dir: str | Path, output: str | Path, *, split: str = "all",
            device: str | None = None, batch_size: int | None = None, quiet: bool = True) -> dict[str, Any]:
    """Write the scores dataset ``output`` (see the module docstring); return its manifest plus
    ``events``, ``hits``, ``seconds``, ``resumed_parts`` and ``already_complete``."""
    import time

    from ..progress import Reporter
    from ..storage import OutputDir

    run_dir = Path(run_dir)
    module, ckpt = load_hit_filter(run_dir)
    info, stream = open_split(module, data_dir, split, batch_size)
    if stream.events == 0:
        raise DatasetError(f"{data_dir}: the {split} split is empty; nothing to score")
    identity = _identity(run_dir, ckpt, data_dir, split, module.cfg)
    out = OutputDir(str(output))
    out.check_writable()
    t0 = time.perf_counter()
    if Path(output).exists() and not Path(output).is_dir():
        raise ConfigError(f"--output {output}: exists and is not a folder")
    foreign = [n for n in out.listdir(".") if n not in (SCORES_MANIFEST, PARTS, "_work") and not n.startswith(".")]
    if foreign and not out.exists(SCORES_MANIFEST) and not out.exists(PLAN):
        raise ConfigError(f"--output {output}: a folder that holds other files ({', '.join(foreign[:3])}); predict "
                          "writes a new scores dataset or resumes its own: give another --output")
    with out.lock(what="predict"):
        if out.exists(SCORES_MANIFEST):
            done = out.read_json(SCORES_MANIFEST)
            problem = _differs(done, identity, SCORES_MANIFEST, output)
            if problem:
                raise ConfigError(problem)
            return {**done, "already_complete": True, "resumed_parts": len(done["parts"]), "seconds": 0.0}
        if out.exists(PLAN):
            problem = _differs(out.read_json(PLAN), identity, PLAN, output)
            if problem:
                raise ConfigError(problem)
        else:
            out.write_json(PLAN, identity)
        if out.exists(PARTS):
            out.clean_temporaries(PARTS)
        model, dev = prepare_model(module, device)
        shards: dict[int, list[int]] = {}
        for g, unit in enumerate(stream.units):
            shards.setdefault(unit.shard_index, []).append(g)
        parts, resumed, hits = [], 0, 0
        with Reporter(stream.events, quiet=quiet, label="predict", noun="events") as progress:
            for si, groups in shards.items():
                shard = info.manifest["shards"][si]["path"]
                rel = f"{PARTS}/{Path(shard).stem}.parquet"
                if out.exists(rel):
                    resumed += 1
                    progress.advance(sum(stream.units[g].events for g in groups))
                else:
                    _write_part(out, rel, shard, model, stream, groups, dev, progress)
                parts.append(_part_record(out, rel, shard))
                hits += parts[-1]["hits"]
                progress.unit_done()
        manifest = {**identity, "events": stream.events, "hits": hits, "parts": parts}
        out.write_json(SCORES_MANIFEST, manifest)
        out.remove(PLAN)
        if out.local and not out.listdir("_work"):
            Path(out.path("_work")).rmdir()
    return {**manifest, "already_complete": False, "resumed_parts": resumed, "seconds": time.perf_counter() - t0}


def _write_part(out: Any, rel: str, shard: str, model: Any, stream: Any, groups: list[int], device: str,
                progress: Any) -> None:
    import pyarrow.parquet as pq

    with out.atomic(rel, native=True) as tmp, pq.ParquetWriter(tmp, scores_parquet_schema(), compression="zstd") as w:
        for _, chunk, flat in scored_row_groups(model, stream, device, groups, on_batch=progress.advance):
            rows = chunk.row & 0xFFFFFFFF
            w.write_table(scores_table(shard, rows, chunk.event, chunk.hit_offsets, flat))


def _part_record(out: Any, rel: str, shard: str) -> dict[str, Any]:
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(out.path(rel)).metadata
    table = pq.read_table(out.path(rel), columns=["scores"])
    hits = int(sum(len(c.values) for c in table.column(0).chunks))
    return {"path": rel, "shard": shard, "rows": meta.num_rows, "hits": hits, "sha256": out.sha256(rel)}


def open_scores(scores_dir: str | Path, parent: str | Path | None = None, check_hits: bool = True) -> dict[str, Any]:
    """The manifest of a finished scores dataset, checked: its format, its parts' sha256, and with
    ``parent`` that the parent dataset is the one the scores were made from (its manifest sha256) and,
    with ``check_hits``, that every event has one score per parent hit (:func:`check_part`)."""
    root = Path(scores_dir)
    path = root / SCORES_MANIFEST
    if not path.is_file():
        hint = " (a predict run that has not finished: run it again to complete it)" if (root / PLAN).is_file() else ""
        raise DatasetError(f"{scores_dir}: no {SCORES_MANIFEST}; not a finished scores dataset{hint}")
    try:
        manifest = json.loads(path.read_text())
    except ValueError as err:
        raise DatasetError(f"{path}: not valid JSON ({err})") from err
    if manifest.get("format") != SCORES_FORMAT or manifest.get("format_version") != SCORES_VERSION:
        raise DatasetError(f"{path}: format {manifest.get('format')!r} v{manifest.get('format_version')}; expected "
                           f"{SCORES_FORMAT!r} v{SCORES_VERSION}")
    for part in manifest.get("parts", []):
        if part.get("sha256") and file_sha256(root / part["path"]) != part["sha256"]:
            raise DatasetError(f"{root / part['path']}: sha256 differs from {SCORES_MANIFEST} (the file changed)")
    if parent is not None:
        now = parent_identity(parent)["manifest_sha256"]
        was = manifest.get("parent", {}).get("manifest_sha256")
        if now != was:
            raise DatasetError(f"{scores_dir}: made from a dataset whose manifest sha256 is {was}; {parent}'s is "
                               f"{now}: the parent dataset changed (or is another one); predict again")
        if check_hits:
            from ..schema import load_schema

            version = json.loads(parent_manifest(parent).read_text())["schema"]["version"]
            for part in manifest.get("parts", []):
                check_part(root / part["path"], Path(parent), load_schema(version).hit_column)
    return manifest


def check_part(part: Path, parent: Path, hit_column: str = "hits") -> None:
    """Every row of a scores part names a row of its parent shard and has one score per hit of that event
    (read from one hit field of the parent, not the whole hit list); DatasetError naming the first that does not."""
    import pyarrow.parquet as pq

    table = pq.read_table(part, columns=["shard", "row", "eventNumber", "scores"])
    n_scores = np.diff(np.asarray(table.column("scores").combine_chunks().offsets))
    rows = table.column("row").to_numpy()
    for shard in table.column("shard").unique().to_pylist():
        path = parent / shard
        if Path(shard).is_absolute() or ".." in Path(shard).parts or not path.is_file():
            raise DatasetError(f"{part}: shard {shard!r} is not a shard of {parent}")
        pf = pq.ParquetFile(path)
        leaf = leaf_paths(pf, hit_column, ("spacePoint_technology",), path)
        counts = np.diff(np.asarray(pf.read(columns=leaf).column(0).combine_chunks().offsets))
        events = pf.read(columns=["eventNumber"]).column(0).to_numpy()
        mine = (table.column("shard").to_numpy(zero_copy_only=False) == shard)
        bad_row = rows[mine][(rows[mine] < 0) | (rows[mine] >= len(counts))]
        if len(bad_row):
            raise DatasetError(f"{part}: row {int(bad_row[0])} is not a row of {shard} ({len(counts)} events)")
        r, n = rows[mine], n_scores[mine]
        ev = table.column("eventNumber").to_numpy()[mine]
        wrong = np.flatnonzero((counts[r] != n) | (events[r] != ev))
        if len(wrong):
            i = wrong[0]
            raise DatasetError(f"{part}: row {int(r[i])} of {shard} (eventNumber {int(ev[i])}) has {int(n[i])} scores; "
                               f"the parent event (eventNumber {int(events[r[i]])}) has {int(counts[r[i]])} hits")

