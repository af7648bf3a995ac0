"""Issue 16: the Gaussian Smoothness Booster (booster=gsb) around a frozen feature encoder, certified by the
unchanged FCSB (certifier=feature).

Fast tests train a booster for a few epochs into a temporary cache (seconds); the default booster (about a
minute) is only trained by the slow test and `make table-fs`."""

import json
import math
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from scipy.stats import binom
from torch.nn import functional as F

import smoothgen_exp.training  # noqa: F401  (registers the trainers)
from smoothgen_exp.boosters.gsb import GSB, BoostedEncoder
from smoothgen_exp.boosters.none import NoBooster
from smoothgen_exp.certifiers.feature import FeatureCertifier
from smoothgen_exp.checks import check_before_loading
from smoothgen_exp.config import CONF_DIR, ConfigError, validate
from smoothgen_exp.context import ItemContext
from smoothgen_exp.data.digits import digit_images
from smoothgen_exp.oracles.none import NoOracle
from smoothgen_exp.smoothing.gaussian import GaussianNoise
from smoothgen_exp.stats import fcsb
from smoothgen_exp.weights import params_key

from .conftest import CACHE, REPO, cli

# a booster trained for a few epochs: the same code, seconds instead of a minute
QUICK = {"denoiser_epochs": 4, "mapper_epochs": 12}
QUICK_OVERRIDES = [f"booster.{k}={v}" for k, v in QUICK.items()]
ENCODER = {"_target_": "smoothgen_exp.models.digit_encoder.DigitEncoder"}


def composed(*overrides, config="config"):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config, overrides=list(overrides))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A cache with the (shared) digit oracle's weights linked in and room for the quick boosters."""
    path = tmp_path_factory.mktemp("gsb_cache")
    from smoothgen_exp.oracles.digits import DigitClassifier

    oracle = DigitClassifier(cache_dir=str(CACHE))
    (path / oracle.weights_file.rsplit("/", 1)[-1]).symlink_to(oracle.weights_file)
    return path


@pytest.fixture(scope="module")
def encoder(cache):
    from smoothgen_exp.models.digit_encoder import DigitEncoder

    return DigitEncoder(cache_dir=str(cache))


@pytest.fixture(scope="module")
def booster_parts(cache, encoder):
    gsb = GSB(cache_dir=str(cache), **QUICK)
    denoiser, mapper, info = gsb.load(encoder, ENCODER)
    return gsb, denoiser, mapper, info


def heldout(n=None):
    x, y = digit_images("heldout")
    return torch.from_numpy(x[:n]), y[:n]


# ------------------------------------------------------------------------------ configuration and wiring
def test_booster_options_compose_and_validate():
    cfg = composed("model=digit_encoder", "booster=gsb", "booster.components=m")
    validate(cfg)
    assert cfg.booster.components == "m" and cfg.oracle._target_.endswith("DigitProbe")
    assert composed().booster._target_.endswith("NoBooster")                    # off by default
    with pytest.raises(ConfigError, match=r"booster.components=mp: must be one of none, p, m, pm"):
        validate(composed("model=digit_encoder", "booster=gsb", "booster.components=mp"))
    train = composed("task=gsb", "model=digit_encoder", config="train")         # the training entrypoint's
    assert train.booster.components == "pm" and train.model._target_ == ENCODER["_target_"]


def test_a_booster_needs_a_feature_encoder_before_anything_loads():
    check_before_loading(composed("model=digit_encoder", "booster=gsb"))
    check_before_loading(composed("model=tiny_clip_vision", "booster=gsb"))
    with pytest.raises(ConfigError, match=r"booster=gsb: sits around a feature encoder .* DigitsT2I") as err:
        check_before_loading(composed("booster=gsb"))
    assert "\n" not in str(err.value)


def test_weights_are_keyed_by_their_training_config():
    gsb = GSB()
    p, m_on_p, m_alone = gsb.denoiser_params(ENCODER), gsb.mapper_params(ENCODER, True), gsb.mapper_params(ENCODER, False)
    assert m_on_p["denoiser"] == params_key(p) and m_alone["denoiser"] is None
    assert params_key(m_on_p) != params_key(m_alone)
    assert params_key(GSB(lambda_id=2.0).mapper_params(ENCODER, True)) != params_key(m_on_p)
    assert params_key(GSB(lambda_mse=2.0).mapper_params(ENCODER, True)) != params_key(m_on_p)   # via P's key
    other = {**ENCODER, "name": "x"}
    assert params_key(gsb.denoiser_params(other)) != params_key(p)
    assert params_key(GSB(components="p").denoiser_params(ENCODER)) == params_key(p)             # shared by p, pm


def test_the_weights_key_names_the_encoders_own_weights(monkeypatch):
    """The key held the encoder's config alone ({"_target_": DigitEncoder}): a booster trained around
    another digit CNN (a changed default, other weights behind the same config) was reused (review)."""
    import smoothgen_exp.boosters.gsb as gsb_module

    keys = []

    def capture(cache_dir, name, params, **context):
        keys.append(params_key(params))
        raise StopIteration

    monkeypatch.setattr(gsb_module, "load_or_train", capture)
    for file in ("digit_oracle-aaaa.safetensors", "digit_oracle-bbbb.safetensors", "digit_oracle-bbbb.safetensors"):
        encoder = SimpleNamespace(output_kind="features", device="cpu", weights_file=f"outputs/cache/{file}")
        with pytest.raises(StopIteration):
            GSB(components="p").load(encoder, ENCODER)
    assert keys[0] != keys[1] == keys[2]


def test_boosted_encoder_composes_the_parts(booster_parts, encoder):
    _, denoiser, mapper, _ = booster_parts
    x, _ = heldout(16)
    z = x + 0.5 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    plain = encoder.generate(z, None)
    assert NoBooster().around(encoder, 0.5, ENCODER) is encoder
    assert torch.equal(BoostedEncoder(encoder, None, None, 0.5, {}).generate(z, None), plain)
    with torch.no_grad():
        out = BoostedEncoder(encoder, denoiser, mapper, 0.5, {"booster_components": "pm"}).generate(z, None)
        expect = F.normalize(mapper(encoder.generate(denoiser(z, 0.5), None), 0.5), dim=-1)
    assert torch.allclose(out, expect) and torch.allclose(out.norm(dim=1), torch.ones(16))
    boosted = BoostedEncoder(encoder, denoiser, mapper, 0.5, {"booster_components": "pm"})
    assert boosted.output_kind == "features" and boosted.encode_items is not None       # the encoder's
    assert boosted.columns() == {"booster_components": "pm"}
    assert 0.0 <= float(denoiser(z, 0.5).min()) and float(denoiser(z, 0.5).max()) <= 1.0


# --------------------------------------------------------------------------------------- what it learns
def test_mapper_is_the_identity_at_sigma_zero_after_training(booster_parts, encoder):
    """l_id: M(z, 0) ~ 0 on clean features after training, while M acts on noisy features at sigma > 0."""
    _, denoiser, mapper, info = booster_parts
    x, _ = heldout()
    with torch.no_grad():
        clean = encoder.generate(x, None)
        at_zero = mapper.residual(clean, 0.0).norm(dim=1)
        noisy = encoder.generate(denoiser(x + 0.5 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1)),
                                          0.5), None)
        at_half = mapper.residual(noisy, 0.5).norm(dim=1)
        identity_cos = (F.normalize(clean + mapper.residual(clean, 0.0), dim=1) * clean).sum(1)
    assert float(at_zero.pow(2).mean()) == pytest.approx(float(info["mapper"]["heldout_l_id"]), rel=1e-3)
    assert float(at_zero.mean()) < 0.05                   # features are unit vectors: 5% of their norm
    assert float(at_zero.mean()) < 0.5 * float(at_half.mean())
    assert float(identity_cos.min()) > 0.995


def test_training_raises_the_robustness_score(booster_parts):
    """Even a few epochs of P and M raise the held-out Gaussian robustness score S at sigma 0.5."""
    _, _, _, info = booster_parts
    p = json.loads(info["denoiser"]["heldout_score"])["0.5"]
    pm = json.loads(info["mapper"]["heldout_score"])["0.5"]
    assert p["p"] > p["vanilla"] and pm > p["vanilla"]


# ------------------------------------------------------------------------ the certificate stays sound
def item_ctx(x, model, sigma, seed):
    item = SimpleNamespace(item_id=f"gsb{seed}", condition="", label=0)
    return ItemContext(item, x, model, NoOracle(), GaussianNoise(sigma), seed, 1024)


def smoothed_feature(model, x, sigma, n, seed=12345):
    """F(x) = E[f'(x + eta)] by Monte Carlo (float64 mean of n draws), and the standard error of <F, u> for u
    near F's direction (the spread of <f', F/|F|> over the draws)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        feats = torch.cat([model.generate(x[None] + sigma * torch.randn((min(4096, n - b), *x.shape), generator=gen),
                                          None).double() for b in range(0, n, 4096)])
    mean = feats.mean(0)
    return mean, float((feats @ F.normalize(mean, dim=0)).std() / math.sqrt(n))


def test_fcsb_on_a_boosted_encoder_passes_its_coverage_simulation(booster_parts, encoder):
    """The FCSB's s_lower stays below the true smoothed score (1 + <F(x), u>)/2 in all but about alpha of the
    certificates, and its bound b(eps) holds at an adversarially shifted point, with the booster in the loop.
    F is linear in u, so one large Monte Carlo estimate of F(x) (and of F(x + delta)) serves every trial."""
    _, denoiser, mapper, _ = booster_parts
    sigma, alpha, trials, eps = 0.5, 0.1, 150, 0.5
    model = BoostedEncoder(encoder, denoiser, mapper, sigma, {})
    x = heldout(8)[0][7]
    true_f, se = smoothed_feature(model, x, sigma, 20_000)
    # delta: ||delta|| = eps along the descent direction of <F, F(x)> (EOT over 512 draws)
    z = x.clone().requires_grad_(True)
    noise = sigma * torch.randn((512, *x.shape), generator=torch.Generator().manual_seed(7))
    (model.generate(z[None] + noise, None).double().mean(0) @ true_f).backward()
    delta = -eps * z.grad / z.grad.norm()
    shifted_f, shifted_se = smoothed_feature(model, x + delta, sigma, 20_000)
    tol = 5 * max(se, shifted_se) + 1e-4                   # the Monte Carlo error of <F, u>
    misses = shifted_misses = hat_misses = 0
    for t in range(trials):
        ctx = item_ctx(x, model, sigma, t)
        row = FeatureCertifier(n0=10, n=100, alpha=alpha, eps_grid=[eps], batch_size=128).certify(ctx)
        u = ctx.evidence["direction"].double()
        misses += row["bound_s_lower"] > (1 + float(true_f @ u)) / 2 + tol
        hat_misses += row["diag_s_hat"] > (1 + float(true_f @ u)) / 2 + tol
        shifted_misses += fcsb(row["bound_s_lower"], eps, sigma) > float(shifted_f @ u) + tol
    limit = binom.ppf(1 - 1e-4, trials, alpha)             # fails a sound bound with probability < 1e-4
    assert misses <= limit and shifted_misses <= limit
    assert hat_misses > limit                              # the harness catches an optimistic "bound"
    assert float(shifted_f @ true_f) < float(true_f @ true_f) - 10 * tol   # the shift did move F


# ---------------------------------------------------------------------- the training entrypoint and the CLI
def test_trained_booster_is_picked_up_by_the_runner_and_tabulated(tmp_path, cache, booster_parts):
    """`task=gsb` (in process) trains what `booster=gsb` loads: the CLI run of experiment=fs_gsb_attacks at
    smoke size (the one CLI run of this file: vanilla, +P, +M, +P+M at sigma 0.5 with the feature PGD)
    finds the same weights by their key, trains nothing, certifies every variant with no violation of a
    checked FCSB, and scripts/fs_table.py tabulates it."""
    import pandas as pd

    from smoothgen_exp.training.tasks import TrainGSB

    run_cache = tmp_path / "cache"
    run_cache.mkdir()
    for f in cache.glob("*.safetensors"):
        (run_cache / f.name).symlink_to(f.resolve())
    results = {}
    for parts in ("pm", "m"):
        train_cfg = composed("task=gsb", "model=digit_encoder", f"cache_dir={run_cache}", *QUICK_OVERRIDES,
                             f"booster.components={parts}", config="train")
        results[parts] = TrainGSB().run(train_cfg, torch.device("cpu"))
    assert set(results["pm"]) >= {"denoiser", "mapper", "train_seconds", "seconds"} and "denoiser" not in results["m"]
    # the weights' own training seconds, not this call's (which found them cached and trained nothing)
    assert results["pm"]["denoiser"]["train_seconds"] > 0 and results["pm"]["mapper"]["train_seconds"] > 0
    assert results["pm"]["train_seconds"] == results["pm"]["denoiser"]["train_seconds"] + results["pm"]["mapper"]["train_seconds"]
    assert results["pm"]["mapper"]["weights"] == booster_parts[3]["mapper"]["file"].replace(str(cache), str(run_cache))
    sweep = tmp_path / "sweep"
    res = cli("experiment=fs_gsb_attacks", "debug=smoke", *QUICK_OVERRIDES, "smoothing.sigma=0.5", "attack.eps=0.25",
              "attack.steps=2", "attack.m=2", "attack.eval_n=100", f"cache_dir={run_cache}",
              f"hydra.sweep.dir={sweep}")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "training gsb_" not in res.stderr                # loaded, not trained
    rows = pd.concat([pd.read_parquet(d) for d in sweep.rglob("records")])
    sm = rows[rows.variant == "smoothed"]
    assert set(rows.booster) == {"gsb"} and set(rows.booster_components) == {"none", "p", "m", "pm"}
    assert set(rows.booster_mapper.dropna()) == {results[k]["mapper"]["weights"].rsplit("/", 1)[-1] for k in ("pm", "m")}
    assert sm.diag_robustness_score.between(0.5, 1.0).all() and (sm.radius > 0).all()
    assert sm.attack_within_radius.any() and not sm.certificate_violation.fillna(False).any()
    out = tmp_path / "tables"
    table = subprocess.run([sys.executable, "scripts/fs_table.py", str(sweep), "--attacks", str(sweep), "--out",
                            str(out)], cwd=REPO, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
    assert table.returncode == 0, table.stderr[-2000:]
    fs = pd.read_csv(out / "fs_gsb.csv")
    assert list(fs.variant) == ["vanilla", "+P", "+M", "+P+M"]
    # b <= 0 bounds no cosine: never a negative mean in the table (it showed -0.374 at eps 0.5; a new user)
    bounds = fs[[c for c in fs.columns if c.startswith("FCSB b")]].astype(str).to_numpy().ravel()
    assert not [b for b in bounds if b.startswith("-")], bounds
    assert len(pd.read_csv(out / "fs_gsb_attacks.csv")) == 4 and "sigma=0.5: mean certified radius" in table.stdout


def test_the_fs_table_averages_the_fcsb_only_where_it_bounds_the_cosine():
    """b(eps) <= 0 bounds no cosine; the table averaged it in (-0.374 at eps 0.5; found by a new user)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("fs_table", REPO / "scripts" / "fs_table.py")
    fs_table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fs_table)
    from smoothgen_exp.certifiers.feature import cosine_or_nan
    from smoothgen_exp.stats import fcsb

    def rows(s_lower, eps, sigma):       # what the feature certifier's rows hold in bound_fcsb_eps*
        return [cosine_or_nan(fcsb(s, eps, sigma)) for s in s_lower]

    assert fs_table.fcsb_cell(rows([0.6, 0.6], 0.5, 0.25)) == "vacuous (b ≤ 0)"     # b = 2 Phi(-1.75) - 1 < 0
    # s = 0.99 at eps 0.1: b = 2 Phi(2.326 - 0.4) - 1 = 0.946; s = 0.6: b = -0.117, left out and counted
    assert fs_table.fcsb_cell(rows([0.99, 0.6], 0.1, 0.25)) == "0.946 (1 of 2 items)"


def test_the_fs_table_never_shows_invalid_certificates_as_certified(tmp_path):
    """Radii and the certified fraction came from every row, certificate_valid=false ones included, with no
    mark; they come from the valid rows, else are marked nominal (found by review)."""
    import importlib.util

    import pandas as pd

    spec = importlib.util.spec_from_file_location("fs_table", REPO / "scripts" / "fs_table.py")
    fs_table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fs_table)

    def run(name, valid):
        d = tmp_path / name
        (d / "records").mkdir(parents=True)
        (d / ".hydra").mkdir()
        (d / ".hydra" / "config.yaml").write_text("smoothing: {sigma: 0.25}\nbooster: {components: none}\n"
                                                   "attack: {}\ncertifier: {cos_min: 0.5, eps_grid: [0.1]}\n")
        (d / "summary.json").write_text(json.dumps({"items": 2}))
        rows = []
        for i, ok in enumerate(valid):
            b = {"item_id": f"i{i}", "certificate_valid": ok, "correct": True}
            rows += [{**b, "variant": "baseline", "smoothed_correct": None},
                     {**b, "variant": "smoothed", "radius": 0.3 if ok else 0.9, "certified": True,
                      "diag_robustness_score": 0.9, "bound_s_lower": 0.95, "bound_fcsb_eps0.1": 0.8,
                      "smoothed_correct": True}]
        pd.DataFrame(rows).to_parquet(d / "records" / "part-000-00000.parquet")
        return fs_table.certificate_table([d]).iloc[0]

    none = run("none", [False, False])
    assert none["radius at cos ≥ 0.5 ↑"].endswith("(nominal)") and none["certified ↑"].endswith("(nominal)")
    assert none["s_lower ↑"].endswith("(nominal)") and none["radius_nominal"]
    some = run("some", [True, False])
    assert some["radius at cos ≥ 0.5 ↑"].startswith("0.300") and some["radius at cos ≥ 0.5 ↑"].endswith("(1 of 2 valid)")
    assert some["radius_mean"] == pytest.approx(0.3)
    assert not run("all", [True, True])["certified ↑"].endswith(")")


@pytest.mark.slow
def test_the_default_booster_trains_in_budget_and_helps(tmp_path, cache, encoder):
    """The default booster (the one `make table-fs` uses): P + M train in well under 5 minutes here, l_id is
    small, and P and P+M raise the held-out robustness score at both sigma of the table."""
    import time

    gsb = GSB(cache_dir=str(tmp_path))
    for f in cache.glob("digit_oracle-*.safetensors"):
        (tmp_path / f.name).symlink_to(f.resolve())
    start = time.perf_counter()
    _, _, info = gsb.load(encoder, ENCODER)
    assert time.perf_counter() - start < 300
    assert float(info["mapper"]["heldout_l_id"]) < 1e-2
    p, pm = json.loads(info["denoiser"]["heldout_score"]), json.loads(info["mapper"]["heldout_score"])
    for s in ("0.25", "0.5"):
        assert p[s]["p"] > p[s]["vanilla"] and pm[s] > p[s]["vanilla"]
    assert np.isfinite([pm["0.25"], pm["0.5"]]).all()


@pytest.mark.slow
def test_the_booster_sits_around_the_tiny_clip_encoder(tmp_path):
    """Nothing is specific to the digit encoder: P (on RGB 32 x 32 pixels) and M (on 32-d CLIP features)
    train and run around model=tiny_clip_vision, keyed by its config."""
    from hydra.utils import instantiate

    cfg = composed("model=tiny_clip_vision")
    encoder = instantiate(cfg.model, cache_dir=str(tmp_path))
    boosted = GSB(cache_dir=str(tmp_path), denoiser_epochs=1, mapper_epochs=1).around(encoder, 0.25, cfg.model)
    assert boosted.denoiser.net[0].in_channels == 3 + 1 and boosted.mapper.net[-1].out_features == 32
    assert all(path.name.startswith(("gsb_denoiser-", "gsb_mapper-")) for path in tmp_path.glob("*.safetensors"))
    x, _ = heldout(4)
    images = torch.stack([torch.nn.functional.interpolate(im.expand(3, -1, -1)[None], size=(32, 32))[0] for im in x])
    with torch.no_grad():
        out = boosted.generate(images + 0.25 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0)),
                               None)
    assert out.shape == (4, 32) and torch.allclose(out.norm(dim=1), torch.ones(4), atol=1e-5)
