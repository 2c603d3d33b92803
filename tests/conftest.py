"""Shared fixtures: raw dumps made in the test (never downloaded) and converted datasets."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from rawdump import convert_dump, random_events, write_dump  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data_samples" / "sample.root"


@pytest.fixture(scope="session")
def random_dump(tmp_path_factory) -> Path:
    """A 500-event hand-made dump in the raw layout (random but well-formed)."""
    path = tmp_path_factory.mktemp("raw") / "random.root"
    write_dump(path, random_events(500, seed=1))
    return path


@pytest.fixture(scope="session")
def sample_root() -> Path:
    if not SAMPLE.exists():
        pytest.skip("data_samples/sample.root is missing")
    return SAMPLE


@pytest.fixture(scope="session")
def converted_sample(tmp_path_factory, sample_root) -> Path:
    """data_samples/sample.root converted with the defaults (schema v2); read-only for tests."""
    from pipeline import convert
    from pipeline.config import ConvertConfig
    from pipeline.schema import latest_version

    out = tmp_path_factory.mktemp("converted") / "dataset"
    convert([str(sample_root)], str(out), ConvertConfig(schema_version=latest_version()), workers=1, quiet=True)
    return out


@pytest.fixture
def dataset(request):
    """data_samples/sample.root converted; the converted random dump where the sample is absent (the
    training tests' dataset)."""
    try:
        return request.getfixturevalue("converted_sample")
    except pytest.skip.Exception:
        return request.getfixturevalue("converted_random")


@pytest.fixture(scope="session")
def converted_random(tmp_path_factory, random_dump) -> Path:
    """The random dump converted in 3 units (shards) with the defaults; read-only for tests."""
    return convert_dump(random_dump, tmp_path_factory.mktemp("converted") / "random", shard_events=200,
                        row_group_size=50)


@pytest.fixture(scope="session")
def converted_random_5x5(tmp_path_factory, random_dump) -> Path:
    """The random dump in many small shards and row groups (5 shards x 5 row groups); read-only."""
    return convert_dump(random_dump, tmp_path_factory.mktemp("multi") / "ds", shard_events=100, row_group_size=20)


@pytest.fixture(scope="session")
def converted_random_v1(tmp_path_factory, random_dump) -> Path:
    """The random dump converted at schema version 1 (no eta)."""
    from pipeline import convert
    from pipeline.config import ConvertConfig

    out = tmp_path_factory.mktemp("converted") / "random_v1"
    convert([str(random_dump)], str(out), ConvertConfig(schema_version=1), workers=1, quiet=True)
    return out


@pytest.fixture
def dataset_copy(tmp_path, converted_random) -> Path:
    """A writable copy of a converted dataset, for tests that damage it."""
    dst = tmp_path / "copy"
    shutil.copytree(converted_random, dst)
    return dst


from grid_fixtures import slurm, xrootd_server  # noqa: E402, F401 - real grid services (skipped when absent)


def pytest_unconfigure(config) -> None:
    """At interpreter exit the XRootD client's finalizer walks every live object with ``isinstance``,
    which touches torch's deprecated ``torch.distributed.reduce_op`` and prints a FutureWarning after
    the test summary: noise from two libraries, not from this project."""
    import atexit
    import warnings

    def quiet() -> None:  # registered last, so it runs before the XRootD finalizer (atexit is LIFO)
        warnings.filterwarnings("ignore", message=r".*torch\.distributed\.reduce_op.*", category=FutureWarning)

    atexit.register(quiet)
