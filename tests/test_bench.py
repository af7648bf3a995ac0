"""`make bench` in smoke size: it runs and writes the fields the issue names (no timing asserted)."""

import json
from types import SimpleNamespace

import pytest
import torch

from smoothgen_exp.bench import known_rate_bet, main
from smoothgen_exp.stats import cp_lower


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
    assert set(saved["seq_known_rate"]) == {"0", "0.8"}
    assert saved["n"] == 300 and saved["points"] == 2 and result["certify_over_raw"] > 0


def _drive(program, votes: torch.Tensor):
    """Run a sampling program on fixed votes (1 = the label) and return its value."""
    done = 0
    try:
        draw = next(program)
        while True:
            labels, done = votes[done:done + draw.num], done + draw.num
            draw = program.send(SimpleNamespace(labels=labels))
    except StopIteration as stop:
        return stop.value


def test_the_known_rate_bet_is_the_likelihood_ratio_test():
    """The clairvoyant comparator bets the likelihood ratio of the told p against p*: with p = 0.99 and
    p* = 0.9, log K after h hits and m misses is h log(1.1) + m log(0.1), so all hits cross log(1/alpha)
    at sample 73, and one early miss delays it to sample 98. Items told p <= p* cost nothing; the CP
    test at the budget decides the rest."""
    hits = torch.ones(200, dtype=torch.long)
    assert _drive(known_rate_bet(1, 0.99, 0.9, 200, 1e-3, 0.0), hits) == (True, 73)
    one_miss = hits.clone()
    one_miss[4] = 0
    assert _drive(known_rate_bet(1, 0.99, 0.9, 200, 1e-3, 0.0), one_miss) == (True, 98)
    assert _drive(known_rate_bet(1, 0.9, 0.9, 200, 1e-3, 0.0), hits) == (False, 0)
    # a bet that cannot cross in 50 samples: the CP test of the 50 votes at alpha_cp decides
    assert cp_lower(50, 50, 0.01) > 0.9 > cp_lower(49, 50, 0.01)
    assert _drive(known_rate_bet(1, 0.99, 0.9, 50, 1e-9, 0.01), hits[:50]) == (True, 50)
    assert _drive(known_rate_bet(1, 0.99, 0.9, 50, 1e-9, 0.01), one_miss[:50]) == (False, 50)


def test_sequential_budget_script_plans_the_clairvoyant_skips():
    """scripts/sequential_budget.py --clairvoyant: the told-p bet on every item above p*, then told which to
    skip; skipping never costs more samples and keeps the certified count within one item of fixed n (or, where
    the bet certifies fewer, all it certifies). (2026-12-07: the README called the told-p bet a floor on the
    samples; it spent the whole budget on items it could not certify.)"""
    import re
    import subprocess
    import sys

    from .conftest import CACHE, REPO

    res = subprocess.run([sys.executable, "scripts/sequential_budget.py", "--points", "12", "--seeds", "2", "--n", "2000",
                          "--clairvoyant", "--cache-dir", str(CACHE)], cwd=REPO, capture_output=True, text=True,
                         stdin=subprocess.DEVNULL, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    head = re.search(r"certifies (\d+) \(([\d.]+) expected on fresh votes\)", res.stdout)
    every = re.search(r"every item above p\*: ([\d.]+) of n, ([\d.]+) certified", res.stdout)
    told = re.search(r"skip \((\d+) skipped\): ([\d.]+) of n, ([\d.]+) certified \(fixed n: (\d+)\)", res.stdout)
    assert head and every and told, res.stdout
    fixed = int(told[4])
    assert int(head[1]) == fixed and 0 <= float(head[2]) <= 12
    assert float(told[2]) <= float(every[1]) and float(told[3]) >= min(fixed - 1, float(every[2])) - 1e-9
