"""The embedded Dask cluster (`--scheduler local`) accepts work only from the run that started it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("distributed")
pytest.importorskip("cryptography")

ATTACK = textwrap.dedent("""
    import sys
    from distributed import Client

    addr, marker = sys.argv[1], sys.argv[2]

    def plant():
        open(marker, "w").write("ran")
        return 1

    from distributed.security import Security

    # plain TCP, TLS without credentials, TLS with credentials of its own (a self-made certificate)
    for url, security in ((addr.replace("tls://", "tcp://"), None), (addr, None), (addr, Security.temporary())):
        try:
            client = Client(url, timeout="4s", security=security)
            print("CONNECTED", url, client.submit(plant, pure=False).result(timeout=4))
        except Exception as err:
            print("refused", url, type(err).__name__, str(err)[:80].replace(chr(10), " "))
""")


def test_a_process_without_the_credentials_cannot_submit_work(tmp_path):
    from distributed import Client

    from pipeline.executors import local_cluster

    marker = tmp_path / "marker"
    cluster, security = local_cluster(1)
    try:
        addr = cluster.scheduler_address
        assert addr.startswith("tls://127.0.0.1:")
        # dashboard off unless asked: the scheduler's HTTP server answers health checks only, on loopback
        import urllib.error
        import urllib.request

        http = cluster.scheduler.http_server
        assert http.address == "127.0.0.1" and http.port != 8787
        base = f"http://127.0.0.1:{http.port}"
        assert urllib.request.urlopen(f"{base}/health", timeout=10).status == 200
        for page in ("/status", "/json/identity.json", "/info/main/workers.html"):
            with pytest.raises(urllib.error.HTTPError):
                urllib.request.urlopen(base + page, timeout=10)
        with Client(cluster, security=security) as client:  # the run itself: works
            assert client.submit(lambda x: x + 1, 1).result(timeout=30) == 2
        script = tmp_path / "attack.py"
        script.write_text(ATTACK)
        r = subprocess.run([sys.executable, str(script), addr, str(marker)], capture_output=True, text=True,
                           timeout=120)
        assert "CONNECTED" not in r.stdout, r.stdout + r.stderr
        assert r.stdout.count("refused") == 3, r.stdout + r.stderr
        assert not marker.exists()
    finally:
        cluster.close()


def test_dashboard_needs_local_scheduler(tmp_path):
    from click.testing import CliRunner

    from pipeline.cli import main

    r = CliRunner().invoke(main, ["convert", "x.root", "-o", str(tmp_path / "o"), "--dashboard", ":8787"])
    assert r.exit_code == 2 and "--scheduler local" in r.output


def test_convert_on_the_embedded_cluster_is_identical(tmp_path, random_dump, converted_random):
    """`convert --scheduler local` (TLS) writes the same shards as a serial run."""
    import json

    from click.testing import CliRunner

    from pipeline.cli import main

    out = tmp_path / "dask"
    r = CliRunner().invoke(main, ["convert", str(random_dump), "-o", str(out), "--scheduler", "local", "-j", "2",
                                  "--shard-events", "200", "--row-group-size", "50", "-q"])
    assert r.exit_code == 0, r.output
    shards = [(s["path"], s["sha256"]) for s in json.loads((out / "_manifest.json").read_text())["shards"]]
    ref = [(s["path"], s["sha256"]) for s in json.loads((converted_random / "_manifest.json").read_text())["shards"]]
    assert shards == ref
