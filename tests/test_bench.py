"""`make bench` in smoke size: it runs and writes the fields the issue names (no timing asserted)."""

import json

import pytest
import torch

from smoothgen_exp.bench import known_rate_bet, main
from smoothgen_exp.packing import Samples
from smoothgen_exp.stats import cp_lower


@pytest.mark.slow     # 80 s of `make test` on 2 cores; `make bench` is the measurement, this its smoke
def test_bench_smoke(tmp_path, oracle):
    from .conftest import CACHE

    out = tmp_path / "latest.json"
    result = main(["--n", "300", "--n0", "20", "--points", "2", "--batch-size", "100", "--repeats", "1",
                   "--seq-points", "5", "--seq-max-n", "2000", "--packed-items", "3", "--lm-width", "64", "--lm-layers", "2",
                   "--lm-heads", "2", "--lm-tokens", "8", "--lm-prompt", "8", "--lm-n", "4", "--lm-rounds", "1", "--smollm2-items", "2",
                   "--cache-dir", str(CACHE), "--out", str(out)])
    saved = json.loads(out.read_text())
    for key in ("certify_over_raw", "n", "batch_size", "points", "malloc_env", "seq_samples_ratio", "kv_speedup",
                "smoothed_over_plain", "packed_speedup_n100", "packed_over_floor_n100", "packed_over_full_floor_n1000",
                "packed_unavoidable_over_floor_n100",
                "smollm2_smoothed_over_plain", "smollm2_plain_tokens_per_s", "packed_lm_over_floor",
                "packed_smollm2_over_floor"):
        assert key in saved
    assert set(saved["seq_by_radius"]) == {"0.25", "0.5", "1"}
    assert saved["seq_budget_share"] == 0.8 and "seq_samples_ratio" in saved["seq_with_budget_test"]
    assert "seq_samples_ratio" in saved["seq_predictive_give_up"]
    assert set(saved["seq_known_rate"]) == {"0", "0.8"}
    assert saved["n"] == 300 and saved["points"] == 2 and result["certify_over_raw"] > 0
    # each above the forward floor; the smoke's one timing of 3 items can put packed below the sum of its
    # separately timed costs (3.58 once), so the two are not compared here
    assert saved["packed_over_floor_n100"] > 1 and saved["packed_unavoidable_over_floor_n100"] > 1
    assert saved["targets"]["packed_over_floor_n100"]["met"] == (saved["packed_over_floor_n100"] <= 1.3)
    assert {"certify_over_raw", "seq_samples_ratio", "seq_acc_delta", "packed_lm_over_floor"} <= set(saved["targets"])


def _drive(program, votes: torch.Tensor):
    """Run a sampling program on fixed votes (1 = the label) and return its value."""
    done = 0
    try:
        draw = next(program)
        while True:
            labels, done = votes[done:done + draw.num], done + draw.num
            draw = program.send(Samples.of_labels(draw, labels))
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


def _script(name: str):
    import importlib.util

    from .conftest import REPO

    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sequential_budget():
    return _script("sequential_budget")


def test_sequential_draws_script_gives_make_benchs_draw_at_seed_0_and_other_draws_after(oracle, capsys):
    """scripts/sequential_draws.py: its run seed 0 is `make bench`'s comparison (bench_sequential at its
    default run seed: fixed n, sequential and sequential_bayes at their config defaults), number for
    number; seed 1 draws other votes."""
    from types import SimpleNamespace

    from smoothgen_exp.bench import bench_sequential
    from smoothgen_exp.config import SequentialBayesConf, SequentialConf

    from .conftest import CACHE

    rows = _script("sequential_draws").main(["--seeds", "2", "--points", "6", "--n", "600", "--cache-dir", str(CACHE)])
    args = SimpleNamespace(seq_points=6, n=600, n0=100, alpha=0.001, sigma=0.25, batch_size=1000, seq_radii=[0.5],
                           target_radius=0.5, seq_n0=100, seq_max_n=600, give_up_alpha=SequentialConf.give_up_alpha,
                           seq_budget_share=0.8, seq_worth=SequentialBayesConf.worth)
    bench = bench_sequential(oracle, args, torch.device("cpu"))
    bayes, predictive = bench["seq_bayes_by_radius"]["0.5"], bench["seq_predictive_give_up"]
    assert rows[0] == {"fixed": bench["fixed_certified_accuracy_at_r"],
                       "sequential": (bench["seq_certified_accuracy_at_r"], bench["seq_samples_ratio"]),
                       "sequential_predictive": (predictive["seq_certified_accuracy"], predictive["seq_samples_ratio"]),
                       "sequential_bayes": (bayes["seq_certified_accuracy"], bayes["seq_samples_ratio"])}
    assert rows[1]["sequential"][1] != rows[0]["sequential"][1]
    assert "| mean |" in capsys.readouterr().out


def test_clairvoyant_skips_the_costliest_items_per_certificate_and_stays_within_one_item():
    """scripts/sequential_budget.py --clairvoyant (2026-12-07: the README called the told-p bet a floor on the
    samples; it spent the whole budget on items it could not certify)."""
    clairvoyant = _sequential_budget().clairvoyant
    used, certified = torch.tensor([0.0, 1e4, 1e4, 500]), torch.tensor([0.0, 0.0, 0.5, 1.0])
    # fixed n certified 2: keep >= 1; the never-certified item goes first, then the one at 2e4 per certificate
    assert clairvoyant(used, certified, fixed=2, n=10_000) == (2, 500 / 4 / 1e4, 1.0)
    # fixed n certified 3: 1.5 certified in all is below 2, so only the item it never certifies goes
    assert clairvoyant(used, certified, fixed=3, n=10_000) == (1, 10_500 / 4 / 1e4, 1.5)
    # the costliest per certificate go first: the cheap certain item stays, the two half-certain ones go
    cheap_first = clairvoyant(torch.tensor([500.0, 1e4, 1e4]), torch.tensor([1.0, 0.5, 0.5]), fixed=2, n=10_000)
    assert cheap_first == (2, 500 / 3 / 1e4, 1.0)


def test_fixed_n_on_fresh_votes_counts_the_least_certifying_count():
    """k = 9,818 is the least count of 10,000 whose Clopper-Pearson bound (alpha 0.001) exceeds p* = Phi(2):
    at p = k/n an item certifies on fresh votes about half the time, far below p* never, far above always."""
    from scipy.stats import binom, norm

    fresh = _sequential_budget().fixed_on_fresh_votes
    p_star = float(norm.cdf(2.0))
    assert cp_lower(9817, 10_000, 0.001) < p_star < cp_lower(9818, 10_000, 0.001)
    assert fresh([0.9818], 10_000, 0.001, p_star) == pytest.approx(float(binom.sf(9817, 10_000, 0.9818)))
    assert 0.45 < fresh([0.9818], 10_000, 0.001, p_star) < 0.56
    assert fresh([0.5, 0.97], 10_000, 0.001, p_star) < 1e-6 and fresh([0.999] * 3, 10_000, 0.001, p_star) == pytest.approx(3)


def test_sequential_budget_script_runs_with_the_clairvoyant():
    import subprocess
    import sys

    from .conftest import CACHE, REPO

    res = subprocess.run([sys.executable, "scripts/sequential_budget.py", "--points", "12", "--seeds", "2", "--n", "2000",
                          "--clairvoyant", "--cache-dir", str(CACHE)], cwd=REPO, capture_output=True, text=True,
                         stdin=subprocess.DEVNULL, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "expected on fresh votes" in res.stdout and "clairvoyant told which items to skip" in res.stdout


def test_sequential_budget_script_decides_with_sequential_bayes(capsys):
    from .conftest import CACHE

    _sequential_budget().main(["--points", "8", "--seeds", "1", "--n", "1000", "--bayes-worth", "3",
                               "--cache-dir", str(CACHE)])
    out = capsys.readouterr().out
    assert "sequential_bayes (worth=3, budget 1000) " in out and "| p_A | items |" in out


def test_sequential_budget_script_decides_with_the_table_on_a_longer_horizon(capsys):
    from .conftest import CACHE

    _sequential_budget().main(["--points", "8", "--seeds", "1", "--n", "1000", "--give-up", "table", "--worth", "2",
                               "--horizon", "1311", "--cache-dir", str(CACHE)])
    out = capsys.readouterr().out
    assert "sequential (give_up=table, worth=2, budget 1311) " in out and "| p_A | items |" in out
    # every item is in one bucket (review: float32 rates of exactly 1 fell outside [0.99, 1 + 1e-9))
    assert sum(int(line.split("|")[2]) for line in out.splitlines() if line.startswith("| [")) == 8


def test_targets_say_which_ratios_meet_the_issues_bounds():
    from smoothgen_exp.bench import targets

    got = targets({"certify_over_raw": 1.06, "seq_samples_ratio": 0.0999, "seq_acc_delta": -0.01,
                   "packed_lm_over_floor": 1.3})
    assert {k: t["met"] for k, t in got.items()} == {"certify_over_raw": False, "seq_samples_ratio": True,
                                                     "packed_lm_over_floor": True, "seq_acc_delta": True}
    assert not targets({"seq_acc_delta": 0.02})["seq_acc_delta"]["met"]
