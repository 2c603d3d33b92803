"""Per-hit scores of a dataset: the contract between whatever scores hits (``muon-pipeline predict``, or
any other tool, e.g. another framework's hit filter) and ``muon-pipeline filter``.

A scores folder::

    _manifest.json             {"format": "muon-pipeline/scores", "format_version": 1,
                                "parent": {"path", "dataset_id", "manifest_sha256"},
                                "run": {"checkpoint_sha256", ...} or null,
                                "files": [{"path": "scores/part-KEY.parquet",
                                           "parent_shard": "shards/part-KEY.parquet",
                                           "rows", "hits", "sha256"}, ...]}
    scores/part-KEY.parquet    one per parent shard: eventNumber (int64), score (list<float32>)

Each scores file holds the parent shard's rows in the parent's row order, and per row one score per hit
in the parent's hit order. ``parent`` pins the dataset the scores are for: its ``dataset_id`` and the
sha256 of its manifest file. The *scores id* is the sha256 of the scores manifest file. The manifest is
written last (:func:`write_scores`): a folder without one holds no scores.
"""

from __future__ import annotations

import contextlib
import hashlib
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from .errors import ConfigError, DatasetError, one_line
from .format import FORMAT, MANIFEST, SHARDS, TMP_MARK, manifest_name
from .storage import OutputDir

SCORES_FORMAT = "muon-pipeline/scores"
SCORES_FORMAT_VERSION = 1
SCORES_DIR = "scores"

#: ``(parent shard path, eventNumber[rows] int64, offsets[rows + 1] int64 from 0, scores[hits] float32)``
ShardScores = tuple[str, np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class ParentRef:
    """A dataset as lineage names it: the path as given, its ``dataset_id`` and its manifest file's sha256."""

    path: str
    dataset_id: str
    manifest_sha256: str

    def to_dict(self) -> dict:
        return {"path": self.path, "dataset_id": self.dataset_id, "manifest_sha256": self.manifest_sha256}


def parent_ref(path: str) -> tuple[ParentRef, dict]:
    """The reference to dataset ``path`` and its manifest. DatasetError (one line) when it has none."""
    out = OutputDir(path)
    if not out.fs.exists(out.root):
        raise DatasetError(f"{path}: no such dataset directory")
    name = manifest_name(out.exists)
    if name is None:
        raise DatasetError(f"{path} has no {MANIFEST} (not a finished dataset)")
    try:
        manifest = out.read_json(name)
    except ValueError as err:
        raise DatasetError(f"{path}/{name} is not valid JSON: {err}") from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DatasetError(f"{path}/{name} is not a muon-pipeline dataset manifest")
    return ParentRef(path, str(manifest.get("dataset_id")), out.sha256(name)), manifest


def scores_file_name(parent_rel: str) -> str:
    """``scores/part-KEY.parquet`` for parent shard ``shards/part-KEY.parquet``."""
    return f"{SCORES_DIR}/{posixpath.basename(parent_rel)}"


def _arrow_table(event_number: np.ndarray, offsets: np.ndarray, scores: np.ndarray):
    import pyarrow as pa

    values = pa.array(np.ascontiguousarray(scores, dtype=np.float32), pa.float32())
    lists = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32), pa.int32()), values,
                                     type=pa.list_(pa.field("item", pa.float32())))
    return pa.table({"eventNumber": pa.array(np.asarray(event_number, dtype=np.int64)), "score": lists})


def write_scores(output: str, parent_dir: str, per_shard: Iterable[ShardScores], run: dict | None = None) -> dict:
    """Write the scores of every shard of dataset ``parent_dir`` to the new folder ``output``; returns the manifest.

    ``per_shard`` yields ``(parent shard path, eventNumber, offsets, scores)`` once per parent shard (any
    order): ``eventNumber`` int64 [rows], ``offsets`` int64 [rows + 1] from 0, ``scores`` float32 [hits],
    finite. Each is checked against the parent (rows, eventNumbers, hits per event). ``run``: what made
    the scores (``{"checkpoint_sha256": …}`` for a network), or None.

    Files first, the manifest last: on any error nothing is left but temporaries, and no manifest.
    Raises ConfigError (output not new and empty), DatasetError (scores that do not fit the parent).
    """
    from .schema import load_schema

    parent, manifest = parent_ref(parent_dir)
    hit_column = load_schema(manifest["schema"]["version"]).hit_column
    src = OutputDir(parent_dir)
    out = OutputDir(output)
    if out.fs.exists(out.root) and [n for n in out.listdir(".") if not n.startswith(TMP_MARK)]:
        raise ConfigError(f"scores output {output} exists and is not empty; choose a new folder")
    entries = {s["path"]: s for s in manifest["shards"]}
    files: dict[str, dict] = {}
    out.makedirs(SCORES_DIR)
    try:
        for rel, event_number, offsets, scores in per_shard:
            if rel not in entries:
                raise DatasetError(f"scores for {rel!r}, which is not a shard of {parent_dir}")
            if rel in files:
                raise DatasetError(f"scores for shard {rel} given twice")
            offsets = np.asarray(offsets, dtype=np.int64)
            scores = np.asarray(scores, dtype=np.float32)
            events, parent_offsets = shard_rows(src, rel, hit_column)
            problem = _alignment_problem(np.asarray(event_number, dtype=np.int64), offsets, len(scores), events,
                                         parent_offsets)
            if problem is None and not np.isfinite(scores).all():
                bad = int(np.flatnonzero(~np.isfinite(scores))[0])
                problem = f"score {float(scores[bad])} at hit {bad}: scores must be finite"
            if problem:
                raise DatasetError(f"scores for shard {rel} of {parent_dir}: {problem}")
            name = scores_file_name(rel)
            with out.atomic(name, native=True) as fh:
                import pyarrow.parquet as pq

                pq.write_table(_arrow_table(event_number, offsets, scores), fh, compression="zstd")
            files[rel] = {"path": name, "parent_shard": rel, "rows": int(len(offsets) - 1),
                          "hits": int(offsets[-1]), "sha256": out.sha256(name)}
        missing = [r for r in entries if r not in files]
        if missing:
            raise DatasetError(f"no scores for {len(missing)} shard(s) of {parent_dir}, e.g. {missing[0]}")
        doc = {"format": SCORES_FORMAT, "format_version": SCORES_FORMAT_VERSION, "parent": parent.to_dict(),
               "run": run, "files": [files[r] for r in entries]}
        out.write_json(MANIFEST, doc)
    except BaseException:
        for f in files.values():  # nothing partial stays visible
            with contextlib.suppress(Exception):
                out.remove(f["path"])
        raise
    return doc


def shard_rows(src: OutputDir, rel: str, hit_column: str) -> tuple[np.ndarray, np.ndarray]:
    """(eventNumber [rows], hit offsets [rows + 1] from 0) of shard ``rel``: what scores must align with."""
    import pyarrow.compute as pc

    from .shards import open_parquet

    table = open_parquet(src, rel).read(columns=["eventNumber", hit_column])
    lengths = pc.list_value_length(table.column(hit_column)).to_numpy(zero_copy_only=False)
    offsets = np.concatenate([[0], np.cumsum(np.nan_to_num(lengths).astype(np.int64))])
    return table.column("eventNumber").to_numpy().astype(np.int64, copy=False), offsets


def _alignment_problem(event_number: np.ndarray, offsets: np.ndarray, n_scores: int, parent_events: np.ndarray,
                       parent_offsets: np.ndarray) -> str | None:
    """Why scores (``event_number``, ``offsets``, ``n_scores`` values) do not fit a parent shard, or None."""
    if len(event_number) != len(parent_events) or len(offsets) != len(parent_events) + 1:
        return f"{len(event_number)} rows, the parent shard has {len(parent_events)}"
    if offsets[0] != 0 or (np.diff(offsets) < 0).any() or offsets[-1] != n_scores:
        return "offsets do not start at 0, fall, or do not end at the number of scores"
    bad = np.flatnonzero(event_number != parent_events)
    if len(bad):
        i = int(bad[0])
        return f"row {i}: eventNumber {int(event_number[i])}, the parent's is {int(parent_events[i])}"
    bad = np.flatnonzero(np.diff(offsets) != np.diff(parent_offsets))
    if len(bad):
        i = int(bad[0])
        return (f"row {i} (eventNumber {int(parent_events[i])}): {int(np.diff(offsets)[i])} scores, the event "
                f"has {int(np.diff(parent_offsets)[i])} hits")
    return None


@dataclass
class Scores:
    """An opened scores folder (:func:`open_scores`)."""

    path: str
    manifest: dict
    manifest_sha256: str
    out: OutputDir = field(repr=False)

    @property
    def scores_id(self) -> str:
        """The sha256 of the scores manifest file: what lineage records."""
        return self.manifest_sha256

    @property
    def parent(self) -> dict:
        return self.manifest["parent"]

    @property
    def checkpoint_sha256(self) -> str | None:
        run = self.manifest.get("run")
        return run.get("checkpoint_sha256") if isinstance(run, dict) else None

    def entry(self, parent_rel: str) -> dict:
        for f in self.manifest["files"]:
            if f["parent_shard"] == parent_rel:
                return f
        raise DatasetError(f"scores {self.path}: no scores for parent shard {parent_rel}")

    def read(self, parent_rel: str, *, checksum: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(eventNumber [rows] int64, offsets [rows + 1] int64, scores [hits] float32) of one parent shard,
        its sha256 checked against the scores manifest first (``checksum``). DatasetError naming the file."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from .shards import list_column

        entry = self.entry(parent_rel)
        rel = entry["path"]
        try:
            data = self.out.read_bytes(rel)
        except OSError as err:
            raise DatasetError(f"scores {self.path}/{rel}: cannot be read ({one_line(err)})") from err
        if checksum and hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise DatasetError(f"scores {self.path}/{rel}: sha256 differs from the scores manifest (the file "
                               "changed after it was written)")
        try:
            table = pq.read_table(pa.BufferReader(data))
            events = table.column("eventNumber").to_numpy().astype(np.int64, copy=False)
            col = table.column("score")
            if col.null_count:
                raise ValueError("null score lists")
            offsets, values = _score_lists(col, list_column)
        except (KeyError, ValueError, TypeError, pa.ArrowException) as err:
            raise DatasetError(f"scores {self.path}/{rel}: not a scores file (columns eventNumber int64, "
                               f"score list<float32>: {one_line(err)})") from err
        if not np.isfinite(values).all():
            hit = int(np.flatnonzero(~np.isfinite(values))[0])
            row = int(np.searchsorted(offsets, hit, side="right")) - 1
            raise DatasetError(f"scores {self.path}/{rel}: score {float(values[hit])} in row {row} (eventNumber "
                               f"{int(events[row])}): scores must be finite")
        return events, offsets, values

    def for_shard(self, parent_rel: str, parent_events: np.ndarray,
                  parent_offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(offsets, scores) of parent shard ``parent_rel``, checked to align with its rows: the same
        eventNumbers (``parent_events``) and hits per event (``parent_offsets``, from 0). DatasetError naming
        the shard and the first row that differs."""
        events, offsets, values = self.read(parent_rel)
        problem = _alignment_problem(events, offsets, len(values), parent_events, parent_offsets)
        if problem:
            raise DatasetError(f"scores {self.path} for parent shard {parent_rel}: {problem}")
        return offsets, values


def _score_lists(col, list_column) -> tuple[np.ndarray, np.ndarray]:
    import pyarrow as pa

    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if not pa.types.is_list(arr.type) and not pa.types.is_large_list(arr.type):
        raise TypeError(f"score is {arr.type}, not a list")
    offsets = np.asarray(arr.offsets, dtype=np.int64)
    lo, hi = int(offsets[0]), int(offsets[-1])
    values = arr.values.slice(lo, hi - lo).to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return offsets - lo, values


def open_scores(path: str, parent: ParentRef | None = None) -> Scores:
    """Open a scores folder: its manifest's format and shape, and, given ``parent``, that the scores are
    for that dataset as it is now (same dataset id and manifest sha256). DatasetError (one line) naming
    the folder otherwise. File checksums are checked as each file is read (:meth:`Scores.read`)."""
    out = OutputDir(path)
    if not out.fs.exists(out.root):
        raise DatasetError(f"--scores {path}: no such folder")
    if not out.exists(MANIFEST):
        raise DatasetError(f"--scores {path}: no {MANIFEST} (not a scores folder, or its writer did not finish)")
    try:
        doc = out.read_json(MANIFEST)
    except ValueError as err:
        raise DatasetError(f"--scores {path}/{MANIFEST}: not valid JSON ({err})") from err
    if not isinstance(doc, dict) or doc.get("format") != SCORES_FORMAT:
        raise DatasetError(f"--scores {path}/{MANIFEST}: not a scores manifest (format "
                           f"{doc.get('format') if isinstance(doc, dict) else None!r}, expected {SCORES_FORMAT!r})")
    if doc.get("format_version") != SCORES_FORMAT_VERSION:
        raise DatasetError(f"--scores {path}/{MANIFEST}: format_version {doc.get('format_version')!r}; this "
                           f"version reads {SCORES_FORMAT_VERSION}")
    problem = _manifest_problem(doc)
    if problem:
        raise DatasetError(f"--scores {path}/{MANIFEST}: {problem}")
    scores = Scores(path, doc, out.sha256(MANIFEST), out)
    if parent is not None:
        mine = doc["parent"]
        if mine["dataset_id"] != parent.dataset_id:
            raise DatasetError(f"--scores {path} are for dataset {mine['dataset_id']} ({mine.get('path')}), not for "
                               f"{parent.path} (dataset {parent.dataset_id}): score that dataset first")
        if mine["manifest_sha256"] != parent.manifest_sha256:
            raise DatasetError(f"--scores {path} were made for {mine.get('path')} as it was (manifest sha256 "
                               f"{mine['manifest_sha256'][:16]}…); {parent.path}'s manifest has changed since "
                               f"({parent.manifest_sha256[:16]}…): score it again")
    return scores


def _manifest_problem(doc: dict) -> str | None:
    parent = doc.get("parent")
    if not isinstance(parent, dict) or not all(isinstance(parent.get(k), str) for k in ("dataset_id",
                                                                                         "manifest_sha256")):
        return "key parent: missing, or without dataset_id and manifest_sha256 strings"
    if doc.get("run") is not None and not isinstance(doc["run"], dict):
        return "key run: not an object or null"
    files = doc.get("files")
    if not isinstance(files, list):
        return "key files: missing or not a list"
    seen = set()
    for i, f in enumerate(files):
        if not isinstance(f, dict) or not all(isinstance(f.get(k), str) for k in ("path", "parent_shard", "sha256")) \
                or not all(isinstance(f.get(k), int) for k in ("rows", "hits")):
            return f"key files[{i}]: expected path, parent_shard, sha256 (strings), rows, hits (integers)"
        parts = f["path"].split("/")
        if len(parts) != 2 or parts[0] != SCORES_DIR or parts[1].startswith(".") or ".." in parts:
            return f"key files[{i}].path: {f['path']!r} is not {SCORES_DIR}/NAME.parquet"
        if not f["parent_shard"].startswith(f"{SHARDS}/") or f["parent_shard"] in seen:
            return f"key files[{i}].parent_shard: {f['parent_shard']!r} is not a shard path, or is listed twice"
        seen.add(f["parent_shard"])
    return None
