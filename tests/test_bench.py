"""`make bench` in smoke size: it runs and writes the fields the issue names (no timing asserted)."""

import json

from smoothgen_exp.bench import main


def test_bench_smoke(tmp_path, oracle):
    from .conftest import CACHE

    out = tmp_path / "latest.json"
    result = main(["--n", "300", "--n0", "20", "--points", "2", "--batch-size", "100", "--repeats", "1",
                   "--cache-dir", str(CACHE), "--out", str(out)])
    saved = json.loads(out.read_text())
    for key in ("certify_over_raw", "n", "batch_size", "points", "malloc_env"):
        assert key in saved
    assert saved["n"] == 300 and saved["points"] == 2 and result["certify_over_raw"] > 0
