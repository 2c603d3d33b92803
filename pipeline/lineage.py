"""Lineage of a derived dataset: ``validate``'s check that what it was made from is still there and
unchanged, and the chain ``inspect`` shows (the parent's parent too when the parent is derived).

The lineage is the manifest's ``lineage`` section, the same facts as its ``config.filter`` section (which
the dataset id hashes); see :mod:`pipeline.derive_manifest`.
"""

from __future__ import annotations

from .derive_config import FilterConfig, is_derived
from .derive_manifest import lineage_of
from .errors import PipelineError
from .format import MANIFEST
from .report import Problem
from .scores import SCORES_FORMAT, parent_ref
from .storage import OutputDir


def check_lineage(manifest: dict, add) -> None:
    """Problems (kind ``lineage``) of a derived manifest: its ``lineage`` section disagrees with its
    configuration; the parent is not reachable at its recorded path, or its dataset id or manifest sha256
    differ from the recorded ones; the scores folder is not reachable, or its manifest's sha256 (the scores
    id) differs, or it names another parent."""
    try:
        cfg = FilterConfig.from_dict(manifest["config"])
    except Exception as err:  # noqa: BLE001 - reported as a malformed config elsewhere
        add(Problem("lineage", f"unusable filter configuration ({type(err).__name__}: {err})", where=("config",)))
        return
    if manifest.get("lineage") != lineage_of(cfg):
        add(Problem("lineage", "the lineage section differs from config.filter (one of them was edited)",
                    where=("lineage",)))
    try:
        ref, _ = parent_ref(cfg.parent_path)
    except (PipelineError, OSError) as err:
        add(Problem("lineage", f"the parent dataset is not reachable: {err}", where=("lineage", "parent", "path")))
    else:
        if ref.dataset_id != cfg.parent_dataset_id:
            add(Problem("lineage", f"the parent {cfg.parent_path} is now dataset {ref.dataset_id}, the lineage "
                        f"records {cfg.parent_dataset_id}", where=("lineage", "parent", "dataset_id")))
        elif ref.manifest_sha256 != cfg.parent_manifest_sha256:
            add(Problem("lineage", f"the parent {cfg.parent_path} has changed since: its manifest sha256 is "
                        f"{ref.manifest_sha256[:16]}…, the lineage records {cfg.parent_manifest_sha256[:16]}…",
                        where=("lineage", "parent", "manifest_sha256")))
    scores = OutputDir(cfg.scores_path)
    try:
        doc = scores.read_json(MANIFEST)
        digest = scores.sha256(MANIFEST)
    except (OSError, ValueError) as err:
        add(Problem("lineage", f"the scores are not reachable at {cfg.scores_path} ({type(err).__name__})",
                    where=("lineage", "scores", "path")))
        return
    if not isinstance(doc, dict) or doc.get("format") != SCORES_FORMAT:
        add(Problem("lineage", f"{cfg.scores_path} is not a scores folder", where=("lineage", "scores", "path")))
    elif digest != cfg.scores_id:
        add(Problem("lineage", f"the scores at {cfg.scores_path} have changed since: their manifest sha256 is "
                    f"{digest[:16]}…, the lineage records {cfg.scores_id[:16]}…", where=("lineage", "scores",
                                                                                   "scores_id")))
    elif (doc.get("parent") or {}).get("dataset_id") != cfg.parent_dataset_id:
        add(Problem("lineage", "the scores name another parent dataset than the lineage",
                    where=("lineage", "scores")))


def lineage_chain(manifest: dict, depth: int = 8) -> list[dict]:
    """The datasets a derived dataset was made from, nearest first: per step its parent (path, dataset
    id, whether it is reachable and unchanged), the scores, threshold, working point and caps. Empty for
    a converted dataset. Follows parents that are derived themselves, at most ``depth`` steps."""
    chain = []
    while is_derived(manifest.get("config")) and len(chain) < depth:
        lin = manifest.get("lineage") or {}
        parent = lin.get("parent") or {}
        step = {"parent": parent.get("path"), "parent_dataset_id": parent.get("dataset_id"),
                "scores": (lin.get("scores") or {}).get("path"),
                "checkpoint_sha256": (lin.get("scores") or {}).get("checkpoint_sha256"),
                "threshold": lin.get("threshold"), "working_point": lin.get("working_point"),
                "caps": lin.get("caps"), "events_in": (manifest.get("cutflow") or {}).get("entries_in")}
        step["scores_state"] = _scores_state(lin.get("scores") or {})
        try:
            ref, manifest = parent_ref(str(parent.get("path")))
            step["state"] = "unchanged" if ref.manifest_sha256 == parent.get("manifest_sha256") else "changed since"
        except (PipelineError, OSError):
            step["state"] = "not reachable"
            chain.append(step)
            break
        chain.append(step)
    return chain


def _scores_state(scores: dict) -> str:
    """``unchanged``, ``changed since`` (the scores manifest's sha256 is not the recorded one) or ``not
    reachable``, for a lineage's ``scores`` entry."""
    try:
        out = OutputDir(str(scores.get("path")))
        digest = out.sha256(MANIFEST)
    except (PipelineError, OSError):
        return "not reachable"
    return "unchanged" if digest == scores.get("manifest_sha256") else "changed since"
