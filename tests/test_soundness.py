"""Issue 11: every printed number is a guarantee or says plainly that it is not.

Each test holds a counterexample that the code before the issue got wrong.
"""

import json
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import norm

from smoothgen_exp.aggregators.token_average import tv_shift_factor
from smoothgen_exp.certifiers.check import check_certificate
from smoothgen_exp.certifiers.cohen import CohenCertifier
from smoothgen_exp.certifiers.distribution import DistributionCertifier
from smoothgen_exp.certifiers.semantic import SemanticCertifier
from smoothgen_exp.certifiers.sequential import SequentialCertifier
from smoothgen_exp.context import ItemContext
from smoothgen_exp.errors import ConfigError
from smoothgen_exp.records import summarize
from smoothgen_exp.smoothing.gaussian import GaussianNoise
from smoothgen_exp.stats import tv_bound
from smoothgen_exp.tables import by_validity, formatted, results_table

from .conftest import CACHE, cli


# ------------------------------------------------------------------ toys with a known answer
class Identity:
    """G(z) = z (one coordinate): the oracle sees the noised condition itself."""

    def generate(self, z, gen, shared=False):
        return z


class QuantileOracle:
    """Votes class 0 when Phi(z / s) < q: with z ~ N(x, s^2) and x = 0 the vote rate is exactly q."""

    num_classes = 2
    has_classes = True

    def __init__(self, q: float, s: float, shift: float = 0.0):
        self.q, self.s, self.shift = q, s, shift

    def classify(self, out):
        u = torch.special.ndtr((out.reshape(len(out), -1)[:, 0] - self.shift) / self.s)
        return (u >= self.q).long()


def toy_ctx(oracle, sigma=1.0, x=0.0, item="toy"):
    item = SimpleNamespace(item_id=item, condition="", label=0)
    return ItemContext(item, torch.tensor([x], dtype=torch.float64), Identity(), oracle, GaussianNoise(sigma), 0,
                       10_000)


# ------------------------------------------------------------------ 1. the symmetric oracle-error model
def test_symmetric_oracle_error_certifies_a_class_the_smoothed_classifier_does_not_predict():
    """True P(class 0) = 0.45; false positives into class 0 at rate 0.2, no false negatives: the oracle
    votes 0 at rate 0.45 + 0.55 * 0.2 = 0.56. n = 100,000, alpha = 0.001."""
    ctx = toy_ctx(QuantileOracle(0.56, 1.0))
    common = dict(n0=1000, n=100_000, alpha=0.001, batch_size=50_000, oracle_error=0.2, oracle_error_alpha=0.001)
    bounded = CohenCertifier(**common, oracle_error_model="bounded").certify(ctx)
    symmetric = CohenCertifier(**common, oracle_error_model="symmetric").certify(ctx)
    assert not bounded["certified"] and bounded["p_lower"] == pytest.approx(0.443, abs=0.005)
    assert bounded["certificate_valid"] and bounded["confidence"] == pytest.approx(0.998)
    # the paper's correction certifies class 0 although P(class 0) = 0.45 < 1/2 ...
    assert symmetric["certified"] and symmetric["prediction"] == 0 and symmetric["p_lower"] > 0.58
    # ... so its rows are flagged, and the summary never reports them as certified
    assert symmetric["certificate_valid"] is False
    df = pd.DataFrame([{"variant": "smoothed", "item_id": "a", "label": 0, "time_total_s": 1.0,
                        "correct": True, **symmetric}])
    s = summarize(df, [0.0, 0.05], CohenCertifier(**common, oracle_error_model="symmetric"))
    assert not any(k in s for k in ("certified_accuracy", "mean_radius", "average_certified_radius",
                                    "confidence"))
    assert s["nominal_certified_accuracy"]["0.05"] == 1.0 and s["certificate_valid"] is False


def test_oracle_error_needs_its_confidence():
    with pytest.raises(ConfigError, match="oracle_error_alpha"):
        CohenCertifier(oracle_error=0.05)
    with pytest.raises(ConfigError, match="oracle_error_alpha"):
        SemanticCertifier(oracle_error=0.05)
    assert CohenCertifier(alpha=0.001, oracle_error=0.05, oracle_error_alpha=0.01).confidence == pytest.approx(0.989)
    assert CohenCertifier(alpha=0.001).confidence == pytest.approx(0.999)


# ------------------------------------------------------------------ 3. one validity rule, everywhere
def bound_rows(valid: bool, items=("a", "b")):
    rows = []
    for i, item in enumerate(items):
        common = {"item_id": item, "label": 1, "time_total_s": 1.0, "certificate_valid": valid}
        rows.append({**common, "variant": "baseline", "prediction": 1, "correct": True})
        rows.append({**common, "variant": "smoothed", "prediction": 1, "correct": True, "certified": True,
                     "abstained": False, "radius": 0.2 + i, "confidence": 0.999,
                     "bound_tv_eps0.1": 0.04, "bound_harm_eps0.1": 0.3, "bound_event_p_upper": 0.2})
    return rows


def test_invalid_rows_reach_no_certified_summary_key():
    """Adaptive noise used to leave every bound_* and mean_bound_* printed as a certificate."""
    s = summarize(pd.DataFrame(bound_rows(False)), [0.0, 0.5], DistributionCertifier())
    certified = [k for k in s if k.startswith(("mean_bound", "certified_", "mean_radius", "average_certified",
                                               "confidence", "abstain_rate"))]
    assert certified == []
    assert s["nominal_mean_bound_tv_eps0.1"] == pytest.approx(0.04) and "nominal_certified_accuracy" in s
    # mixed runs: the certified keys come from the valid rows only
    mixed = pd.DataFrame(bound_rows(True, ("a",)) + bound_rows(False, ("b", "c")))
    s = summarize(mixed, [0.0, 0.5], DistributionCertifier())
    assert s["certified_accuracy"] == {"0": 1.0, "0.5": 0.0} and s["mean_radius"] == pytest.approx(0.2)
    assert s["nominal_mean_radius"] == pytest.approx(0.7) and s["certificate_valid"] is False


def test_tables_and_figures_label_nominal_values(tmp_path):
    for name, valid in (("valid", True), ("adaptive", False)):
        run = tmp_path / name
        (run / "records").mkdir(parents=True)
        df = pd.DataFrame(bound_rows(valid))
        df.to_parquet(run / "records" / "part-000-00000.parquet")
        (run / "summary.json").write_text(json.dumps({"items": 2, **summarize(df, [0.0], DistributionCertifier())}))
    table = results_table(sorted(tmp_path.iterdir()), ["certified_accuracy/0"], by=[])
    cells = formatted(table, ["certified_accuracy/0"]).iloc[:, -1].tolist()
    assert [c.endswith("(nominal)") for c in cells] == [True, False]          # adaptive, valid (sorted)
    parts = by_validity(pd.DataFrame(bound_rows(True, ("a",)) + bound_rows(False, ("b",))))
    assert [nominal for _, nominal in parts] == [False, True]


# ------------------------------------------------------------------ 4. the violation check
def test_abstained_item_with_a_zero_distance_attack_is_no_violation():
    ctx = toy_ctx(QuantileOracle(0.4, 1.0))
    row = {"certified": False, "abstained": True, "radius": 0.0, "prediction": -1, "p_lower": 0.3}
    out = check_certificate(CohenCertifier(), ctx, row, ctx.x.clone(), 1000, 0.001)
    assert out == {"attack_within_radius": False, "certificate_checked": False, "certificate_violation": None}


def test_a_planted_violation_is_reported_and_a_sound_certificate_is_not():
    """The base classifier votes class 0 only on x < -0.5: a claimed radius of 2 around x = 0 is false."""
    sigma = 1.0
    oracle = QuantileOracle(q=0.0, s=sigma)                     # all votes class 1 ...
    oracle.classify = lambda out: (out.reshape(len(out), -1)[:, 0] > -0.5).long()   # ... unless z < -0.5
    ctx = toy_ctx(oracle, sigma)
    p_true = norm.cdf(0.5 / sigma)                              # P(class 1) at x = 0: 0.69
    claimed = {"certified": True, "abstained": False, "radius": 2.0, "prediction": 1, "p_lower": 0.977,
               "certificate_valid": True}
    z = torch.tensor([-1.5], dtype=torch.float64)              # inside the claimed radius; p_1(z) = Phi(-1) = 0.16
    out = check_certificate(CohenCertifier(), ctx, claimed, z, 2000, 0.001)
    assert out["certificate_checked"] and out["certificate_violation"]
    assert out["certificate_check_upper"] < out["certificate_promise"]
    # the honest certificate at the same point: p_lower just below the truth, radius sigma Phi^-1(p)
    honest_p = p_true - 0.01
    honest = {**claimed, "p_lower": honest_p, "radius": sigma * norm.ppf(honest_p)}
    z = torch.tensor([-0.45], dtype=torch.float64)             # within the honest radius 0.47
    out = check_certificate(CohenCertifier(), ctx, honest, z, 2000, 0.001)
    assert out["certificate_checked"] and not out["certificate_violation"]
    # an invalid certificate is not checked at all
    out = check_certificate(CohenCertifier(), ctx, {**claimed, "certificate_valid": False}, z, 2000, 0.001)
    assert not out["certificate_checked"] and not out["attack_within_radius"]


def test_sound_certificates_are_not_reported_violated_at_rate_above_alpha():
    """Worst case for the checker: the attacked point sits exactly where the true p_A equals the promise."""
    sigma, alpha, reports = 1.0, 0.01, 0
    oracle = QuantileOracle(q=0.0, s=sigma)
    oracle.classify = lambda out: (out.reshape(len(out), -1)[:, 0] > -1.0).long()    # p_1(x) = Phi(x + 1)
    p_lower = norm.cdf(1.0)                                      # exact at x = 0, radius 1
    row = {"certified": True, "abstained": False, "radius": 1.0, "prediction": 1, "p_lower": p_lower, "certificate_valid": True}
    for seed in range(200):
        ctx = toy_ctx(oracle, sigma, item=f"s{seed}")
        z = torch.tensor([-0.9], dtype=torch.float64)            # p_1(z) = Phi(0.1) = promise, exactly
        reports += check_certificate(CohenCertifier(), ctx, row, z, 300, alpha)["certificate_violation"]
    assert reports <= 200 * alpha + 3 * math.sqrt(200 * alpha)


# ------------------------------------------------------------------ 5. no ground truth, no accuracy
def test_answers_without_ground_truth_report_a_certified_fraction():
    rows = bound_rows(True)
    for r in rows:
        r["correct"] = r["smoothed_correct"] = None
    s = summarize(pd.DataFrame(rows), [0.0])
    assert "certified_accuracy" not in s and s["certified_fraction"] == {"0": 1.0}
    assert "baseline_accuracy" not in s and "smoothed_accuracy" not in s     # was NaN, printed as nan


# ------------------------------------------------------------------ 11. the ceiling of a configuration
@pytest.mark.parametrize("n,expected", [(100, 1.50), (1000, 2.46), (10_000, 3.20)])
def test_max_certifiable_radius_is_sigma_phi_inv_alpha_to_the_one_over_n(n, expected):
    cert = CohenCertifier(n=n, alpha=0.001)
    assert cert.max_certifiable_radius(1.0) == pytest.approx(expected, abs=0.005)
    assert cert.max_certifiable_radius(0.5) == pytest.approx(0.5 * norm.ppf(0.001 ** (1 / n)))


def test_smallest_certifying_n():
    assert CohenCertifier(n=9, alpha=0.001).max_certifiable_radius(1.0) == 0.0     # 0.001^(1/9) = 0.464
    assert CohenCertifier(alpha=0.001).smallest_n() == 10                          # log2(1000) = 9.97
    # with an oracle-error correction the bar is (1 + eps) / 2
    c = CohenCertifier(alpha=0.001, oracle_error=0.1, oracle_error_alpha=0.001)
    n = c.smallest_n()
    assert c.max_lower_bound(n) > 0.5 >= c.max_lower_bound(n - 1)
    seq = SequentialCertifier(n=1000, alpha=0.001)
    ceiling = seq.max_certifiable_radius(0.25)
    assert 0 < ceiling < CohenCertifier(n=1000, alpha=0.001).max_certifiable_radius(0.25) + 0.5
    assert seq.smallest_n(ceiling * 1.01, 0.25) > 1000 >= seq.smallest_n(ceiling * 0.99, 0.25)


def test_a_configuration_that_cannot_certify_fails_in_one_line(tmp_path):
    res = cli("certifier.n=9", f"cache_dir={CACHE}", f"hydra.run.dir={tmp_path / 'run'}")
    assert res.returncode == 2
    err = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "certifier.n=9" in err[0] and "alpha=0.001" in err[0] and ">= 10" in err[0]
    assert not (tmp_path / "run" / "records").exists()


def test_sequential_target_above_the_ceiling_fails_and_summary_radii_warn(tmp_path):
    res = cli("certifier=sequential", "certifier.n=100", "certifier.target_radius=0.3", "smoothing.sigma=0.1",
              f"cache_dir={CACHE}", f"hydra.run.dir={tmp_path / 'run'}")
    assert res.returncode == 2
    err = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    need = SequentialCertifier(n=100, alpha=0.001, target_radius=0.3).smallest_n(0.3, 0.1)   # 6,751
    assert len(err) == 1 and "certifier.target_radius=0.3" in err[0] and f"certifier.n >= {need}" in err[0]


def test_a_target_no_n_can_reach_says_so():
    """target 0.1 at noise scale 0.0097 needs p* = Phi(10.3), 1 - 1e-24: no n reaches it, and the error
    says so instead of "use certifier.n >= None" (seen with smoothing=calibrated)."""
    from smoothgen_exp.checks import certified_ceiling
    from smoothgen_exp.errors import ConfigError

    certifier = SequentialCertifier(n=100, alpha=0.001, target_radius=0.1)
    with pytest.raises(ConfigError, match=r"lower it or raise the noise \(no n up to 1e9 reaches it\)") as err:
        certified_ceiling(certifier, GaussianNoise(0.0097), [])
    assert "None" not in str(err.value)


def test_run_summary_reports_the_ceiling(tiny_run):
    run_dir, res = tiny_run
    summary = json.loads((run_dir / "summary.json").read_text())
    sigma, n = summary["sigma"], summary["n"]
    assert summary["max_certifiable_radius"] == pytest.approx(sigma * norm.ppf(summary["alpha"] ** (1 / n)))
    assert "largest certifiable radius" in res.stdout + res.stderr
    assert summary["confidence"] == pytest.approx(1 - summary["alpha"] - 0.001)   # and PREDICT at aggregator.alpha


# ------------------------------------------------------------------ 12. TV factor of token averaging
def test_tv_factor_covers_the_averaged_greedy_toy():
    """Per-copy p(A) linear in z: the averaged greedy token is 1[mean z > 0], P_x(A) = Phi(sqrt(n) x / sigma).
    At n = 16, ||delta|| = 0.25 sigma, between x = 0 and x = delta the exact TV is 0.341."""
    n, sigma, delta = 16, 1.0, 0.25
    exact = norm.cdf(math.sqrt(n) * delta / sigma) - norm.cdf(0.0)
    assert exact == pytest.approx(0.341, abs=1e-3)
    assert tv_bound(delta, sigma) < exact                                 # factor 1 (the old row) fails
    assert tv_bound(tv_shift_factor("sequence", n, 32) * delta, sigma) >= exact


def test_tv_factor_of_step_noise_uses_max_new_tokens_not_the_steps_taken():
    """Fresh noise at every step, one copy, T = 2: the token at step t is A iff z_t > 0, and step 0's A is
    EOS. The output law: EOS w.p. p, (B, A) w.p. (1 - p) p, (B, B) w.p. (1 - p)^2, p = Phi(x / sigma).
    Half the runs stop at step 0, where the old rule printed factor sqrt(1) = 1."""
    sigma, T = 1.0, 2

    def law(x):
        p = norm.cdf(x / sigma)
        return np.array([p, (1 - p) * p, (1 - p) ** 2])

    worst = 0.0
    for delta in np.linspace(0.05, 2.0, 40):
        for x in np.linspace(-3, 3, 121):
            exact = 0.5 * np.abs(law(x) - law(x + delta)).sum()
            assert tv_bound(tv_shift_factor("step", 1, T) * delta, sigma) >= exact - 1e-12
            worst = max(worst, exact - tv_bound(delta, sigma))
    assert worst > 0.01                                                  # factor 1 is violated somewhere
    assert tv_shift_factor("step", 16, 32) == pytest.approx(math.sqrt(16 * 32))
    assert tv_shift_factor("sequence", 16, 32) == pytest.approx(4.0)
