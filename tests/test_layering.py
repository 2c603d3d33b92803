"""The house rules of ``pipeline/``, read from the source (function-level imports included):

* no import cycle between modules (a cycle is named, module by module);
* no module over MAX_LINES lines (a module that long does two jobs; exceptions are listed with a reason);
* the heavy or optional libraries are imported only by the layer that owns them (RULES, also in
  docs/design.md), and the preprocessing never imports the training stage;
* the leaves (the format's names, sizes, the remote policy, the optional dependencies, errors) import
  nothing of the package but other leaves.
"""

from __future__ import annotations

import ast
import fnmatch
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "pipeline"
MAX_LINES = 450
#: Modules allowed over MAX_LINES, with the reason.
LONG_MODULES: dict[str, str] = {}

#: library -> the modules (fnmatch patterns) that may import it.
RULES = {
    "uproot": ["pipeline.source", "pipeline.simulate.writer"],
    "awkward": ["pipeline.source", "pipeline.sizing", "pipeline.features", "pipeline.simulate.*",
                "pipeline.train.evaluate"],  # evaluate: the classical-fit baseline, imported when it runs
    "torch": ["pipeline.train.*"],
    "lightning": ["pipeline.train.*"],
    "matplotlib": ["pipeline.train.plots"],
    "dask": ["pipeline.dask_executor", "pipeline.batch", "pipeline.extras"],
    "distributed": ["pipeline.dask_executor", "pipeline.extras"],
    "dask_jobqueue": ["pipeline.extras"],
    "XRootD": ["pipeline.grid"],
}
#: training modules that stay numpy-only (importable without torch)
NO_TORCH = ["pipeline.train.config", "pipeline.train.command", "pipeline.train.metrics", "pipeline.train.compare",
            "pipeline.train.data", "pipeline.train.data.split", "pipeline.train.data.normalise",
            "pipeline.train.data.chunks", "pipeline.train.data.batches", "pipeline.train.data.deal",
            "pipeline.train.data.info", "pipeline.train.data.epoch", "pipeline.train.task_config",
            "pipeline.train.hitmetrics", "pipeline.train.predict_command"]
LEAVES = ["pipeline._version", "pipeline.errors", "pipeline.format", "pipeline.sizes", "pipeline.remote",
          "pipeline.extras", "pipeline.report", "pipeline.signals"]


def _modules() -> dict[str, Path]:
    mods = {}
    for f in ROOT.rglob("*.py"):
        parts = list(f.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = f
    return mods


def _imports(mods: dict[str, Path]) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(internal edges, external top-level libraries) per module; every import statement counts."""
    internal: dict[str, set[str]] = {m: set() for m in mods}
    external: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        is_pkg = f.name == "__init__.py"
        for node in ast.walk(ast.parse(f.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = m.split(".") if is_pkg else m.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                names = [f"{target}.{a.name}" if f"{target}.{a.name}" in mods else target for a in node.names]
            for name in names:
                if name.split(".")[0] != "pipeline":
                    external[m].add(name.split(".")[0])
                    continue
                while name and name not in mods:
                    name = name.rpartition(".")[0]
                # a package's __init__ is a face: importing a submodule through it is not an edge to it
                if name and name != m and name != "pipeline" and not (m.startswith(name + ".")
                                                                       and mods[name].name == "__init__.py"):
                    internal[m].add(name)
    return internal, external


MODS = _modules()
INTERNAL, EXTERNAL = _imports(MODS)


# Failures are reported with pytrace=False: pytest's assertion repr re-parses this file's source, which
# hit a CPython 3.11 "AST constructor recursion depth mismatch" inside an xdist worker.


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    cycles = _cycles(INTERNAL)
    if cycles:
        pytest.fail("import cycles: " + "; ".join(" <-> ".join(c) for c in cycles), pytrace=False)


def test_no_module_over_the_line_limit():
    long = {m: len(f.read_text().splitlines()) for m, f in MODS.items()}
    over = {m: n for m, n in long.items() if n > MAX_LINES and m not in LONG_MODULES}
    if over:
        pytest.fail(f"modules over {MAX_LINES} lines (split by job, or list with a reason): {over}", pytrace=False)


@pytest.mark.parametrize("library", sorted(RULES))
def test_libraries_are_imported_only_by_their_layer(library):
    bad = sorted(m for m, libs in EXTERNAL.items()
                 if library in libs and not any(fnmatch.fnmatchcase(m, p) for p in RULES[library]))
    if bad:
        pytest.fail(f"{library} imported by {bad}; allowed: {RULES[library]}", pytrace=False)


def test_numpy_only_training_modules_do_not_import_torch():
    bad = sorted(m for m in NO_TORCH if m in MODS and EXTERNAL[m] & {"torch", "lightning"})
    if bad:
        pytest.fail(f"these training modules must stay numpy-only: {bad}", pytrace=False)


def test_preprocessing_never_imports_the_training_stage_and_nothing_imports_the_cli():
    bad = sorted((m, t) for m, ts in INTERNAL.items() for t in ts
                 if t.startswith("pipeline.train") and not m.startswith("pipeline.train"))
    if bad:
        pytest.fail(f"preprocessing modules importing the training stage: {bad}", pytrace=False)
    cli = sorted(m for m, ts in INTERNAL.items() if "pipeline.cli" in ts and m != "pipeline.__main__")
    if cli:
        pytest.fail(f"modules importing the CLI: {cli}", pytrace=False)


def test_leaves_import_only_leaves():
    bad = {m: sorted(INTERNAL[m] - set(LEAVES)) for m in LEAVES if m in MODS and INTERNAL[m] - set(LEAVES)}
    if bad:
        pytest.fail(f"leaf modules importing above themselves: {bad}", pytrace=False)
