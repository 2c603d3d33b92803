"""The writer's default codec level (zstd:3, chosen by bench/bench_codecs.py's rule) reaches the files."""

from __future__ import annotations

import pyarrow.parquet as pq

from pipeline.config import Compression, ConvertConfig
from pipeline.convert import convert


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
