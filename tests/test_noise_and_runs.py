"""Noise laws, and each certifier / aggregator option through the CLI on a tiny configuration."""

import math

import numpy as np
import pytest
import torch

from smoothgen_exp.smoothing.calibrated import CalibratedNoise
from smoothgen_exp.smoothing.sensitivity import jtj_estimate

from .conftest import TINY, run_in_process


class LinearModel:
    """G(z) = A z: the Jacobian is A everywhere, so J^T J = A^T A exactly."""

    def __init__(self, a):
        self.a = a

    def encode(self, conditions):
        return torch.zeros(len(conditions), self.a.shape[1], dtype=torch.float64)

    def generate(self, z, gen):
        return z @ self.a.T


class Calib:
    def calibration_conditions(self):
        return ["c"] * 4


def test_jtj_estimate_is_unbiased_on_a_linear_model():
    a = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    est = jtj_estimate(LinearModel(a), torch.zeros(3, dtype=torch.float64), seed=0, probes=4000, draws=1)
    assert torch.allclose(est, a.T @ a, rtol=0.1, atol=0.1 * float((a.T @ a).abs().max()))


def test_calibrated_noise_has_the_fixed_covariance_and_sound_radii():
    a = torch.diag(torch.tensor([3.0, 1.0, 0.2], dtype=torch.float64))
    noise = CalibratedNoise(sigma=0.5, reg=0.1, calibration_items=4, probes=2000)
    noise.setup(LinearModel(a), Calib())
    cov = noise.chol @ noise.chol.T
    assert cov.diagonal().mean() == pytest.approx(0.25, rel=1e-6)           # mean eigenvalue sigma^2
    assert cov[0, 0] < cov[1, 1] < cov[2, 2]                                  # less noise where G is sensitive
    samples = noise.sample_(torch.empty(200_000, 3, dtype=torch.float64), torch.Generator().manual_seed(1))
    assert torch.allclose(samples.T.cov(), cov, atol=0.01)
    p = 0.99
    assert noise.radius(p) == pytest.approx(math.sqrt(noise.lambda_min) * noise.radius_mahalanobis(p))
    assert noise.radius(p) <= 0.5 * noise.radius_mahalanobis(p) + 1e-12 or noise.lambda_min <= 0.25


@pytest.fixture(scope="module")
def option_runs(tmp_path_factory, t2i):
    """One tiny run per option worth checking end to end."""
    root = tmp_path_factory.mktemp("options")
    variants = {
        "semantic": ["certifier=semantic"],
        "output_bound": ["certifier=output_bound", "aggregator=mean"],
        "distribution": ["certifier=distribution"],
        "feature": ["certifier=feature"],
        "center": ["certifier=center", "certifier.n0=1200", "certifier.n=300"],
        "sequential": ["certifier=sequential", "certifier.n=400", "certifier.batch_size=50"],
        "sequential_bayes": ["certifier=sequential_bayes", "certifier.n=400", "certifier.batch_size=50"],
        "pilot": ["certifier.pilot=30", "certifier.oracle_error=0.02", "certifier.oracle_error_alpha=0.001"],
        "symmetric": ["certifier.oracle_error=0.02", "certifier.oracle_error_alpha=0.001",
                      "certifier.oracle_error_model=symmetric"],
        "calibrated": ["smoothing=calibrated", "smoothing.calibration_items=5", "smoothing.probes=8"],
        "adaptive": ["smoothing=adaptive", "smoothing.calibration_items=3", "smoothing.probes=4"],
        "sequential_adaptive": ["certifier=sequential", "certifier.n=400", "certifier.batch_size=50",
                                "smoothing=adaptive", "smoothing.calibration_items=3", "smoothing.probes=4"],
    }
    out = {}
    for name, args in variants.items():
        run_dir = root / name
        out[name] = run_in_process(*TINY, *args, run_dir=run_dir)
    return out


def smoothed(df):
    return df[df.variant == "smoothed"]


def test_semantic_certifier_columns(option_runs):
    df, summary = option_runs["semantic"]
    sm = smoothed(df)
    assert (sm.certifier == "semantic").all() and sm.q_lower.between(0, 1).all()
    assert ((sm.radius > 0) == sm.certified).all() and "certified_accuracy" in summary


def test_output_and_distribution_bounds_are_recorded(option_runs):
    df, summary = option_runs["output_bound"]
    sm = smoothed(df)
    for eps in ("0.1", "0.25", "0.5", "1"):
        assert (sm[f"bound_tv_eps{eps}"] <= sm[f"bound_lip_eps{eps}"] + 1e-12).all()
    assert (sm.diag_rho == 4.0).all() and "mean_bound_mcdiarmid" in summary
    df, summary = option_runs["distribution"]
    sm = smoothed(df)
    assert (sm["bound_harm_eps0.1"] >= sm.bound_event_p_upper).all()
    assert (sm.diag_diameter == 8.0).all() and "mean_bound_w2_eps0.5" in summary


def test_feature_center_and_sequential_columns(option_runs):
    sm = smoothed(option_runs["feature"][0])
    small, large = sm["bound_fcsb_eps0.1"], sm.bound_fcsb_eps1       # NaN: no cosine certified at that eps
    assert (sm.bound_s_lower <= sm.diag_s_hat).all() and ((small >= large) | large.isna()).all()
    assert (large.isna() | small.notna()).all()
    assert "certified_fraction" in option_runs["feature"][1]
    sm = smoothed(option_runs["center"][0])
    assert "bound_eps_out_eps0.1" in sm and "diag_smoothing_error" in sm
    for name in ("sequential", "sequential_bayes"):
        sm = smoothed(option_runs[name][0])
        assert (sm.samples_used <= 20 + 400).all() and sm.sequential_decision.notna().all()
        assert ((sm.radius == 0.1) == sm.certified).all() and (sm.certifier == name).all()
    # give_up=auto through the runner: the designed table at the run's one p*; with noise chosen per input
    # (review: prepare crashed on smoothing=adaptive) the predictive rule, and no certificate is valid
    assert option_runs["sequential"][1]["give_up"] == "auto (table)"
    df, summary = option_runs["sequential_adaptive"]
    assert summary["give_up"] == "auto (predictive)" and summary["give_up_alpha"] == 0.05
    assert (~smoothed(df).certificate_valid.astype(bool)).all() and smoothed(df).sequential_decision.notna().all()


def test_pilot_and_oracle_error_are_recorded(option_runs):
    sm = smoothed(option_runs["pilot"][0])
    assert (sm.pilot_n == 30).all() and sm.pilot_predicted_radius.notna().all()
    assert (sm.oracle_error == 0.02).all() and (sm.oracle_error_model == "bounded").all()
    done = sm[sm.q_lower.notna()]
    assert (done.p_lower <= done.q_lower).all()          # the correction only ever lowers the bound
    # the certificate (alpha), the oracle-error bound (its alpha) and majority's PREDICT (its alpha) hold
    # together by the union bound
    assert np.allclose(sm.confidence, 1 - 0.001 - 0.001 - 0.001) and sm.certificate_valid.all()
    assert np.allclose(smoothed(option_runs["output_bound"][0]).confidence, 1 - 0.001)   # mean: no claim of its own


def test_symmetric_oracle_error_rows_are_nominal_only(option_runs):
    """Issue 11.1: the symmetric model reproduces a paper's number; it is never reported as certified."""
    df, summary = option_runs["symmetric"]
    sm = smoothed(df)
    assert (sm.oracle_error_model == "symmetric").all() and not sm.certificate_valid.astype(bool).any()
    assert summary["certificate_valid"] is False
    assert not [k for k in summary if k.startswith(("certified_", "mean_radius", "acr", "mean_bound_"))]
    assert "nominal_certified_accuracy" in summary
    # its ceiling is nominal too (all-agreeing votes at n = 1,000 and eps = 0.05 gave p_lower = 1: "inf")
    assert "max_certifiable_radius" not in summary and "nominal_max_certifiable_radius" in summary


def test_summaries_are_strict_json_and_a_finished_run_with_resume_false_is_refused(tmp_path, t2i):
    """summary.json held `Infinity` (the symmetric model's nominal radius), which is not JSON: a value that
    is not a finite number is written as null. resume=false on a finished run printed its old summary and
    exited 0; it is refused in one line, as the README says (found by a new user)."""
    import json

    from smoothgen_exp.errors import SmoothgenError
    from smoothgen_exp.records import write_summary

    def strict(constant):
        raise ValueError(f"not JSON: {constant}")

    write_summary(tmp_path, {"nominal_max_certifiable_radius": math.inf, "radii": {"0.5": math.nan}, "a": [1.5]})
    assert json.loads((tmp_path / "summary.json").read_text(), parse_constant=strict) == {
        "nominal_max_certifiable_radius": None, "radii": {"0.5": None}, "a": [1.5]}
    run_dir = tmp_path / "finished"
    run_in_process(*TINY, "certifier.n=100", "dataset.limit=2", "metrics=none", run_dir=run_dir)
    json.loads((run_dir / "summary.json").read_text(), parse_constant=strict)
    with pytest.raises(SmoothgenError, match="resume=false: .* already holds records"):
        run_in_process(*TINY, "certifier.n=100", "dataset.limit=2", "metrics=none", "resume=false", run_dir=run_dir)
    # and before Hydra writes the command's .hydra/ over the finished run's (the start callback refuses)
    from smoothgen_exp.callbacks import ValidateOnStart
    from smoothgen_exp.config import compose_overrides

    cfg = compose_overrides([*TINY, "certifier.n=100", "dataset.limit=2", "metrics=none", "resume=false",
                             f"hydra.run.dir={run_dir}"], hydra_config=True)
    with pytest.raises(SystemExit) as refused:
        ValidateOnStart().on_run_start(config=cfg)
    assert refused.value.code == 2
    # so is another configuration in the directory: Hydra rewrote the old run's .hydra/ with the refused
    # command's config, and tables read its sigma for the old run (found by a new user)
    def start(*overrides):
        ValidateOnStart().on_run_start(config=compose_overrides(
            [*TINY, "dataset.limit=2", "metrics=none", *overrides, f"hydra.run.dir={run_dir}"], hydra_config=True))

    start("certifier.n=100")                                         # the same configuration: it resumes
    with pytest.raises(SystemExit) as refused:
        start("certifier.n=200")
    assert refused.value.code == 2


def test_calibrated_runs_record_both_radii(option_runs):
    sm = smoothed(option_runs["calibrated"][0])
    assert (sm.noise == "calibrated").all() and sm.certificate_valid.all()
    cert = sm[sm.certified]
    assert ((cert.radius - cert.noise_sigma_min * cert.radius_mahalanobis).abs() < 1e-9).all()


def test_adaptive_noise_marks_every_certificate_invalid(option_runs):
    df, summary = option_runs["adaptive"]
    assert (~df.certificate_valid.astype(bool)).all()
    assert summary["certificate_valid"] is False
    assert "certified_accuracy" not in summary and "nominal_certified_accuracy" in summary
