"""``migrate``: upgrade a dataset to a newer schema version without the ROOT files.

Only the fields a version adds are computed (from columns already stored: η from the stored
Low-edge coordinates, which are the raw float32 values); every other column is copied as-is.
The result is what a direct convert at the new version writes: same shard names (unit keys use
the new configuration), same values, same manifest apart from timing.
"""

from __future__ import annotations

from ._version import __version__
from .config import ConvertConfig
from .dataset import open_dataset
from .derive_config import is_derived
from .errors import ConfigError, DatasetError, SchemaError
from .features import DERIVED, hit_features
from .format import (
    MANIFEST,
    TMP_MARK,
    InputInfo,
    Unit,
    dataset_id,
    identity_metadata,
    manifest_name,
    unit_key,
)
from .locks import reading
from .schema import Schema, load_schema
from .shards import chunk_from_table, iter_row_groups
from .stats import StatsTable, merge_tables, table_to_json
from .storage import OutputDir, refuse_output_within
from .transform import LOW_EDGE, chunk_stats


def _upgrade_table(table, old, new):
    """Append the new schema's added hit fields to the ``hits`` structs of one table."""
    import numpy as np
    import pyarrow as pa

    hits = table.column(old.hit_column).combine_chunks()
    values = hits.values
    offsets = np.asarray(hits.offsets)
    lo, hi = int(offsets[0]), int(offsets[-1])
    flat = {f.name: values.field(f.name).slice(lo, hi - lo) for f in old.level("hit")}
    added = [f for f in new.level("hit") if not old.has(f.name)]
    unknown = [f.name for f in added if f.name not in DERIVED]
    if unknown or any(not old.has(f.name) for f in new.level("muon") + new.level("event")):
        raise ConfigError(f"migration to v{new.version} is not supported: cannot compute {unknown}")
    computed = hit_features(*(flat[c].to_numpy() for c in LOW_EDGE), [f.name for f in added])
    for f in added:
        flat[f.name] = pa.array(computed[f.name], type=f.arrow_type())
    typ = new.arrow_schema().field(new.hit_column).type
    struct = pa.StructArray.from_arrays([flat[f.name] for f in new.level("hit")], fields=list(typ.value_type))
    new_hits = pa.ListArray.from_arrays(pa.array(offsets - lo, pa.int32()), struct, type=typ)
    cols = [new_hits if name == old.hit_column else table.column(name) for name in table.column_names]
    return pa.Table.from_arrays(cols, schema=new.arrow_schema())


def _check_values(table, new, added: list[str], shard: str, first_row: int) -> None:
    """The values a migration computes obey the schema's rules, as convert's and validate's do
    (``pipeline.rules``): a non-finite η (a hit on the beam axis) or one outside the schema's range
    is refused with the shard, row and field, never written."""
    import numpy as np

    from .rules import field_violations

    hits = table.column(new.hit_column).combine_chunks()
    offsets = np.asarray(hits.offsets)
    for name in added:
        x = hits.values.field(name).slice(int(offsets[0]), int(offsets[-1] - offsets[0])).to_numpy()
        for _kind, bad, why in field_violations(x, new.field(name)):
            row = int(np.searchsorted(offsets - offsets[0], np.flatnonzero(bad)[0], side="right")) - 1
            entry = table.column("source_entry")[row].as_py() if "source_entry" in table.column_names else "?"
            raise DatasetError(f"{shard}, row {first_row + row} (source entry {entry}), field {name}: computed "
                               f"{why} (a hit on the beam axis?); convert refuses such hits, so migrate does "
                               "not write them")


def content_digest(manifest: dict) -> str:
    """sha256 of a manifest without its ``timing`` block (canonical JSON): what a migration is keyed by.
    A convert re-run that had nothing to do rewrites the manifest with new times, not a new dataset."""
    import hashlib
    import json

    body = {k: v for k, v in manifest.items() if k != "timing"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _finished(dst: OutputDir, source_digest: str, file_digest: str, to_version: int) -> dict | None:
    """The output's manifest when it is this very migration, finished (a kill after the manifest was
    written, or a plain re-run): same source content (:func:`content_digest`; outputs that record only
    the source file's sha256 are matched by that) and target version, and every shard it lists present
    with its recorded size. A finished migration with a shard missing or resized is not finished: its
    manifest is removed here and the run redoes the migration. None otherwise."""
    name = manifest_name(dst.exists)  # an output written before the manifest's rename has the old name
    if name is None:
        return None
    try:
        doc = dst.read_json(name)
    except ValueError:
        return None
    origin = doc.get("migrated_from")
    if not (isinstance(origin, dict) and doc.get("schema", {}).get("version") == to_version
            and (origin.get("content_sha256") == source_digest
                 or ("content_sha256" not in origin and origin.get("manifest_sha256") == file_digest))):
        return None
    try:
        intact = all(dst.exists(s["path"]) and dst.size(s["path"]) == s["bytes"] for s in doc.get("shards", []))
    except (KeyError, TypeError, OSError, ConfigError):
        intact = False
    if intact:
        return doc
    dst.remove(name)  # ours, but a shard has gone or changed: redo the migration (shards are rewritten)
    return None


def _check_output(dst: OutputDir, output: str, planned: set[str]) -> None:
    """A new or empty output, or the leftovers of an interrupted run of this same migration (its own
    shards and temporaries, no manifest): re-running resumes it. Anything else is refused by name."""
    if not (dst.fs.exists(dst.root) and dst.listdir(".")):
        return
    if manifest_name(dst.exists) is not None:
        raise ConfigError(f"output {output} exists and is not empty (it holds the manifest of another dataset): "
                          "choose a new directory")
    foreign = [n for n in dst.listdir(".") if n != "shards"]
    foreign += [f"shards/{n}" for n in dst.listdir("shards") if n not in planned and not n.startswith(TMP_MARK)]
    if foreign:
        raise ConfigError(f"output {output} exists and is not empty ({', '.join(sorted(foreign)[:5])}): "
                          "choose a new directory")
    dst.clean_temporaries("shards")


def migrate_dataset(source: str, output: str, to_version: int) -> dict:
    """Rewrite the dataset at ``source`` with schema version ``to_version`` into ``output``; returns its manifest.

    Locks: the readers' lock on a local source (no convert, finalize or plan-replacing job-array task
    deletes from it while it is read; other readers, a second migration of it included, read beside it)
    and the writers' exclusive lock on the output (as convert and finalize take), both held before
    anything is inspected. Re-running a finished migration is a
    no-op; if a shard of it has gone, the migration is redone.
    Raises ConfigError (usage, a busy or foreign output) or DatasetError (a source that does not open).
    """
    src, dst = OutputDir(source), OutputDir(output)
    refuse_output_within(output, {"input dataset": source})
    with reading(source, "migrate"):
        # the shared opener: manifest shape, shard path rules, shard schemas, and every sha256 (a shard
        # changed after it was written is never migrated)
        dataset = open_dataset(source, checksums=True)
        if is_derived(dataset.manifest["config"]):
            raise ConfigError(f"{source} is a derived dataset (made by filter): migrate its parent "
                              f"({dataset.manifest['config']['filter']['parent']['path']}), then filter that again")
        try:
            new = load_schema(to_version)
        except SchemaError as err:
            raise ConfigError(f"--to-version: {err}") from None
        if new.version <= dataset.schema.version:
            raise ConfigError(f"dataset is already at v{dataset.schema.version}; --to-version must be newer")
        source_digest, file_digest = content_digest(dataset.manifest), src.sha256(manifest_name(src.exists) or MANIFEST)
        dst.makedirs()
        with dst.lock(what="migrate"):
            return _migrate(src, dst, source, output, dataset, new, source_digest, file_digest)


def _migrate(src: OutputDir, dst: OutputDir, source: str, output: str, dataset, new, source_digest: str,
             file_digest: str) -> dict:
    import pyarrow.parquet as pq

    manifest, old = dataset.manifest, dataset.schema
    done = _finished(dst, source_digest, file_digest, new.version)
    if done is not None:
        return done  # re-run of a finished migration: nothing to do, nothing rewritten
    cfg_dict = dict(manifest["config"], schema_version=new.version)
    cfg = ConvertConfig.from_dict(cfg_dict)
    infos = {i["path"]: InputInfo(i["path"], i["size"], i["entries"], i["uuid"]) for i in manifest["inputs"]}
    plan = []
    for entry in manifest["shards"]:
        u = entry["unit"]
        if u["input"] not in infos:
            raise DatasetError(f"{source}/{manifest_name(src.exists)}: shard {entry['path']} names input {u['input']!r}, which the "
                               "manifest's inputs do not list (run `muon-pipeline validate`)")
        key = unit_key(infos[u["input"]], u["entry_start"], u["entry_stop"], cfg.hash())
        plan.append((entry, Unit(u["index"], u["input"], u["entry_start"], u["entry_stop"], key)))
    _check_output(dst, output, {unit.shard.rsplit("/", 1)[1] for _, unit in plan})
    added = [f.name for f in new.level("hit") if not old.has(f.name)]
    shards = []
    stats: dict = {}
    new_id = dataset_id(cfg.hash(), __version__)
    for entry, unit in plan:
        shard_stats: dict = {}
        arrow_schema = new.arrow_schema()
        arrow_schema = arrow_schema.with_metadata({**arrow_schema.metadata,
                                                   **identity_metadata(new_id, unit.to_dict())})
        with dst.atomic(unit.shard, native=True) as fh, pq.ParquetWriter(
                fh, arrow_schema, use_dictionary=["source_file"], write_statistics=False,
                **cfg.compression.writer_kwargs()) as writer:
            for first_row, table in iter_row_groups(src, entry["path"]):
                upgraded = _upgrade_table(table, old, new)
                _check_values(upgraded, new, added, f"{source}/{entry['path']}", first_row)
                writer.write_table(upgraded, row_group_size=max(upgraded.num_rows, 1))
                # per row group, as convert does: the statistics come out bit-identical
                shard_stats = merge_tables(shard_stats, table_stats(upgraded, new))
        stats = merge_tables(stats, shard_stats)  # unit by unit, as finalize merges them
        shards.append({**entry, "path": unit.shard, "bytes": dst.size(unit.shard), "sha256": dst.sha256(unit.shard)})
    if not shards and new.level("hit"):
        raise DatasetError(f"{source} has no shards to migrate")
    migrated = dict(manifest, schema={"name": new.name, "version": new.version}, tool_version=__version__,
                    dataset_id=new_id, config=cfg_dict, shards=shards,
                    statistics=table_to_json(stats),
                    totals=dict(manifest["totals"], bytes=sum(s["bytes"] for s in shards)),
                    timing=dict(manifest.get("timing", {}), migrated_from=old.version),
                    migrated_from={"path": source, "version": old.version, "content_sha256": source_digest,
                                   "manifest_sha256": file_digest})
    dst.write_json(MANIFEST, migrated)
    return migrated


def table_stats(table, schema: Schema) -> StatsTable:
    """``chunk_stats`` of one row group read back from a shard."""
    return chunk_stats(chunk_from_table(table, schema), schema)
