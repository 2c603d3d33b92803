"""The documentation: the site builds with warnings as errors, the README is a user README, and the
pages cover what they promise (every public API name, the raw input format, the version scheme)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
README = REPO / "README.md"
#: Words that belong to a development log, not to user-facing text.
DIARY = [r"\bissue \d+", r"\bissues? \d+", r"\(issue", r"\bthe seed\b", r"\bthe seed's\b", r"\bbuilders?\b",
         r"\bthis session\b", r"\bthis morning\b", r"\bthis evening\b", r"\bthe day before\b",
         r"\bbefore this change\b", r"\btoday's code\b", r"\bthe first build\b"]


def _user_pages() -> list[Path]:
    return [README, REPO / "CHANGELOG.md", REPO / "data_samples" / "README.md", *sorted(DOCS.rglob("*.md"))]


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None,
                    reason="mkdocs is not installed (pip install -e '.[docs]'; `make test` installs it)")
def test_the_site_builds_with_warnings_as_errors(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site"),
                          "--config-file", str(REPO / "mkdocs.yml")], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    site = tmp_path / "site"
    cli = (site / "reference" / "cli" / "index.html").read_text()
    from click import Context

    from pipeline.cli import main

    for command in main.list_commands(Context(main)):  # every command, the lazily loaded ones too
        assert f'id="muon-pipeline-{command}"' in cli, command  # generated from click
    api = (site / "reference" / "api" / "index.html").read_text()
    assert 'id="pipeline.dataset.read_dataset"' in api  # the API reference is generated from docstrings
    for page in ("raw-format", "benchmarks", "design", "guide/data-model", "guide/training", "limitations"):
        assert (site / page / "index.html").is_file(), page


def test_the_api_page_lists_every_public_name():
    import pipeline

    listed = set(re.findall(r"^::: (pipeline\.[\w.]+)$", (DOCS / "reference" / "api.md").read_text(), re.M))
    wanted = {f"{module}.{name}" for name, module in pipeline._PUBLIC.items()}
    assert wanted == listed, f"missing: {wanted - listed}, not public: {listed - wanted}"


def test_every_page_is_in_the_site_navigation():
    nav = (REPO / "mkdocs.yml").read_text()
    for page in DOCS.rglob("*.md"):
        assert str(page.relative_to(DOCS)) in nav, page


def test_the_readme_is_a_user_readme():
    text = README.read_text()
    lines = text.splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines; move details to docs/"
    for title in ("## Install", "## The two commands", "## Quick tour", "## Cheat-sheet", "## Links"):
        assert title in text, title
    assert "make demo" in text and "make test" in text and "TORCH_INDEX" in text
    cheat = text[text.index("## Cheat-sheet"):text.index("## Links")]
    assert len(re.findall(r"^\*\*\d+\. ", cheat, re.M)) == 10
    # honest times: the tour's table holds measured figures, not placeholders
    assert not re.search(r"\b[A-Z_]{6,}_TIME\b|FIRST_DATASET\b", text)


@pytest.mark.parametrize("page", _user_pages(), ids=lambda p: str(p.relative_to(REPO)))
def test_no_development_log_in_user_facing_text(page):
    text = page.read_text()
    for pattern in DIARY:
        m = re.search(pattern, text, re.I)
        assert m is None, f"{page.relative_to(REPO)}: {m.group(0)!r} near {text[max(m.start() - 60, 0):m.end() + 60]!r}"


def test_relative_links_in_the_readme_and_the_docs_resolve():
    for page in [README, REPO / "data_samples" / "README.md", *DOCS.rglob("*.md")]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            assert (page.parent / target).exists(), f"{page.relative_to(REPO)} links to missing {target}"


def test_the_raw_format_page_is_the_one_the_code_points_to():
    page = (DOCS / "raw-format.md").read_text()
    for branch in ("eventNumber", "spacePoint_globEdgeLowX", "spacePoint_truthLink", "truthMuon_q", "MuonHitDump"):
        assert branch in page, branch
    assert "docs/raw-format.md" in (REPO / "data_samples" / "README.md").read_text()
    assert "docs/raw-format.md" in (REPO / "tests" / "rawdump.py").read_text()
    assert "shared/reference" not in (REPO / "data_samples" / "README.md").read_text()


def test_license_and_version_scheme():
    from pipeline._version import __version__

    assert "Apache License" in (REPO / "LICENSE").read_text() and "Version 2.0" in (REPO / "LICENSE").read_text()
    assert 'license = { text = "Apache-2.0" }' in (REPO / "pyproject.toml").read_text()
    changelog = (REPO / "CHANGELOG.md").read_text()
    assert "vMAJOR.MINOR.PATCH" in changelog and "pipeline/_version.py" in changelog
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)


def test_every_benchmark_figure_has_a_date_and_a_command():
    text = (DOCS / "benchmarks.md").read_text()
    assert "Machine A" in text
    rows = [ln for ln in text.splitlines() if re.match(r"\| 20\d\d-", ln)]  # the table rows start with their date
    assert len(rows) >= 10
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert re.match(r"20\d\d-\d\d-\d\d: ", cells[0]) and ("bench/" in cells[1] or cells[1] == "same"), row
    for section in re.split(r"^## ", text, flags=re.M)[1:]:
        assert re.search(r"20\d\d-\d\d-\d\d", section), section.splitlines()[0]
