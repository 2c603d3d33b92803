"""Typed training configuration, loaded from YAML.

The vocabulary is the seed's (``hit_fields``, ``fields``, ``inverse_fields``, ``dim``) plus a ``data:``
and a ``trainer:`` section. Every section is a dataclass; loading rejects unknown keys and wrong types
with a message naming the key (``trainer.max_epochs: expected int, got str``), because a typo in a
YAML file must not silently train the default. Checks that need the dataset (does the schema have the
field?) live in :func:`check_against_schema` and run once the dataset is opened.

Only stdlib + pyyaml here: the CLI imports this module without torch.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError, quote

#: Muon-level fields the task knows how to regress and evaluate.
KNOWN_TARGETS = ("truthMuon_pt", "truthMuon_eta", "truthMuon_phi", "truthMuon_q", "truthMuon_qpt")


@dataclass
class DataConfig:
    """How shards become batches."""

    batch_size: int = 128
    num_workers: int = 1
    #: Fractions of events (by a hash of eventNumber) in train / val; the rest is test.
    train_fraction: float = 0.8
    val_fraction: float = 0.1
    #: Truth muons per event the task regresses; further muons are dropped (their hits become background).
    max_muons: int = 4
    #: Events held before sorting by hit count and cutting batches (bounded shuffle, length bucketing).
    shuffle_buffer: int = 8192
    #: Salt for the event hash; change it to draw another split.
    split_seed: int = 0
    #: Length bucketing within random groups of this many batches (0 = sort the whole buffer).
    bucket_width: int = 4
    #: Verify every shard's sha256 against the manifest before reading (reads each byte once more).
    verify_checksums: bool = True
    #: Device-resident split (``pipeline/train/data/resident.py``): ``auto`` = load the split once onto the
    #: training device and cut batches there when it fits in ``resident_fraction`` of the device's free
    #: memory, else stream; ``on`` = always (error if it does not fit); ``off`` = always stream. YAML reads
    #: a bare on/off as true/false: those are accepted and stored as "on"/"off".
    resident: str | bool = "auto"
    resident_fraction: float = 0.5


@dataclass
class TrainerConfig:
    """The Lightning loop."""

    max_epochs: int = 20
    lr: float = 2e-3
    weight_decay: float = 1e-2
    #: Linear warm-up steps, then cosine decay to ``lr * 0.05`` over the estimated run length.
    warmup_steps: int = 200
    #: ``auto`` (a CUDA GPU if present, else CPU), ``cpu`` or ``gpu``; ``--device`` overrides it.
    accelerator: str = "auto"
    #: ``auto``: bf16-mixed on CUDA, 32-true elsewhere.
    precision: str = "auto"
    devices: int = 1
    #: EarlyStopping patience on val/loss, in epochs.
    patience: int = 10
    gradient_clip: float = 1.0
    seed: int = 42
    #: Cap on batches per epoch (0 = no cap); for smoke tests and benchmarks.
    limit_train_batches: int = 0
    limit_val_batches: int = 0
    #: Stop after this many optimiser steps (0 = max_epochs decides); the lr schedule spans the run.
    max_steps: int = 0
    #: torch intra-op threads on CPU; 0 = auto (1 on machines with <= 4 cores, where a second thread
    #: competing with the loader and the OS ran 7x slower, else half the cores, at most 8).
    threads: int = 0
    #: A progress line (step, loss, events/s, ETA) every this many steps when stderr is not a terminal.
    progress_every: int = 200
    #: Write ``checkpoints/last.ckpt`` every this many optimiser steps (besides every validation and every
    #: stop): what a kill -9 can lose. 200 steps of 128 events are ~30 s on one CPU core, less on a GPU.
    checkpoint_every: int = 200
    #: Run the model under ``torch.compile`` (dynamic shapes); falls back to eager with a warning where
    #: compilation is unavailable. Checkpoints are the same either way.
    compile: bool = False


@dataclass
class AttentionConfig:
    """The encoder's attention (``pipeline/train/attention.py``): ``full`` over all hits of an event, or
    ``window``: blocks of ``window`` hits in the order of the hit input ``sort_key``, shifted every other layer."""

    kind: str = "full"
    window: int = 256
    sort_key: str = "phi"


@dataclass
class TrainConfig:
    """One training run: inputs, targets, model size, data and loop settings."""

    #: Hit inputs by name; ``None`` = every model input of the dataset's schema (22 in v1, 23 in v2).
    hit_fields: list[str] | None = None
    #: Muon-frame inputs (``schemas/frame.yaml``), computed by the loader for the hits of each object
    #: ``assignment_field`` assigns them to; appended after ``hit_fields``. ``[]`` = global inputs only.
    frame_fields: list[str] = field(default_factory=lambda: _all_frame_fields())
    #: Hit → object assignment whose objects are pooled and framed (the truth link when training).
    assignment_field: str = "spacePoint_truthLink"
    fields: list[str] = field(default_factory=lambda: ["truthMuon_eta", "truthMuon_phi", "truthMuon_pt",
                                                        "truthMuon_q"])
    #: Fields whose network output is their inverse (the seed's 1/pT regression).
    inverse_fields: list[str] = field(default_factory=list)
    #: Regress q/pT as one signed output (``truthMuon_qpt`` in ``fields``); pT = 1/|q/pT|, q = its sign.
    signed_curvature: bool = False
    dim: int = 32
    encoder_layers: int = 2
    heads: int = 4
    dropout: float = 0.0
    regression_layers: int = 3
    #: Smooth-L1 β in the scaled target space (targets have unit spread). 1.0 makes the loss MSE-like
    #: for most muons, so the noisy low-pT muons dominate it and high-pT precision is lost; 0.01 is
    #: L1-like (median regression), measured 12 % → 6 % core σ(pT)/pT at 10–100 GeV.
    loss_beta: float = 0.01
    #: Learned per-hit pooling weights: ``sigmoid`` (the seed's masked probabilities) or ``softmax``.
    hit_weighting: str = "sigmoid"
    #: ``regression`` (the per-muon targets above) or ``hit_filter`` (per hit: muon or background,
    #: ``pipeline/train/hitfilter.py``; the regression keys are then unused).
    task: str = "regression"
    #: hit_filter: weight of the muon hits in the BCE loss (background hits outnumber them).
    pos_weight: float = 1.0
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    #: Per-muon uncertainty (``pipeline/train/uncertainty.py``): ``none``, or ``gaussian`` / ``laplace``:
    #: the head also predicts each target's width and trains on that likelihood.
    uncertainty: str = "none"
    #: Predict 1/pT (or q/pT) as the muon's ``frame_curvature`` input times a learned exp(correction):
    #: relative precision at every pT instead of an absolute floor in 1/pT (docs/physics.md).
    curvature_ratio: bool = False
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _all_frame_fields() -> list[str]:
    """Every field of ``schemas/frame.yaml``: what a config gets when it names no ``frame_fields``."""
    from ..muon_frame import frame_field_names

    return frame_field_names()


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _yaml_number_hint(value: Any) -> str:
    """For text that is a number to Python but not to YAML 1.1 (``1e-3``: an exponent needs a decimal
    point), the way to write it; else nothing."""
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return ""
        return "; YAML 1.1 read it as text: write an exponent with a decimal point and a sign (1.0e-3, not 1e-3)"
    return ""


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (ints are accepted for floats)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{where}: unexpected null")
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list of {_type_name(item)}, got {type(value).__name__} "
                              f"({quote(value)})")
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        return _from_dict(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {type(value).__name__} ({quote(value)})")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected int, got {type(value).__name__} ({quote(value)})")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {type(value).__name__} ({quote(value)})"
                              + _yaml_number_hint(value))
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {type(value).__name__} ({quote(value)})")
        return value
    raise TypeError(f"unsupported annotation {tp!r} at {where}")  # a bug here, not a user error


def _from_dict(cls: type, raw: Any, where: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"unknown key(s) {', '.join(prefix + str(k) for k in unknown)}; "
                          f"allowed in {where or 'the top level'}: {', '.join(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in raw.items()}
    return cls(**kwargs)


def _check_values(cfg: TrainConfig) -> None:
    """Checks that need no dataset; raise with the key and the allowed values."""
    d, t = cfg.data, cfg.trainer
    positive = {"dim": cfg.dim, "heads": cfg.heads, "regression_layers": cfg.regression_layers,
                "data.batch_size": d.batch_size, "data.max_muons": d.max_muons,
                "data.shuffle_buffer": d.shuffle_buffer, "trainer.max_epochs": t.max_epochs,
                "trainer.devices": t.devices}
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"{key}: must be >= 1, got {value}")
    if cfg.encoder_layers < 0 or d.num_workers < 0 or t.patience < 0 or t.warmup_steps < 0:
        raise ConfigError("encoder_layers, data.num_workers, trainer.patience, trainer.warmup_steps must be >= 0")
    if cfg.dim % cfg.heads:
        raise ConfigError(f"dim ({cfg.dim}) must be divisible by heads ({cfg.heads})")
    if not (cfg.loss_beta > 0 and math.isfinite(cfg.loss_beta)):
        raise ConfigError(f"loss_beta: must be a finite number > 0, got {cfg.loss_beta}")
    if t.threads > 1024:
        raise ConfigError(f"trainer.threads: {t.threads} is not a thread count for one process (0 = auto)")
    if not 0.0 <= cfg.dropout < 1.0:
        raise ConfigError(f"dropout: must be in [0, 1), got {cfg.dropout}")
    if cfg.hit_weighting not in ("sigmoid", "softmax"):
        raise ConfigError(f"hit_weighting: expected 'sigmoid' or 'softmax', got {quote(cfg.hit_weighting)}")
    if cfg.uncertainty not in ("none", "gaussian", "laplace"):
        raise ConfigError(f"uncertainty: expected none, gaussian or laplace, got {quote(cfg.uncertainty)}")
    if cfg.curvature_ratio and ("frame_curvature" not in cfg.frame_fields
                                or not ({"truthMuon_qpt"} | set(cfg.inverse_fields)) & set(cfg.fields)):
        raise ConfigError("curvature_ratio: true needs frame_curvature in frame_fields and an inverse "
                          "truthMuon_pt (inverse_fields) or truthMuon_qpt (signed_curvature) in fields")
    if not (0 < d.train_fraction < 1 and 0 <= d.val_fraction < 1 and d.train_fraction + d.val_fraction <= 1):
        raise ConfigError(f"data.train_fraction ({d.train_fraction}) and data.val_fraction ({d.val_fraction}) "
                          "must be fractions with a sum <= 1 (the rest is the test split)")
    from .device import normalise

    normalise(t.accelerator, "trainer.accelerator")  # auto, cpu or gpu (cuda)
    if t.lr <= 0:
        raise ConfigError(f"trainer.lr: must be > 0, got {t.lr}")
    if t.precision not in ("auto", "32", "32-true", "bf16-mixed", "16-mixed", "bf16-true"):
        raise ConfigError(f"trainer.precision: expected auto, 32-true, bf16-mixed or 16-mixed, got {quote(t.precision)}")
    if not cfg.fields:
        raise ConfigError("fields: give at least one target field")
    for name in cfg.fields:
        if name not in KNOWN_TARGETS:
            raise ConfigError(f"fields: {quote(name)} is not a regression target; known: {', '.join(KNOWN_TARGETS)}")
    if len(set(cfg.fields)) != len(cfg.fields):
        raise ConfigError(f"fields: duplicate entries in {cfg.fields}")
    for name in cfg.inverse_fields:
        if name not in cfg.fields:
            raise ConfigError(f"inverse_fields: {quote(name)} is not in fields {cfg.fields}")
        if name in ("truthMuon_eta", "truthMuon_phi", "truthMuon_q", "truthMuon_qpt"):
            raise ConfigError(f"inverse_fields: {quote(name)} changes sign or crosses zero; only strictly positive "
                              "targets (truthMuon_pt) can be regressed in inverse space")
    if cfg.signed_curvature:
        if "truthMuon_qpt" not in cfg.fields:
            raise ConfigError("signed_curvature: true needs truthMuon_qpt in fields")
        clash = {"truthMuon_pt", "truthMuon_q"} & set(cfg.fields)
        if clash:
            raise ConfigError(f"signed_curvature: q/pT already gives pT and q; remove {sorted(clash)} from fields")
    elif "truthMuon_qpt" in cfg.fields:
        raise ConfigError("fields: truthMuon_qpt is the signed-curvature target; set signed_curvature: true")
    from ..muon_frame import frame_field_names

    known_frame = frame_field_names()
    for name in cfg.frame_fields:
        if name not in known_frame:
            raise ConfigError(f"frame_fields: {quote(name)} is not a muon-frame input; known: {', '.join(known_frame)}")
    if len(set(cfg.frame_fields)) != len(cfg.frame_fields):
        raise ConfigError(f"frame_fields: duplicate entries in {cfg.frame_fields}")
    if d.resident not in ("auto", "on", "off"):
        raise ConfigError(f"data.resident: expected auto, on or off, got {quote(d.resident)}")
    if not 0 < d.resident_fraction <= 1:
        raise ConfigError(f"data.resident_fraction: must be in (0, 1], got {d.resident_fraction}")
    if t.max_steps < 0 or t.threads < 0 or t.progress_every < 0 or t.checkpoint_every < 0 or d.bucket_width < 0:
        raise ConfigError("trainer.max_steps, trainer.threads, trainer.progress_every, trainer.checkpoint_every, "
                          "data.bucket_width must be >= 0")
    from .task_config import check_task

    check_task(cfg)  # task, pos_weight, attention
    if cfg.hit_fields is not None:
        if not cfg.hit_fields:
            raise ConfigError("hit_fields: give at least one field, or omit the key for the schema's inputs")
        if len(set(cfg.hit_fields)) != len(cfg.hit_fields):
            raise ConfigError(f"hit_fields: duplicate entries in {cfg.hit_fields}")


#: What a config written before a key existed meant by its absence (checkpoints keep their config).
LEGACY_DEFAULTS = {"frame_fields": [], "loss_beta": 1.0}


def config_from_dict(raw: Any, legacy: bool = False) -> TrainConfig:
    """A checked :class:`TrainConfig`; ``legacy``: a saved run's config, where a missing key means
    what it meant before the key existed (``LEGACY_DEFAULTS``: no muon-frame inputs, β = 1)."""
    if legacy and isinstance(raw, dict) and "frame_fields" not in raw:
        raw = {**LEGACY_DEFAULTS, **raw}
    cfg = _from_dict(TrainConfig, raw, "")
    if isinstance(cfg.data.resident, bool):  # YAML 1.1: `resident: off` is false
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, resident="on" if cfg.data.resident else "off"))
    _check_values(cfg)
    return cfg


def shipped_dir() -> Path:
    """The folder of the configs shipped inside the package (``pipeline/configs``)."""
    from importlib.resources import files

    return Path(str(files("pipeline").joinpath("configs")))


def shipped_configs() -> list[str]:
    """Names of the shipped configs (``inverse_pt``, ...), usable as ``--config NAME``."""
    return sorted(p.stem for p in shipped_dir().glob("*.yaml"))


def config_path(spec: str | Path) -> Path:
    """A ``--config`` value → a file: an existing path as given, else a shipped config's name
    (``inverse_pt`` or ``inverse_pt.yaml``). A value with a folder part (``./inverse_pt.yaml``,
    ``my/cfg.yaml``) is a path and never falls back to a shipped config. Neither: ConfigError listing
    the shipped names."""
    path = Path(spec)
    if path.is_file():
        return path
    if path.is_dir():
        raise ConfigError(f"config {spec}: is a directory, not a YAML file")
    name = path.name.removesuffix(".yaml").removesuffix(".yml")
    if "/" not in str(spec) and os.sep not in str(spec):  # a bare name: a shipped config
        candidate = shipped_dir() / f"{name}.yaml"
        if candidate.is_file():
            return candidate
        raise ConfigError(f"config {spec}: no such file, nor a shipped config name; shipped: "
                          f"{', '.join(shipped_configs())}")
    raise ConfigError(f"config {spec}: no such file (a path is never replaced by a shipped config; for one, give "
                      f"its name: {', '.join(shipped_configs())})")


def load_config(path: str | Path, legacy: bool = False) -> TrainConfig:
    """Read a YAML training config (a path, or a shipped config's name such as ``inverse_pt``);
    every problem is a ``ConfigError`` naming the file and key.

    ``legacy``: the file is a saved run's ``config.yaml`` (see :func:`config_from_dict`)."""
    path = Path(path) if legacy else config_path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"cannot read config {path}: {err.strerror}") from err
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    try:
        return config_from_dict(raw, legacy=legacy)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err


def dump_config(cfg: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def check_against_schema(cfg: TrainConfig, schema: Any) -> list[str]:
    """Resolve ``hit_fields`` against the dataset's schema and return them.

    A field the dataset lacks (``eta`` on a v1 dataset) raises a ``ConfigError`` that says which
    version has it and how ``muon-pipeline migrate`` upgrades the data.
    """
    from ..schema import missing_field_message

    hit_fields = list(cfg.hit_fields) if cfg.hit_fields is not None else schema.inputs("hit")
    hit_names = set(schema.names("hit"))
    for name in hit_fields:
        if not schema.has(name):
            raise ConfigError(f"hit_fields: {missing_field_message(name, schema)}")
        if name not in hit_names:
            raise ConfigError(f"hit_fields: {quote(name)} is a {schema.field(name).level}-level field, not a hit field")
        if name == "spacePoint_truthLink":
            raise ConfigError("hit_fields: spacePoint_truthLink is the truth assignment; feeding it to the model "
                              "would leak the answer")
    from .task_config import check_task_inputs

    check_task_inputs(cfg, hit_fields)  # the attention's sort key is an input
    for name in cfg.fields:
        if not schema.has(name):
            raise ConfigError(f"fields: {missing_field_message(name, schema)}")
    if not schema.has(cfg.assignment_field) or schema.field(cfg.assignment_field).level != "hit":
        raise ConfigError(f"assignment_field: {quote(cfg.assignment_field)} is not a hit field of schema "
                          f"{schema.name} v{schema.version}")
    if not schema.field(cfg.assignment_field).dtype.startswith("int"):
        raise ConfigError(f"assignment_field: {quote(cfg.assignment_field)} is {schema.field(cfg.assignment_field).dtype}; "
                          "an assignment is an integer object index per hit (-1 = none)")
    if cfg.frame_fields:
        needed = ["spacePoint_globEdgeLowX", "spacePoint_globEdgeLowY", "spacePoint_globEdgeLowZ",
                  "spacePoint_globEdgeHighX", "spacePoint_globEdgeHighY", "spacePoint_globEdgeHighZ",
                  "spacePoint_driftR", "spacePoint_technology", "spacePoint_stationIndex", cfg.assignment_field]
        lacking = [n for n in needed if n not in hit_names]
        if lacking:
            raise ConfigError(f"frame_fields need the hit fields {lacking}, which schema {schema.name} "
                              f"v{schema.version} lacks (assignment_field: {quote(cfg.assignment_field)})")
    return hit_fields
