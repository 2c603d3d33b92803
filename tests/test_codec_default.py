"""The writer's default codec level (zstd:3, chosen by bench/bench_codecs.py's rule) reaches the files."""

from __future__ import annotations

import pyarrow.parquet as pq

from pipeline import convert
from pipeline.config import Compression, ConvertConfig


def test_levels_passed_to_the_writer():
    assert Compression.parse("zstd").writer_kwargs() == {"compression": "zstd", "compression_level": 3}
    assert Compression().writer_kwargs() == {"compression": "zstd", "compression_level": 3}
    assert Compression.parse("zstd:1").writer_kwargs() == {"compression": "zstd", "compression_level": 1}
    assert Compression.parse("lz4").writer_kwargs() == {"compression": "lz4"}
    assert str(Compression.parse("zstd")) == "zstd"  # the spelling (and the config hash) is unchanged


def test_default_files_are_zstd_and_smaller_than_level_1(tmp_path, random_dump):
    sizes = {}
    for spec in ("zstd", "zstd:1"):
        out = tmp_path / spec.replace(":", "_")
        convert([str(random_dump)], str(out), ConvertConfig(schema_version=2, compression=Compression.parse(spec)),
                workers=1, quiet=True)
        shards = sorted(out.glob("**/*.parquet"))
        assert shards
        meta = pq.ParquetFile(shards[0]).metadata
        assert meta.row_group(0).column(1).compression == "ZSTD"
        sizes[spec] = sum(p.stat().st_size for p in shards)
    assert sizes["zstd"] < sizes["zstd:1"]


def test_convert_does_not_import_pandas(tmp_path, random_dump):
    """``pa.array`` imports pandas where installed (0.3 s in every worker): the writer avoids it."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from pipeline.config import ConvertConfig\n"
        "from pipeline import convert\n"
        f"convert([{str(random_dump)!r}], {str(tmp_path / 'o')!r}, ConvertConfig(schema_version=2), workers=1, quiet=True)\n"
        "assert 'pandas' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_arrays_from_buffers_equal_pa_array():
    import numpy as np
    import pyarrow as pa
    import pytest

    from pipeline.transform import _arrow, _one_string

    for values, typ in ((np.arange(5, dtype=np.float32) / 3, pa.float32()), (np.arange(-2, 3, dtype=np.int64), pa.int64()),
                        (np.arange(9, dtype=np.int32)[::2], pa.int32()), (np.arange(3, dtype=np.int64), pa.int32()),
                        (np.zeros(0, np.float32), pa.float32())):
        got = _arrow(values, typ)
        assert got.type == typ and got.equals(pa.array(values, type=typ))
    with pytest.raises(pa.ArrowInvalid):  # a narrowing cast still checks overflow (through pa.array)
        _arrow(np.array([2**40], dtype=np.int64), pa.int32())
    assert _one_string("dump é.root").equals(pa.array(["dump é.root"]))
