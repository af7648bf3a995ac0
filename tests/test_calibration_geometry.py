"""Issue 11, points 6, 7 and 10: calibration data disjoint from the evaluation items and recorded; the
output ball of unit-norm outputs; unlabelled items under the distribution certificate; McDiarmid's bound
for the mean output the row shows."""

import hashlib
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from scipy.stats import norm

from smoothgen_exp.aggregators.majority import Majority
from smoothgen_exp.aggregators.mean import Mean
from smoothgen_exp.certifiers.distribution import DistributionCertifier
from smoothgen_exp.certifiers.output_bound import OutputBoundCertifier, output_ball
from smoothgen_exp.config import DigitsPromptsConf, PromptsCSVConf, _check_node
from smoothgen_exp.context import ItemContext
from smoothgen_exp.data.base import Item
from smoothgen_exp.data.digits import SPLITS, DigitsPrompts
from smoothgen_exp.data.images import DigitImages
from smoothgen_exp.data.prompts import SAMPLE, PromptsCSV
from smoothgen_exp.errors import ConfigError, SmoothgenError
from smoothgen_exp.models.digits import DigitsT2I
from smoothgen_exp.smoothing.adaptive import AdaptiveNoise
from smoothgen_exp.smoothing.calibrated import CalibratedNoise
from smoothgen_exp.smoothing.gaussian import GaussianNoise
from smoothgen_exp.stats import mcdiarmid_mean_bound, tv_bound

ROOT = Path(__file__).resolve().parent.parent


def composed(*overrides):
    from hydra import compose, initialize_config_dir

    from smoothgen_exp.config import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


# ------------------------------------------------------------------------------ point 6: calibration
def assert_disjoint(dataset):
    cal = dataset.calibration_items()
    assert cal, "no calibration items"
    ev = list(dataset)
    assert not {it.item_id for it in cal} & {it.item_id for it in ev}
    assert not {it.condition for it in cal} & {it.condition for it in ev}
    assert dataset.calibration_conditions() == [it.condition for it in cal]
    return cal, ev


def write_csv(path, prompts, labels=None):
    lines = ["prompt,label"] + [f"{p},{'' if labels is None else labels[i]}" for i, p in enumerate(prompts)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_digits_prompts_heldout_calibrates_on_the_training_templates():
    cal, ev = assert_disjoint(DigitsPrompts("heldout"))
    assert len(cal) == 10 * len(SPLITS["train"]) and len(ev) == 10 * len(SPLITS["heldout"])
    assert {it.item_id[:3] for it in cal} == {f"t{t:02d}" for t in SPLITS["train"]}
    with pytest.raises(SmoothgenError, match="split=heldout always calibrates"):
        DigitsPrompts("heldout", calibration_fraction=0.2)


@pytest.mark.parametrize("split", ["train", "all"])
def test_digits_prompts_train_and_all_hold_whole_templates_out(split):
    whole = DigitsPrompts(split)
    assert len(whole) == 10 * len(SPLITS[split])          # fraction 0: the split unchanged, and no calibration
    with pytest.raises(SmoothgenError, match="set dataset.calibration_fraction") as err:
        whole.calibration_items()
    assert "\n" not in str(err.value)
    ds = DigitsPrompts(split, calibration_fraction=0.2)
    cal, ev = assert_disjoint(ds)
    k = math.ceil(0.2 * len(SPLITS[split]))                 # 2 of train's 10 templates, 4 of all's 16
    assert len(cal) == 10 * k and len(ev) == 10 * (len(SPLITS[split]) - k)
    cal_templates = {it.item_id[:3] for it in cal}
    assert cal_templates == {f"t{t:02d}" for t in range(10 - k, 10)}          # training templates only
    assert not cal_templates & {it.item_id[:3] for it in ev}                   # whole templates
    assert len(DigitsPrompts(split, limit=7, calibration_fraction=0.2)) == 7
    assert [it.item_id for it in DigitsPrompts(split, limit=7, calibration_fraction=0.2)] == \
        [it.item_id for it in ev[:7]]                                          # limit after the split
    with pytest.raises(SmoothgenError, match="calibration_fraction"):
        DigitsPrompts(split, calibration_fraction=0.95)


def test_prompts_csv_honours_calibration_fraction_with_a_seedless_hash_split(tmp_path):
    whole = PromptsCSV()
    assert len(whole) == 8                                   # fraction 0: every row is an evaluation item
    ds = PromptsCSV(calibration_fraction=0.25)
    cal, ev = assert_disjoint(ds)
    assert len(cal) == 2 and len(ev) == 6                    # ceil(0.25 * 8)
    assert [it.item_id for it in PromptsCSV(calibration_fraction=0.25)] == [it.item_id for it in ev]
    limited = PromptsCSV(limit=3, calibration_fraction=0.25)
    assert [it.item_id for it in limited] == [it.item_id for it in ev[:3]]   # limit applies after the split
    assert len(PromptsCSV(calibration_fraction=0.5).calibration_items()) == 4
    # the split depends on the prompts, not on their order in the file
    import csv
    rows = list(csv.DictReader(SAMPLE.open()))
    shuffled = tmp_path / "shuffled.csv"
    write_csv(shuffled, [r["prompt"] for r in rows[::-1]], [r["label"] for r in rows[::-1]])
    assert {it.condition for it in PromptsCSV(str(shuffled), calibration_fraction=0.25).calibration_items()} \
        == {it.condition for it in cal}
    # equal prompts fall on the same side
    dup = write_csv(tmp_path / "dup.csv", ["a", "b", "a", "c", "d", "b", "e"])
    for f in (0.2, 0.4, 0.6):
        assert_disjoint(PromptsCSV(str(dup), calibration_fraction=f))
    with pytest.raises(SmoothgenError, match="leaves no evaluation items"):
        PromptsCSV(str(dup), calibration_fraction=0.9)


def test_prompts_csv_without_a_calibration_split_refuses_a_calibrated_noise_law_in_one_line():
    with pytest.raises(SmoothgenError) as err:
        CalibratedNoise(sigma=0.1, calibration_items=2, probes=2).setup(LinearModel(), PromptsCSV())
    msg = str(err.value)
    assert "set dataset.calibration_fraction" in msg and "\n" not in msg
    with pytest.raises(SmoothgenError, match="set dataset.calibration_fraction"):
        AdaptiveNoise(sigma=0.1, calibration_items=2, probes=2).setup(LinearModel(), PromptsCSV())


def test_a_covariance_too_large_to_hold_is_refused_before_any_jacobian():
    """SD 1.5's prompt embedding has 77 x 768 coordinates: its float64 covariance would take 26 GiB."""
    class Wide:
        def encode(self, prompts):
            return torch.zeros(len(prompts), 77, 768)

        def generate(self, z, gen):                  # never reached
            raise AssertionError("a Jacobian was estimated")

    with pytest.raises(SmoothgenError, match=r"59136 coordinates, and its 59136x59136 float64 covariance would take "
                                             r"26\.1 GiB \(at most 4\); use smoothing=gaussian"):
        CalibratedNoise(sigma=0.1, calibration_items=2, probes=2).setup(Wide(), DigitsPrompts(split="heldout"))


def test_digit_images_have_no_calibration_split():
    ds = DigitImages(limit=2)
    for call in (ds.calibration_items, ds.calibration_conditions):
        with pytest.raises(SmoothgenError, match="smoothing=gaussian"):
            call()


def test_calibration_fraction_is_a_validated_config_key():
    for schema in (PromptsCSVConf, DigitsPromptsConf):
        _check_node("dataset", schema, OmegaConf.create({"calibration_fraction": 0.2}))
        with pytest.raises(ConfigError, match=r"dataset.calibration_fraction=1.0: must lie in \[0, 1\)"):
            _check_node("dataset", schema, OmegaConf.create({"calibration_fraction": 1.0}))
    for name in ("digits_prompts", "harmful_prompts"):
        assert composed(f"dataset={name}").dataset.calibration_fraction == 0.0


class LinearModel:
    """G(z) = A z with conditions encoded to a fixed point: J^T J = A^T A."""

    def __init__(self):
        self.a = torch.diag(torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64))

    def encode(self, conditions):
        return torch.ones(len(conditions), 3, dtype=torch.float64)

    def generate(self, z, gen):
        return z @ self.a.T


def short_hash(ids):
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:12]


@pytest.mark.parametrize("law", [CalibratedNoise, AdaptiveNoise])
def test_noise_laws_record_the_items_that_calibrated_them(law):
    ds = DigitsPrompts("train", calibration_fraction=0.2)
    noise = law(sigma=0.1, calibration_items=5, probes=4)
    noise.setup(LinearModel(), ds)
    expected = [it.item_id for it in ds.calibration_items()[:5]]
    assert noise.calibration_ids == expected
    assert not set(noise.calibration_ids) & {it.item_id for it in ds}
    cols = noise.at(torch.ones(3, dtype=torch.float64), LinearModel()).columns()   # what the rows record
    assert cols["noise_calibration_items"] == 5 and cols["noise_calibration_hash"] == short_hash(expected)
    assert noise.columns()["noise_calibration_hash"] == short_hash(expected)


def test_adaptive_ceiling_is_that_of_its_largest_law():
    """The ceiling of an adaptive run's (nominal) radii comes from `l2_scale`: an item's law reaches
    max_scale * sigma, so a ceiling at sigma marked radii some items reach "above the ceiling" (review)."""
    noise = AdaptiveNoise(sigma=0.1, min_scale=0.5, max_scale=3.0, calibration_items=2, probes=2)
    noise.reference = 1e6                                   # every item as insensitive as can be: clipped
    law = noise.at(torch.ones(3, dtype=torch.float64), LinearModel())
    assert law.sigma == pytest.approx(0.3) and noise.l2_scale == pytest.approx(law.l2_scale)


def test_a_calibration_split_that_overlaps_the_evaluation_items_is_refused():
    class Leaky:
        items = [Item("a", "one", 1), Item("b", "two", 2)]

        def calibration_items(self):
            return [Item("c", "two", 2)]

    with pytest.raises(SmoothgenError, match="shares 1 items with its evaluation items"):
        CalibratedNoise(sigma=0.1, calibration_items=5, probes=2).setup(LinearModel(), Leaky())


# ------------------------------------------------------------------------------ point 7: output ball
@pytest.fixture(scope="module")
def tiny_clip():
    cfg = composed("model=tiny_clip_vision")                  # the model and its zero-shot oracle preset
    return instantiate(cfg.model, device="cpu"), instantiate(cfg.oracle, device="cpu")


def clip_ctx(model, oracle, label=3, aggregator=None):
    x = torch.rand(3, model.image_size, model.image_size, generator=torch.Generator().manual_seed(0))
    item = SimpleNamespace(item_id="clip0", condition="", label=label)
    return ItemContext(item, x, model, oracle, GaussianNoise(0.25), 0, 16, aggregator)


def test_unit_norm_clip_features_use_the_unit_ball(tiny_clip):
    model, oracle = tiny_clip
    ball = output_ball(model)
    assert (ball.rho, ball.diameter, ball.geometry) == (1.0, 2.0, "norm")
    ctx = clip_ctx(model, oracle)
    outs = torch.cat(list(ctx.outputs(32, "check")))
    assert outs.norm(dim=1).max() <= 1.0 + 1e-6                    # the premise: unit-norm outputs
    row = OutputBoundCertifier(n=16, alpha=0.01, batch_size=16).certify(ctx)
    assert row["diag_rho"] == 1.0 and row["diag_geometry"] == "norm"
    assert row["bound_mcdiarmid"] == pytest.approx(mcdiarmid_mean_bound(1.0, 16, 0.01 / 2))
    row = DistributionCertifier(n=16, alpha=0.01, batch_size=16).certify(ctx)
    assert row["diag_diameter"] == 2.0 and row["bound_w1_eps0.5"] == pytest.approx(2.0 * tv_bound(0.5, 0.25))


def test_digit_images_keep_the_box():
    ball = output_ball(DigitsT2I)                                  # [0, 1]^64: sqrt(64)/2 around 1/2
    assert (ball.rho, ball.diameter, ball.geometry, ball.centre) == (4.0, 8.0, "box", 0.5)
    # a norm bound looser than the box changes nothing
    loose = SimpleNamespace(output_range=(0.0, 1.0), output_shape=(1, 8, 8), output_norm=10.0)
    assert output_ball(loose).geometry == "box" and output_ball(loose).rho == 4.0


M_SPHERE = 32


class SphereModel:
    """Outputs uniform on the unit sphere whatever z is: h = 0 and E||h_hat||^2 = 1/n exactly, so the
    first term rho/sqrt(n) of McDiarmid's bound is attained; the box radius would be sqrt(32)."""

    output_range, output_shape, output_norm = (-1.0, 1.0), (M_SPHERE,), 1.0

    def generate(self, z, gen):
        g = torch.randn(len(z), M_SPHERE, generator=gen, dtype=torch.float64)
        return g / g.norm(dim=1, keepdim=True)


class FirstCoordinate:
    num_classes = 2

    def classify(self, out):
        return (out.reshape(len(out), -1)[:, 0] > 0).long()


def test_mcdiarmid_with_the_norm_radius_covers_sphere_outputs():
    misses, n = 0, 100
    for seed in range(40):
        item = SimpleNamespace(item_id=f"s{seed}", condition="", label=0)
        ctx = ItemContext(item, torch.zeros(4, dtype=torch.float64), SphereModel(), FirstCoordinate(),
                          GaussianNoise(0.5), seed, 100)
        row = OutputBoundCertifier(n=n, alpha=0.05, batch_size=100).certify(ctx)
        assert row["diag_rho"] == 1.0
        h_hat = sum(out.sum(0) for out in ctx.outputs(n, "mean")) / n       # the certifier's own stream
        misses += float(h_hat.norm()) > row["bound_mcdiarmid"]
    assert misses <= 5                                                     # 40 draws at alpha = 0.05
    assert misses == 0                                                     # (the bound is not tight)


# ------------------------------------------------------------------------------ point 10
D, SIGMA = 4, 0.5


class StepModel:
    """G(z) = 1[z_0 > 0] * ones(M): h(x) = Phi(x_0 / sigma) * ones."""

    output_range, output_shape = (0.0, 1.0), (16,)

    def generate(self, z, gen):
        return (z[:, 0] > 0).to(torch.float64)[:, None] * torch.ones(16, dtype=torch.float64)


class LitOracle:
    num_classes = 3                                  # class 2 is never produced: counts[-1] = 0

    def classify(self, out):
        return (out.reshape(len(out), -1).sum(1) > 0).long()


def step_ctx(a=-1.0, seed=0, label=0, aggregator=None):
    x = torch.zeros(D, dtype=torch.float64)
    x[0] = a * SIGMA
    item = SimpleNamespace(item_id=f"it{seed}", condition="", label=label)
    return ItemContext(item, x, StepModel(), LitOracle(), GaussianNoise(SIGMA), seed, 500, aggregator)


def test_distribution_certifier_reports_no_harm_bound_without_a_label():
    cert = DistributionCertifier(n=400, alpha=0.001, batch_size=400)
    row = cert.certify(step_ctx(label=-1))
    # before: counts[-1] picked the last class (never produced), so the event "class != 2" held for
    # every sample and p_upper was 1; now there is no event, and the row says why
    assert row["diag_event_count"] is None
    assert all(math.isnan(row[k]) for k in row if k.startswith(("bound_event_p", "bound_harm")))
    assert "needs" in row["abstain_reason"] and "label" in row["abstain_reason"]
    for eps in cert.eps_grid:                        # TV and W_p need no label
        assert row[f"bound_tv_eps{eps:g}"] == pytest.approx(tv_bound(eps, SIGMA))
        assert math.isfinite(row[f"bound_w2_eps{eps:g}"])
    labelled = cert.certify(step_ctx(label=0))
    assert labelled["abstain_reason"] == "" and labelled["bound_event_p_upper"] >= norm.cdf(-1.0)
    assert all(math.isfinite(labelled[k]) for k in labelled if k.startswith("bound_harm"))
    with pytest.raises(SmoothgenError, match="item it0: label 3 is not a class"):
        cert.certify(step_ctx(label=3))
    # an oracle without classes (none, equivalence) puts every output in class 0: "class != label" was
    # then the constant "label != 0" (found by review); its labelled items get no harm bound either
    unclassed = step_ctx(label=1)
    unclassed.oracle.has_classes = False
    row = cert.certify(unclassed)
    assert row["diag_event_count"] is None and "oracle without classes" in row["abstain_reason"]
    assert all(math.isnan(row[k]) for k in row if k.startswith("bound_harm"))


def test_mcdiarmid_bound_is_for_the_mean_image_the_row_shows():
    cert, shown_misses, certifier_misses = OutputBoundCertifier(n=2000, alpha=0.01, batch_size=500), 0, 0
    a, rho = 0.3, math.sqrt(16) / 2
    h = norm.cdf(a) * np.ones(16)
    for seed in range(20):
        agg = Mean(n=20)
        ctx = step_ctx(a, seed, aggregator=agg)
        row = cert.certify(ctx)
        assert row["mcdiarmid_n"] == 20
        # three sampled guarantees in the row (shown mean, certifier's mean, intervals): alpha / 3 each
        assert row["alpha_per_bound"] == pytest.approx(0.01 / 3)
        assert row["bound_mcdiarmid"] == pytest.approx(mcdiarmid_mean_bound(rho, 20, 0.01 / 3))
        assert row["bound_mcdiarmid_certifier"] == pytest.approx(mcdiarmid_mean_bound(rho, 2000, 0.01 / 3))
        assert row["bound_coordinate_halfwidth"] == pytest.approx(math.sqrt(math.log(2 * 16 * 3 / 0.01) / 4000))
        shown = agg.aggregate(ctx)[1].numpy()                            # the image the row shows
        dist = np.linalg.norm(shown - h)
        shown_misses += dist > row["bound_mcdiarmid"]
        certifier_misses += dist > row["bound_mcdiarmid_certifier"]
    assert shown_misses == 0
    assert certifier_misses >= 10              # the certifier-n bound does not cover the shown image
    for agg in (None, Majority(n=20, alpha=0.001, reuse=True)):          # no mean shown: the certifier's own h_hat
        row = cert.certify(step_ctx(a, aggregator=agg))
        assert row["mcdiarmid_n"] == 2000 and row["alpha_per_bound"] == pytest.approx(0.01 / 2)
        assert row["bound_mcdiarmid"] == row["bound_mcdiarmid_certifier"]


def test_attacked_points_are_checked_in_the_norm_of_the_certificate():
    """Under a fixed covariance the certificate covers the Mahalanobis ball ||Sigma^-1/2 delta|| <= R,
    whose L2 part sqrt(lambda_min) R is smaller: check.py measured L2 only, so attacked points between
    the two were never checked (found by review). Now both the distance and the radius are in the
    noise's units: Mahalanobis under `calibrated`, L2 / sigma under isotropic noise."""
    from smoothgen_exp.certifiers.check import reach
    from smoothgen_exp.smoothing.calibrated import CalibratedNoise

    law = CalibratedNoise(sigma=0.5)
    law.chol = torch.diag(torch.tensor([1.0, 0.1], dtype=torch.float64))     # Sigma = diag(1, 0.01)
    law.lambda_min, law.lambda_max = 0.01, 1.0
    p = float(norm.cdf(1.0))                                                   # R_M = 1, L2 radius 0.1
    row = law.radius_columns(p, certified=True)
    assert row["radius"] == pytest.approx(0.1) and row["radius_mahalanobis"] == pytest.approx(1.0)
    ctx = SimpleNamespace(x=torch.zeros(2, dtype=torch.float64), noise=law)
    far_in_l2 = torch.tensor([0.5, 0.0], dtype=torch.float64)                 # L2 0.5 > 0.1, Mahalanobis 0.5
    assert reach(ctx, row, far_in_l2) == pytest.approx((0.5, 1.0))
    assert reach(ctx, row, torch.tensor([0.0, 0.05], dtype=torch.float64)) == pytest.approx((0.5, 1.0))
    # the whitened norm is sqrt(delta^T Sigma^-1 delta) for a full covariance too
    a = torch.randn(3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    law.chol = torch.linalg.cholesky(a @ a.T + 0.5 * torch.eye(3, dtype=torch.float64))
    d = torch.tensor([0.3, -0.2, 0.7], dtype=torch.float64)
    sigma = law.chol @ law.chol.T
    assert law.whitened_norm(d) == pytest.approx(float(torch.sqrt(d @ torch.linalg.solve(sigma, d))))
    iso = SimpleNamespace(x=torch.zeros(2), noise=GaussianNoise(0.1))
    assert reach(iso, {"radius": 0.1}, torch.tensor([0.5, 0.0])) == pytest.approx((5.0, 1.0))
