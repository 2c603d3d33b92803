"""``filter``: a dataset derived from a parent dataset and per-hit scores, through the write contract of
:mod:`pipeline.produce` (plan, resume after kill -9, every executor, job arrays + ``finalize``, locks).

One work unit per parent shard. A unit keeps the parent unit's input and entry range (its events keep
their ``source_file`` and ``source_entry``), so a derived manifest lists the same raw inputs and units as
its parent and every reader and check works on it unchanged. Its ``uuid`` is the parent shard's sha256,
checked when the unit runs; its key hashes the input identity, the entry range, the filter configuration
(which pins the parent's manifest sha256 and the scores id) and the tool version.

A unit reads its parent shard (sha256 checked) and its scores file (sha256 checked against the scores
manifest, rows aligned), filters each parent row group (:func:`pipeline.derive_flow.filter_chunk`) and writes
what is left as one row group, with the statistics per row group, as ``convert`` does.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

import numpy as np

from ._version import __version__
from .derive_config import FilterConfig, is_derived
from .derive_flow import Caps, FilterFlow, filter_chunk, working_point_threshold
from .errors import ConfigError, DatasetError, InputError, one_line
from .executors import UnitJob
from .format import InputInfo, Unit, dataset_id, identity_metadata, unit_key
from .inputs import absolute_path
from .locks import reading
from .plan import Plan
from .produce import RunResult, produce
from .schema import load_schema
from .scores import Scores, open_scores, parent_ref
from .settings import RunSettings
from .shards import chunk_from_table, list_column
from .stats import merge_tables, table_to_json
from .storage import OutputDir, refuse_output_within
from .transform import chunk_stats, to_arrow

#: The input keys of a parent manifest's input record that a derived plan keeps (the rest is the parent's bookkeeping).
_INPUT_KEYS = ("path", "size", "entries", "uuid", "container", "branches")


@dataclass(frozen=True)
class FilterJob:
    """What every unit of a filter run needs (pickled to pool and Dask workers): the configuration, where
    the parent and the scores are, each unit's parent shard, and the scores manifest."""

    cfg: FilterConfig
    parent_path: str
    scores_path: str
    scores_manifest: dict = field(repr=False)
    scores_sha256: str
    #: (input, entry_start, entry_stop) -> parent shard path
    parent_shards: dict[tuple[str, int, int], str] = field(repr=False)

    def hash(self) -> str:
        return self.cfg.hash()


@dataclass(frozen=True)
class FilterProducer:
    """A filter of ``job.parent_path`` by ``job.scores_path`` (see :class:`~pipeline.produce.Producer`)."""

    job_config: FilterJob
    parent_manifest: dict = field(repr=False)
    command: str = "filter"

    def config_dict(self) -> dict:
        return self.job_config.cfg.to_dict()

    def config_hash(self) -> str:
        return self.job_config.cfg.hash()

    def schema_doc(self) -> dict:
        return dict(self.parent_manifest["schema"])

    def plan_units(self, paths: list[str], settings: RunSettings) -> tuple[list[dict], list[dict], list[Unit]]:
        return plan_filter_units(self.parent_manifest, self.job_config.cfg)

    def job(self, out_url: str, settings: RunSettings) -> UnitJob:
        return UnitJob(run_filter_unit, self.job_config, out_url, settings)

    def finalize(self, out: OutputDir) -> tuple[dict, bool]:
        from .manifest import finalize_status

        return finalize_status(out)


def plan_filter_units(parent: dict, cfg: FilterConfig) -> tuple[list[dict], list[dict], list[Unit]]:
    """(the parent's input records, no skipped inputs, one unit per parent shard in the parent's order)."""
    inputs = [{k: i[k] for k in _INPUT_KEYS if k in i} for i in parent["inputs"]]
    infos = {i["path"]: InputInfo(i["path"], i["size"], i["entries"], i["uuid"]) for i in inputs}
    chash = cfg.hash()
    units = []
    for entry in parent["shards"]:
        u = entry["unit"]
        key = unit_key(infos[u["input"]], u["entry_start"], u["entry_stop"], chash)
        units.append(Unit(len(units), u["input"], u["entry_start"], u["entry_stop"], key, entry["sha256"]))
    return inputs, [], units


def muon_hit_scores(parent_dir: str, parent: dict, scores: Scores) -> np.ndarray:
    """The scores of every hit on a muon (truthLink ≥ 0) of dataset ``parent_dir``, float32; reads the
    eventNumber and truthLink columns only, and every scores file (sha256 checked, rows aligned)."""
    import pyarrow.parquet as pq

    schema = load_schema(parent["schema"]["version"])
    src = OutputDir(parent_dir)
    out = []
    leaf = f"{schema.hit_column}.list.element.spacePoint_truthLink"
    for entry in parent["shards"]:
        with src.fs.open(src.path(entry["path"]), "rb") as fh:
            table = pq.ParquetFile(fh).read(columns=["eventNumber", leaf], use_threads=False)
        offsets, fields = list_column(table.column(schema.hit_column))
        _, values = scores.for_shard(entry["path"], table.column("eventNumber").to_numpy(), offsets)
        out.append(values[fields["spacePoint_truthLink"] >= 0])
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def _planned_threshold(output: str, cfg_base: dict, working_point: float) -> float | None:
    """The threshold an existing plan of ``output`` computed for the same parent, scores and working point
    (a job-array task or a resume does not read the whole dataset again), else None."""
    out = OutputDir(output)
    try:
        plan = Plan.load(out) if out.fs.exists(out.root) else None
    except (OSError, ValueError):
        return None
    if plan is None or not is_derived(plan.config):
        return None
    f = plan.config["filter"]
    same = (f["parent"]["dataset_id"], f["parent"]["manifest_sha256"], f["scores"]["scores_id"],
            f.get("working_point")) == (cfg_base["parent_dataset_id"], cfg_base["parent_manifest_sha256"],
                                        cfg_base["scores_id"], working_point)
    return float(f["threshold"]) if same else None


def _refuse_changed(output: str, cfg: FilterConfig) -> None:
    """An output planned from another state of the parent or of the scores: refused by name."""
    out = OutputDir(output)
    plan = Plan.load(out) if out.fs.exists(out.root) else None
    if plan is None or not is_derived(plan.config):
        return
    f = plan.config["filter"]
    hint = "use --reconfigure to redo the units, or a new --output"
    if f["parent"]["dataset_id"] != cfg.parent_dataset_id:
        raise ConfigError(f"{output} was filtered from dataset {f['parent']['dataset_id']} ({f['parent']['path']}), "
                          f"not from {cfg.parent_path} (dataset {cfg.parent_dataset_id}): {hint}")
    if f["parent"]["manifest_sha256"] != cfg.parent_manifest_sha256:
        raise ConfigError(f"the parent dataset {cfg.parent_path} has changed since {output} was planned (manifest "
                          f"sha256 {f['parent']['manifest_sha256'][:16]}… -> {cfg.parent_manifest_sha256[:16]}…): {hint}")
    if f["scores"]["scores_id"] != cfg.scores_id:
        raise ConfigError(f"the scores {cfg.scores_path} differ from those {output} was planned with (scores id "
                          f"{f['scores']['scores_id'][:16]}… -> {cfg.scores_id[:16]}…): {hint}")


def filter_dataset(parent: str, scores: str, output: str, *, working_point: float | None = None,
                   threshold: float | None = None, max_muons_per_event: int | None = None,
                   max_hits_per_event: int | None = None, settings: RunSettings | None = None,
                   task: tuple[int, int] | None = None, reconfigure: bool = False, **options) -> RunResult:
    """Derive the dataset ``output`` from dataset ``parent`` and the per-hit ``scores`` of its hits.

    Exactly one of ``working_point`` (a muon-hit efficiency in (0, 1]: the threshold is computed exactly
    over the whole parent, :func:`~pipeline.derive_flow.working_point_threshold`) and ``threshold`` (keep
    hits with score ≥ it). Caps drop events with more muons / hits than given. ``settings``/``options``,
    ``task``, ``reconfigure``: as :func:`pipeline.conversion.convert`.

    Raises ConfigError (usage; an output planned from another parent or scores), DatasetError (a parent
    or scores folder that is unusable, scores for another dataset or an older state of it).
    """
    from .dataset import open_dataset

    if (working_point is None) == (threshold is None):
        raise ConfigError("give exactly one of --working-point and --threshold")
    if settings is None:
        settings = RunSettings(**options)
    elif options:
        raise TypeError(f"give either settings or its fields as keywords, not both ({sorted(options)})")
    caps = Caps(max_muons_per_event, max_hits_per_event)
    refuse_output_within(output, {"dataset": parent, "scores": scores})
    ref, manifest = parent_ref(parent)
    with reading(parent, what="filter"), reading(scores, what="filter"):
        open_dataset(parent)  # the shared opener: manifest shape, shard paths, schemas, identities (footers only)
        sc = open_scores(scores, ref)
        sc.require_all(parent)
        missing = [s["path"] for s in manifest["shards"] if s["path"] not in
                   {f["parent_shard"] for f in sc.manifest["files"]}]
        if missing:
            raise DatasetError(f"--scores {scores} hold no scores for {len(missing)} shard(s) of {parent}, e.g. "
                               f"{missing[0]}")
        from .config import ConvertConfig

        ids = {"parent_dataset_id": ref.dataset_id, "parent_manifest_sha256": ref.manifest_sha256,
               "scores_id": sc.scores_id}
        if threshold is None:
            threshold = _planned_threshold(output, ids, working_point)
            if threshold is None:
                threshold = working_point_threshold(muon_hit_scores(parent, manifest, sc), working_point)
        # the lineage and the workers get absolute paths: a validate, inspect or worker started in another
        # folder finds the parent and the scores (the paths are not part of the configuration's hash)
        parent_at, scores_at = absolute_path(parent), absolute_path(scores)
        cfg = FilterConfig(base=ConvertConfig.from_dict(manifest["config"]), threshold=float(threshold),
                           working_point=working_point, caps=caps, parent_path=parent_at, scores_path=scores_at,
                           checkpoint_sha256=sc.checkpoint_sha256, **ids)
        if not reconfigure:
            _refuse_changed(output, cfg)
        job = FilterJob(cfg, parent_at, scores_at, sc.manifest, sc.manifest_sha256,
                        {(s["unit"]["input"], s["unit"]["entry_start"], s["unit"]["entry_stop"]): s["path"]
                         for s in manifest["shards"]})
        paths = [i["path"] for i in manifest["inputs"]]
        return produce(FilterProducer(job, manifest), paths, output, settings, task=task, reconfigure=reconfigure)


def _read_parent_shard(job: FilterJob, unit: Unit, rel: str) -> bytes:
    src = OutputDir(job.parent_path)
    where = f"{job.parent_path.rstrip('/')}/{rel}"
    try:
        data = src.read_bytes(rel)
    except OSError as err:
        raise InputError(f"cannot read the parent shard ({one_line(err)})", file=where) from err
    digest = hashlib.sha256(data).hexdigest()
    if digest != unit.uuid:
        raise InputError(f"the parent shard changed since the plan was made: sha256 {digest[:16]}…, the parent's "
                         f"manifest says {unit.uuid[:16]}… (the shard was altered after its dataset was written); "
                         f"run `muon-pipeline validate {job.parent_path}`, then restore the shard or convert the "
                         "parent again", file=where)
    return data


def run_filter_unit(unit: Unit, job: FilterJob, out_url: str, settings: RunSettings, progress=None) -> dict:
    """Filter one parent shard into one shard; then write the unit's record. Returns the record.

    Raises InputError (the parent shard changed or unreadable) or DatasetError (scores that do not fit it,
    naming the shard and row). Nothing partial stays visible."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    t0 = time.perf_counter()
    cfg = job.cfg
    rel = job.parent_shards[(unit.input, unit.entry_start, unit.entry_stop)]
    data = _read_parent_shard(job, unit, rel)
    scores = Scores(job.scores_path, job.scores_manifest, job.scores_sha256, OutputDir(job.scores_path))
    events, offsets, values = scores.read(rel)
    schema = load_schema(cfg.base.schema_version)
    arrow_schema = schema.arrow_schema()
    arrow_schema = arrow_schema.with_metadata({**arrow_schema.metadata, **identity_metadata(
        dataset_id(cfg.hash(), __version__), unit.to_dict())})
    pf = pq.ParquetFile(pa.BufferReader(data))
    out = OutputDir(out_url)
    flow, stats = FilterFlow(), {}
    row = 0
    with out.atomic(unit.shard, native=True) as fh, pq.ParquetWriter(
            fh, arrow_schema, use_dictionary=["source_file"], write_statistics=False,
            **cfg.base.compression.writer_kwargs()) as writer:
        for g in range(pf.num_row_groups):
            table = pf.read_row_group(g)
            files = table.column("source_file")
            chunk = chunk_from_table(table, schema, files[0].as_py() if len(files) else "")
            lo, hi = row, row + chunk.n_events
            row = hi
            problem = _misaligned(chunk, events[lo:hi], offsets[lo:hi + 1] - offsets[lo])
            if problem:
                raise DatasetError(f"scores {job.scores_path} for parent shard {rel}: row {lo + problem[0]} "
                                   f"(eventNumber {problem[1]}): {problem[2]}")
            kept, chunk_flow = filter_chunk(chunk, values[offsets[lo]:offsets[hi]], cfg.threshold,
                                            cfg.base.transform.selection, cfg.caps)
            flow = flow.add(chunk_flow)
            if kept.n_events:
                writer.write_table(to_arrow(kept, schema), row_group_size=kept.n_events)
                stats = merge_tables(stats, chunk_stats(kept, schema))
        if row != len(events):
            raise DatasetError(f"scores {job.scores_path} for parent shard {rel}: {len(events)} rows, the parent "
                               f"shard has {row}")
        if flow.events_out == 0:
            writer.write_table(arrow_schema.empty_table())
    if progress is not None:
        progress(unit.entries, flow.hits_in)
    problems = flow.problems()
    if problems:
        raise DatasetError(f"unit {unit.index} ({rel}): counts do not reconcile: {problems[0]} (this is a bug)")
    shard = {"path": unit.shard, "rows": flow.events_out, "hits": flow.hits_out, "muons": flow.muons_out,
             "bytes": out.size(unit.shard), "sha256": out.sha256(unit.shard)}
    record = {"unit": unit.to_dict(), "status": "done", "entries": unit.entries, "shard": shard,
              "parent_shard": {"path": rel, "sha256": unit.uuid}, "cutflow": flow.to_dict(),
              "statistics": table_to_json(stats), "tool_version": __version__,
              "timing": {"seconds": time.perf_counter() - t0}}
    out.write_json(unit.record, record)
    return record


def _misaligned(chunk, events: np.ndarray, offsets: np.ndarray) -> tuple[int, int, str] | None:
    """(row in the chunk, eventNumber, why) of the first row whose scores do not fit, or None."""
    if len(events) != chunk.n_events:
        return (min(len(events), chunk.n_events), -1, f"the scores end after {len(events)} rows of this row group")
    bad = np.flatnonzero(events != chunk.event["eventNumber"])
    if len(bad):
        i = int(bad[0])
        return i, int(chunk.event["eventNumber"][i]), f"the scores' eventNumber is {int(events[i])}"
    bad = np.flatnonzero(np.diff(offsets) != np.diff(chunk.hit_offsets))
    if len(bad):
        i = int(bad[0])
        return (i, int(chunk.event["eventNumber"][i]),
                f"{int(np.diff(offsets)[i])} scores, the event has {int(np.diff(chunk.hit_offsets)[i])} hits")
    return None



def rederive_job(manifest: dict) -> FilterJob:
    """The job that re-derives units of the derived dataset ``manifest`` (``validate --source``): its parent
    and scores at the paths the lineage records, refused (DatasetError) unless they are the ones recorded."""
    cfg = FilterConfig.from_dict(manifest["config"])
    ref, parent = parent_ref(cfg.parent_path)
    if (ref.dataset_id, ref.manifest_sha256) != (cfg.parent_dataset_id, cfg.parent_manifest_sha256):
        raise DatasetError(f"the parent {cfg.parent_path} is not the one the lineage records (dataset id or manifest "
                           "sha256 differ)")
    sc = open_scores(cfg.scores_path, ref)
    sc.require_all(cfg.parent_path)
    if sc.scores_id != cfg.scores_id:
        raise DatasetError(f"the scores {cfg.scores_path} are not those the lineage records (their manifest sha256 "
                           f"is {sc.scores_id[:16]}…, recorded {cfg.scores_id[:16]}…)")
    return FilterJob(cfg, cfg.parent_path, cfg.scores_path, sc.manifest, sc.manifest_sha256,
                     {(s["unit"]["input"], s["unit"]["entry_start"], s["unit"]["entry_stop"]): s["path"]
                      for s in parent["shards"]})
