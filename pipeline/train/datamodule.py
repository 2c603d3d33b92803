"""The data side of a training run as a ``LightningDataModule``: everything between a dataset folder
and the two loaders, in one place.

:meth:`RegressionDataModule.setup` opens the dataset (:func:`~.data.open_training_set`: path rules,
schemas, sha256 unless ``data.verify_checksums: false``), resolves ``hit_fields`` against its schema,
takes the input normalisation and the target scales (train split), builds the train and val streams,
picks for each the device-resident or the streaming loader (``data.resident``), and plans the train
epoch (steps per epoch, total steps: the lr schedule's length). ``train_dataloader()`` /
``val_dataloader()`` return the loaders built there, the same objects at every call (persistent
workers, one resident copy).

:func:`pipeline.train.fit.train` calls ``setup`` itself, before it builds the model and the Trainer
(both need the hit fields, the scales and the step count); the Trainer's own call then finds it done.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L

from ..errors import DatasetError
from .config import check_against_schema

if TYPE_CHECKING:
    from .config import TrainConfig
    from .data import Normalisation, TrainingSet
    from .data.stream import ShardStream


class RegressionDataModule(L.LightningDataModule):
    """Train and val loaders of one dataset as ``cfg`` describes them (see the module docstring).

    After :meth:`setup`: ``cfg`` (with ``hit_fields`` filled in), ``info``, ``hit_fields``, ``norm``,
    ``centres``/``scales`` (target scaling, per ``cfg.fields``), ``train_stream``/``val_stream``,
    ``data_path`` (``resident`` or ``streaming``), ``train_plan`` (the deal of the train split as the
    chosen path reads it), ``steps_per_epoch`` and ``total_steps``.
    """

    def __init__(self, cfg: TrainConfig, data_dir: str | Path) -> None:
        super().__init__()
        self.cfg, self.data_dir = cfg, data_dir
        self.info: TrainingSet | None = None
        self.hit_fields: list[str] = []
        self.norm: Normalisation | None = None
        self.centres: list[float] = []
        self.scales: list[float] = []
        self.train_stream: ShardStream | None = None
        self.val_stream: ShardStream | None = None
        self._loaders: dict[str, Any] = {}
        self.data_path = ""
        self.train_plan: dict[str, int] = {}
        self.steps_per_epoch = self.total_steps = 0

    def setup(self, stage: str | None = None) -> None:
        """Open, normalise, scale targets, build both loaders and plan the epoch; once (idempotent)."""
        if self.info is not None:
            return
        from .data import muon_values, normalisation_for, open_training_set
        from .data.stream import make_stream
        from .task import fit_target_scaling

        cfg, data_dir = self.cfg, self.data_dir
        info = open_training_set(data_dir, verify_checksums=cfg.data.verify_checksums)
        hit_fields = check_against_schema(cfg, info.schema)
        cfg = self.cfg = dataclasses.replace(cfg, hit_fields=hit_fields)
        norm = normalisation_for(info, hit_fields)
        targets = muon_values(info, "train", cfg.data)
        if len(targets[info.muon_fields[0]]) == 0:
            raise DatasetError(f"{data_dir}: no muons in the train split (train_fraction={cfg.data.train_fraction})")
        self.centres, self.scales = fit_target_scaling(targets, cfg.fields, cfg.inverse_fields)

        train_stream = make_stream(info, hit_fields, norm, "train", cfg, shuffle=True)
        val_stream = make_stream(info, hit_fields, norm, "val", cfg, shuffle=False)
        if val_stream.events == 0:
            total = sum(int(s.get("rows", 0)) for s in info.manifest["shards"])
            raise DatasetError(f"{data_dir}: the val split is empty ({total} events, "
                               f"val_fraction={cfg.data.val_fraction}); use more events or a larger data.val_fraction")
        train_loader, self.data_path = _loader(train_stream, cfg)
        val_loader, _ = _loader(val_stream, cfg)
        world = cfg.trainer.devices  # DDP ranks (one node); the process group does not exist yet
        # the deal as the chosen path reads it: num_workers readers per rank when streaming, one when resident
        self.train_plan = train_loader.dataset.plan(world)
        steps = self.train_plan["batches_per_rank"]
        if cfg.trainer.limit_train_batches:
            steps = min(steps, cfg.trainer.limit_train_batches)
        self.steps_per_epoch = steps
        self.total_steps = cfg.trainer.max_steps or steps * cfg.trainer.max_epochs

        self.hit_fields, self.norm = hit_fields, norm
        self.train_stream, self.val_stream = train_stream, val_stream
        train_loader.position = self._train_position  # where a (resumed) epoch starts, read at each iter()
        self._loaders = {"train": train_loader, "val": val_loader}
        self.info = info

    def _train_position(self) -> tuple[int, int]:
        """(epoch, batches of it already trained) from the trainer's loop state when the train loader's
        iterator is made: ``(e, 0)`` at the start of epoch ``e``; after a resume from a checkpoint written
        after batch ``k`` of epoch ``e``, ``(e, k)`` (Lightning restores its loop counters first)."""
        trainer = self.trainer
        if trainer is None:
            return 0, 0
        epoch, done = int(trainer.current_epoch), int(trainer.fit_loop.epoch_loop.batch_progress.current.ready)
        if done >= self.steps_per_epoch:
            # resumed from a checkpoint written at an epoch's end: Lightning finishes that epoch's bookkeeping
            # and trains the next one with this very iterator (it makes no new one for it)
            return epoch + 1, 0
        return epoch, done

    def train_dataloader(self) -> Any:
        return self._loaders["train"]

    def val_dataloader(self) -> Any:
        return self._loaders["val"]

    def run_record(self) -> dict[str, Any]:
        """What ``run.json`` records of the data: inputs, normalisation, target scaling, dataset, deal."""
        cfg, info = self.cfg, self.info
        assert info is not None and self.norm is not None and self.train_stream is not None
        assert self.val_stream is not None
        scaling = {f: {"centre": c, "scale": s, "space": "inverse" if f in cfg.inverse_fields else "natural"}
                   for f, c, s in zip(cfg.fields, self.centres, self.scales, strict=True)}
        return {"hit_fields": self.hit_fields, "frame_fields": cfg.frame_fields,
                "assignment_field": cfg.assignment_field, "muon_fields": info.muon_fields,
                "normalisation": self.norm.to_dict(), "target_scaling": scaling,
                "dataset": {"path": str(Path(self.data_dir).resolve()), "schema": info.manifest["schema"],
                            "shards": len(info.shards), "train_events": self.train_stream.events,
                            "val_events": self.val_stream.events,
                            "checksums_verified": cfg.data.verify_checksums},
                # the deal of the train split to ranks and workers: every event once per epoch, plus
                # `padding` repeated events so that every rank runs the same number of batches
                "train_epoch_plan": self.train_plan,
                "data_path": self.data_path}  # resident (split on the training device) or streaming


def _loader(stream: ShardStream, cfg: TrainConfig) -> tuple[Any, str]:
    """The split's DataLoader and its kind: ``resident`` (on the training device, see
    :mod:`pipeline.train.data.resident`) where ``data.resident`` allows it and the split fits, else
    ``streaming``."""
    import torch

    from .data.resident import ResidentStream, make_resident_loader, use_resident
    from .data.stream import make_loader
    from .device import on_cuda

    cuda = on_cuda(cfg.trainer.accelerator)
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    if use_resident(cfg.data.resident, stream, device, cfg.data.resident_fraction):
        # on CUDA the device is resolved at the first epoch (each DDP rank has its own)
        return make_resident_loader(ResidentStream(stream, None if cuda else device)), "resident"
    return make_loader(stream), "streaming"
