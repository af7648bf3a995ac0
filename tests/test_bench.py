"""`make bench` in smoke size: it runs and writes the fields the issue names (no timing asserted)."""

import json

import pytest

from smoothgen_exp.bench import main


@pytest.mark.slow     # 80 s of `make test` on 2 cores; `make bench` is the measurement, this its smoke
def test_bench_smoke(tmp_path, oracle):
    from .conftest import CACHE

    out = tmp_path / "latest.json"
    result = main(["--n", "300", "--n0", "20", "--points", "2", "--batch-size", "100", "--repeats", "1",
                   "--seq-points", "5", "--seq-max-n", "2000", "--packed-items", "3", "--lm-width", "64", "--lm-layers", "2",
                   "--lm-heads", "2", "--lm-tokens", "8", "--lm-prompt", "8", "--lm-n", "4", "--smollm2-items", "2",
                   "--cache-dir", str(CACHE), "--out", str(out)])
    saved = json.loads(out.read_text())
    for key in ("certify_over_raw", "n", "batch_size", "points", "malloc_env", "seq_samples_ratio", "kv_speedup",
                "smoothed_over_plain", "packed_speedup_n100", "packed_over_floor_n100", "packed_over_full_floor_n1000",
                "smollm2_smoothed_over_plain", "smollm2_plain_tokens_per_s", "packed_lm_over_floor",
                "packed_smollm2_over_floor"):
        assert key in saved
    assert set(saved["seq_by_radius"]) == {"0.25", "0.5", "1"}
    assert saved["seq_budget_share"] == 0.8 and "seq_samples_ratio" in saved["seq_with_budget_test"]
    assert saved["n"] == 300 and saved["points"] == 2 and result["certify_over_raw"] > 0
