"""Per-hit scores of a dataset: the contract between whatever scores hits (``muon-pipeline predict``, or
any other tool, e.g. another framework's hit filter) and ``muon-pipeline filter``.

A scores folder::

    _manifest.json             {"format": "muon-pipeline/scores", "format_version": 1,
                                "parent": {"path", "dataset_id", "manifest_sha256"},
                                "run": {"checkpoint_sha256", ...} or null,
                                "split": "all" or {"name", "train_fraction", "val_fraction", "seed"},
                                "files": [{"path": "scores/part-KEY.parquet",
                                           "parent_shard": "shards/part-KEY.parquet",
                                           "rows", "hits", "sha256"}, ...]}
    scores/part-KEY.parquet    one per parent shard: [row (int64)], eventNumber (int64), score (list<float32>)

Scores of every event (``split`` "all", or absent) hold each parent shard's rows in the parent's row
order; scores of a subset (a hash split, as ``predict --split test`` writes) hold the ``row`` column,
the row in the parent shard, increasing, and have files only for shards with events of the subset. Per
row, one score per hit in the parent's hit order. ``parent`` pins the dataset the scores are for: its
``dataset_id`` and the sha256 of its manifest file. The *scores id* is the sha256 of the scores
manifest file. The manifest is written last (:func:`write_scores`, ``predict``): a folder without one
holds no scores. ``filter`` takes scores of every event only (:meth:`Scores.require_all`).
"""

from __future__ import annotations

import contextlib
import hashlib
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from .errors import ConfigError, DatasetError, one_line
from .format import MANIFEST, SHARDS, TMP_MARK, manifest_name
from .manifest_file import read_manifest
from .storage import OutputDir

SCORES_FORMAT = "muon-pipeline/scores"
SCORES_FORMAT_VERSION = 1
SCORES_DIR = "scores"
#: Where ``predict`` keeps what an unfinished output is being made from (for a resume).
PREDICT_PLAN = "_work/predict.json"
#: ``split`` of scores that cover every event of the parent.
ALL = "all"

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
    manifest = read_manifest(out)
    name = manifest_name(out.exists)
    return ParentRef(path, str(manifest.get("dataset_id")), out.sha256(name)), manifest


def scores_file_name(parent_rel: str) -> str:
    """``scores/part-KEY.parquet`` for parent shard ``shards/part-KEY.parquet``."""
    return f"{SCORES_DIR}/{posixpath.basename(parent_rel)}"


def scores_schema(with_rows: bool = False):
    """The Arrow schema of a scores file: ``[row int64,] eventNumber int64, score list<float32>``."""
    import pyarrow as pa

    fields = [("eventNumber", pa.int64()), ("score", pa.list_(pa.field("item", pa.float32())))]
    return pa.schema(([("row", pa.int64())] if with_rows else []) + fields)


def scores_table(event_number: np.ndarray, offsets: np.ndarray, scores: np.ndarray, rows: np.ndarray | None = None):
    """A scores file's table: rows [R] of eventNumber [R] int64 with scores [N_hits] float32 cut by
    ``offsets`` [R + 1] (row i's hits are ``scores[offsets[i]:offsets[i + 1]]``, from 0); ``rows`` [R] int64
    (the rows in the parent shard) for scores of a subset of events, else None (every row, in order)."""
    import pyarrow as pa

    values = pa.array(np.ascontiguousarray(scores, dtype=np.float32), pa.float32())
    lists = pa.ListArray.from_arrays(pa.array(np.asarray(offsets).astype(np.int32), pa.int32()), values,
                                     type=pa.list_(pa.field("item", pa.float32())))
    columns = [pa.array(np.asarray(event_number, dtype=np.int64)), lists]
    if rows is not None:
        columns.insert(0, pa.array(np.asarray(rows, dtype=np.int64)))
    return pa.Table.from_arrays(columns, schema=scores_schema(rows is not None))


def file_entry(out: OutputDir, name: str, parent_rel: str, rows: int, hits: int) -> dict:
    """The manifest entry of the finished scores file ``name`` (its sha256 read back from ``out``)."""
    return {"path": name, "parent_shard": parent_rel, "rows": int(rows), "hits": int(hits), "sha256": out.sha256(name)}


def scores_manifest(parent: ParentRef, files: list[dict], run: dict | None = None, split: str | dict = ALL) -> dict:
    """The scores manifest: ``files`` (:func:`file_entry`, in the parent's shard order), what made the
    scores (``run``) and which events they cover (``split``: ``"all"`` or the split's name, fractions, seed)."""
    return {"format": SCORES_FORMAT, "format_version": SCORES_FORMAT_VERSION, "parent": parent.to_dict(),
            "run": run, "split": split, "files": files}


def split_label(split: str | dict) -> str:
    """``"every event"`` or ``"the test split (train 0.8, val 0.1, seed 0)"``: for messages."""
    if split == ALL:
        return "every event"
    return (f"the {split.get('name')} split (train {split.get('train_fraction')}, val {split.get('val_fraction')}, "
            f"seed {split.get('seed')})")


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
            problem = _alignment_problem(None, np.asarray(event_number, dtype=np.int64), offsets, len(scores),
                                         events, parent_offsets)
            if problem is None and not np.isfinite(scores).all():
                bad = int(np.flatnonzero(~np.isfinite(scores))[0])
                problem = f"score {float(scores[bad])} at hit {bad}: scores must be finite"
            if problem:
                raise DatasetError(f"scores for shard {rel} of {parent_dir}: {problem}")
            name = scores_file_name(rel)
            with out.atomic(name, native=True) as fh:
                import pyarrow.parquet as pq

                pq.write_table(scores_table(event_number, offsets, scores), fh, compression="zstd")
            files[rel] = file_entry(out, name, rel, len(offsets) - 1, offsets[-1])
        missing = [r for r in entries if r not in files]
        if missing:
            raise DatasetError(f"no scores for {len(missing)} shard(s) of {parent_dir}, e.g. {missing[0]}")
        doc = scores_manifest(parent, [files[r] for r in entries], run)
        out.write_json(MANIFEST, doc)
    except BaseException:
        for f in files.values():  # nothing partial stays visible
            with contextlib.suppress(Exception):
                out.remove(f["path"])
        raise
    return doc


def shard_rows(src: OutputDir, rel: str, hit_column: str) -> tuple[np.ndarray, np.ndarray]:
    """(eventNumber [rows], hit offsets [rows + 1] from 0) of shard ``rel``: what scores must align with.
    Reads eventNumber and one leaf of the hit list (the list offsets), not every hit field."""
    import pyarrow.compute as pc

    from .shards import open_parquet

    pf = open_parquet(src, rel)
    paths = [pf.schema.column(i).path for i in range(len(pf.schema))]
    leaf = next((p for p in paths if p.startswith(hit_column + ".")), hit_column)
    table = pf.read(columns=["eventNumber", leaf])
    lengths = pc.list_value_length(table.column(hit_column)).to_numpy(zero_copy_only=False)
    offsets = np.concatenate([[0], np.cumsum(np.nan_to_num(lengths).astype(np.int64))])
    return table.column("eventNumber").to_numpy().astype(np.int64, copy=False), offsets


def _alignment_problem(rows: np.ndarray | None, event_number: np.ndarray, offsets: np.ndarray, n_scores: int,
                       parent_events: np.ndarray, parent_offsets: np.ndarray) -> str | None:
    """Why scores (``rows`` or None for every row in order, ``event_number``, ``offsets``, ``n_scores``
    values) do not fit a parent shard (``parent_events`` [P], ``parent_offsets`` [P + 1]), or None."""
    n = len(parent_events)
    if rows is None and len(event_number) != n:
        return f"{len(event_number)} rows, the parent shard has {n}"
    if len(offsets) != len(event_number) + 1 or offsets[0] != 0 or (np.diff(offsets) < 0).any() \
            or offsets[-1] != n_scores:
        return "offsets do not start at 0, fall, or do not end at the number of scores"
    if rows is None:
        rows = np.arange(n)
    elif len(rows) != len(event_number):
        return f"{len(rows)} row numbers for {len(event_number)} rows"
    else:
        bad = np.flatnonzero((rows < 0) | (rows >= n) | np.r_[False, np.diff(rows) <= 0])
        if len(bad):
            return (f"the file's row {int(bad[0])} names parent row {int(rows[bad[0]])}: the row column must name rows "
                    f"of the parent shard (0 to {n - 1}), increasing")
    bad = np.flatnonzero(event_number != parent_events[rows])
    if len(bad):
        i = int(rows[bad[0]])
        return f"row {i}: eventNumber {int(event_number[bad[0]])}, the parent's is {int(parent_events[i])}"
    counts, parent_counts = np.diff(offsets), np.diff(parent_offsets)[rows]
    bad = np.flatnonzero(counts != parent_counts)
    if len(bad):
        i = int(rows[bad[0]])
        return (f"row {i} (eventNumber {int(parent_events[i])}): {int(counts[bad[0]])} scores, the event has "
                f"{int(parent_counts[bad[0]])} hits")
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

    @property
    def split(self) -> str | dict:
        """``"all"`` (every event of the parent; also when the manifest has no ``split``) or the split's
        ``{"name", "train_fraction", "val_fraction", "seed"}``."""
        return self.manifest.get("split", ALL)

    def require_all(self, parent: str | None = None) -> None:
        """DatasetError (one line) unless the scores cover every event of the parent: what ``filter`` needs."""
        if self.split != ALL:
            ds = parent or self.parent.get("path") or "DATASET"
            raise DatasetError(f"--scores {self.path} cover {split_label(self.split)} only, not every event of {ds}; "
                               f"filter needs scores of every event: `muon-pipeline predict RUN --data {ds} --split "
                               "all` makes them")

    def entry(self, parent_rel: str) -> dict:
        for f in self.manifest["files"]:
            if f["parent_shard"] == parent_rel:
                return f
        raise DatasetError(f"scores {self.path}: no scores for parent shard {parent_rel}")

    def read_rows(self, parent_rel: str, *, checksum: bool = True) -> tuple[np.ndarray | None, np.ndarray,
                                                                            np.ndarray, np.ndarray]:
        """(rows [R] int64 or None when the file has no ``row`` column, eventNumber [R] int64, offsets
        [R + 1] int64, scores [hits] float32) of one parent shard's scores file, its sha256 checked against
        the scores manifest first (``checksum``). DatasetError naming the file."""
        import pyarrow as pa
        import pyarrow.parquet as pq

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
            rows = table.column("row").to_numpy().astype(np.int64, copy=False) if "row" in table.column_names \
                else None
            col = table.column("score")
            if col.null_count:
                raise ValueError("null score lists")
            offsets, values = _score_lists(col)
        except (KeyError, ValueError, TypeError, pa.ArrowException) as err:
            raise DatasetError(f"scores {self.path}/{rel}: not a scores file (columns [row int64,] eventNumber "
                               f"int64, score list<float32>: {one_line(err)})") from err
        if (len(events), len(values)) != (entry["rows"], entry["hits"]):
            raise DatasetError(f"scores {self.path}/{rel}: {len(events)} rows and {len(values)} scores, the scores "
                               f"manifest says {entry['rows']} and {entry['hits']}")
        if not np.isfinite(values).all():
            hit = int(np.flatnonzero(~np.isfinite(values))[0])
            row = int(np.searchsorted(offsets, hit, side="right")) - 1
            raise DatasetError(f"scores {self.path}/{rel}: score {float(values[hit])} in row {row} (eventNumber "
                               f"{int(events[row])}): scores must be finite")
        return rows, events, offsets, values

    def read(self, parent_rel: str, *, checksum: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(eventNumber [rows] int64, offsets [rows + 1] int64, scores [hits] float32) of one parent shard,
        for scores of every event (:meth:`require_all`; DatasetError otherwise), as :meth:`read_rows`."""
        self.require_all()
        return self.read_rows(parent_rel, checksum=checksum)[1:]

    def for_rows(self, parent_rel: str, parent_events: np.ndarray,
                 parent_offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows [R], offsets [R + 1], scores [hits]) of parent shard ``parent_rel`` (every row, or a subset's),
        checked to align with the parent's rows: each row a row of the shard (increasing), with its
        eventNumber (``parent_events`` [P]) and one score per hit (``parent_offsets`` [P + 1], from 0).
        DatasetError naming the shard and the first row that differs."""
        rows, events, offsets, values = self.read_rows(parent_rel)
        problem = _alignment_problem(rows, events, offsets, len(values), parent_events, parent_offsets)
        if problem:
            raise DatasetError(f"scores {self.path} for parent shard {parent_rel}: {problem}")
        return (np.arange(len(events)) if rows is None else rows), offsets, values

    def for_shard(self, parent_rel: str, parent_events: np.ndarray,
                  parent_offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(offsets, scores) of parent shard ``parent_rel`` for scores of every event (:meth:`require_all`),
        checked to align with every one of its rows (:meth:`for_rows`)."""
        self.require_all()
        rows, offsets, values = self.for_rows(parent_rel, parent_events, parent_offsets)
        if len(rows) != len(parent_events) or (rows != np.arange(len(rows))).any():
            raise DatasetError(f"scores {self.path} for parent shard {parent_rel}: {len(rows)} rows, not the "
                               f"parent shard's {len(parent_events)} in order")
        return offsets, values

    def verify(self, parent_dir: str) -> tuple[int, int]:
        """Read every scores file and check it against dataset ``parent_dir`` (:meth:`for_rows`): each
        file's sha256, and each row's eventNumber and one score per hit of that event. Returns (rows, hits)
        scored. DatasetError naming the first file, row and counts that differ."""
        from .schema import load_schema

        _, manifest = parent_ref(parent_dir)
        hit_column = load_schema(manifest["schema"]["version"]).hit_column
        shards = {s["path"] for s in manifest["shards"]}
        src, rows, hits = OutputDir(parent_dir), 0, 0
        for f in self.manifest["files"]:
            if f["parent_shard"] not in shards:
                raise DatasetError(f"scores {self.path}/{f['path']}: {f['parent_shard']} is not a shard of {parent_dir}")
            got, offsets, _ = self.for_rows(f["parent_shard"], *shard_rows(src, f["parent_shard"], hit_column))
            if (len(got), int(offsets[-1])) != (f["rows"], f["hits"]):
                raise DatasetError(f"scores {self.path}/{f['path']}: {len(got)} rows and {int(offsets[-1])} hits, the "
                                   f"scores manifest says {f['rows']} and {f['hits']}")
            rows, hits = rows + len(got), hits + int(offsets[-1])
        return rows, hits


def _score_lists(col) -> tuple[np.ndarray, np.ndarray]:
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
        hint = ("a predict run that has not finished: run it again to complete it" if out.exists(PREDICT_PLAN)
                else "not a scores folder, or its writer did not finish")
        raise DatasetError(f"--scores {path}: no {MANIFEST}; not a finished scores folder ({hint})")
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
                               f"({parent.manifest_sha256[:16]}…), or is another copy of the dataset with the "
                               "same id: score it again")
    return scores


def _manifest_problem(doc: dict) -> str | None:
    parent = doc.get("parent")
    if not isinstance(parent, dict) or not all(isinstance(parent.get(k), str) for k in ("dataset_id",
                                                                                         "manifest_sha256")):
        return "key parent: missing, or without dataset_id and manifest_sha256 strings"
    if doc.get("run") is not None and not isinstance(doc["run"], dict):
        return "key run: not an object or null"
    split = doc.get("split", ALL)
    if split != ALL and not (isinstance(split, dict) and isinstance(split.get("name"), str)):
        return f"key split: {split!r} is neither \"all\" nor an object with a name"
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
        if isinstance(f["rows"], bool) or isinstance(f["hits"], bool) or f["rows"] < 0 or f["hits"] < 0:
            return f"key files[{i}]: rows {f['rows']!r} and hits {f['hits']!r} must be counts (integers >= 0)"
        if not f["parent_shard"].startswith(f"{SHARDS}/") or f["parent_shard"] in seen:
            return f"key files[{i}].parent_shard: {f['parent_shard']!r} is not a shard path, or is listed twice"
        seen.add(f["parent_shard"])
    return None
