"""VAEs as generators (model=tiny_vae, sd_vae), SRL-VAE post-training, PhotoGuard and the table-vae smoke."""

import json
import subprocess
import sys
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from smoothgen_exp.attacks.photoguard import PhotoGuard
from smoothgen_exp.config import SCHEMAS, schema_defaults_of
from smoothgen_exp.context import ItemContext
from smoothgen_exp.smoothing.gaussian import GaussianNoise
from tests.conftest import CACHE, REPO, cli, makefile_args

W = torch.tensor([2.0, 1.0, 0.5, 3.0], dtype=torch.float64)


class LinearVAE:
    """E(x) = diag(W) x on 2x2 images, D the identity: PhotoGuard's objective ||W (x + delta - t)||^2 over the
    L-inf ball and the image range has the optimum delta_i = clip(t_i - x_i, -eps, eps) (coordinatewise)."""

    condition_kind, differentiable, reconstructs = "image", True, True
    output_range, output_shape = (0.0, 1.0), (1, 2, 2)

    def latents(self, z):
        return z.reshape(len(z), -1) * W

    def generate(self, z, gen=None, shared=False):
        return z.reshape(len(z), *self.output_shape)


class Threshold:
    """Class 1 when the mean pixel exceeds 1/2."""

    num_classes = 2

    def classify(self, out):
        return (out.reshape(len(out), -1).mean(1) > 0.5).long()

    def features(self, out):
        return out.reshape(len(out), -1)


def photoguard(**overrides):
    fields = {**schema_defaults_of(SCHEMAS["smoothgen_exp.attacks.photoguard.PhotoGuard"]), **overrides}
    return PhotoGuard(**fields)


def linear_ctx(x, sigma=0.1):
    item = SimpleNamespace(item_id="lin", condition="", label=0)
    return ItemContext(item, x, LinearVAE(), Threshold(), GaussianNoise(sigma), 0, 64)


def test_photoguard_reaches_the_known_optimum_on_a_linear_encoder():
    x = torch.tensor([0.2, 0.9, 0.5, 0.52], dtype=torch.float64).reshape(1, 2, 2)
    eps = 0.1
    optimum = x + (0.5 - x).clamp(-eps, eps)            # t = flat grey 0.5: [0.3, 0.8, 0.5, 0.5]
    row = photoguard(eps=eps).run(linear_ctx(x), "baseline", 0)
    attacked = row["attacked_condition"]
    assert torch.allclose(attacked, optimum, atol=1e-3), attacked
    assert row["attack_distance_linf"] <= eps + 1e-12
    # the decaying schedule matters: a constant step of 0.05 ends oscillating around the target
    constant = photoguard(eps=eps, step_size=0.05, decay="constant").run(linear_ctx(x), "baseline", 0)
    assert (constant["attacked_condition"] - optimum).abs().max() > 1e-2
    # reconstruction columns against the clean input (D is the identity: the error is the perturbation)
    assert row["attack_recon_mse"] == pytest.approx(float((optimum - x).pow(2).mean()), abs=1e-5)


def test_photoguard_says_when_its_steps_cannot_reach_the_budget(caplog):
    """10 steps from 0.005 with linear decay move a pixel at most 0.0275: at 15/255 the table-vae smoke's
    rows were labelled with a budget the attack never used (found by a new user). The attack says so once."""
    x = torch.full((1, 2, 2), 0.9, dtype=torch.float64)          # the grey target is 0.4 away
    short = photoguard(eps=15 / 255, steps=10)
    assert short.reach() == pytest.approx(0.0275)
    with caplog.at_level("WARNING", logger="smoothgen_exp.attacks.photoguard"):
        rows = [short.run(linear_ctx(x), "baseline", 0) for _ in range(2)]
    assert [r.getMessage() for r in caplog.records if "cannot use its budget" in r.getMessage()] == [
        "attack=photoguard: 10 steps from step_size 0.005 (linear decay) move a pixel at most 0.0275, less than "
        "attack.eps=0.05882: the attack cannot use its budget; raise attack.step_size or attack.steps"]
    assert rows[0]["attack_distance_linf"] == pytest.approx(0.0275)
    caplog.clear()
    with caplog.at_level("WARNING", logger="smoothgen_exp.attacks.photoguard"):
        row = photoguard(eps=15 / 255, steps=10, step_size=0.02).run(linear_ctx(x), "baseline", 0)
    assert not caplog.records and row["attack_distance_linf"] == pytest.approx(15 / 255)


def test_photoguard_against_the_smoothed_encoder_reaches_the_same_optimum_inside_the_image_range():
    x = torch.tensor([0.02, 0.97, 0.1, 0.9], dtype=torch.float64).reshape(1, 2, 2)
    ctx = linear_ctx(x, sigma=0.1)
    row = photoguard(eps=0.2, m=8).run(ctx, "smoothed", 0)
    z = row["attacked_condition"]
    assert z.min() >= 0 and z.max() <= 1 and row["attack_distance_linf"] <= 0.2 + 1e-12
    # the EOT objective E||W (x + delta + eta - t)||^2 has the baseline's optimum; here every coordinate is
    # held by the budget (|t - x| > eps), so noisy gradients still point the right way
    assert torch.allclose(z, x + (0.5 - x).clamp(-0.2, 0.2), atol=1e-3), z


@pytest.fixture(scope="module")
def vae_pair(tmp_path_factory):
    """A tiny VAE trained for two epochs and its SRL post-training (one epoch), in a private cache."""
    import smoothgen_exp.training  # noqa: F401  (trains on first use)
    from smoothgen_exp.models.vae import TinyVAE

    cache = tmp_path_factory.mktemp("vae_cache")
    kw = {"channels": [8, 16], "epochs": 2, "srl_epochs": 1, "srl_steps": 2, "cache_dir": str(cache)}
    return TinyVAE(robust="none", **kw), TinyVAE(robust="srl", **kw), cache


def test_srl_post_training_changes_the_encoder_only(vae_pair):
    plain, srl, cache = vae_pair
    a, b = plain.vae.state_dict(), srl.vae.state_dict()
    decoder = [k for k in a if k.startswith(("decoder.", "post_quant_conv."))]
    encoder = [k for k in a if k.startswith(("encoder.", "quant_conv."))]
    assert decoder and encoder and len(decoder) + len(encoder) == len(a)
    assert all(torch.equal(a[k], b[k]) for k in decoder)          # bit-identical decoder
    assert any(not torch.equal(a[k], b[k]) for k in encoder)
    from safetensors.torch import load_file

    saved = load_file(srl.srl_file)
    assert set(saved) == set(encoder)                              # the SRL weights hold the encoder only
    report = json.loads(srl.srl_info["heldout"])
    assert {"clean_mse", "attacked_mse", "train_seconds"} <= set(report)
    x = torch.rand(3, 1, 8, 8)
    out = srl.generate(x)
    assert out.shape == (3, 1, 8, 8) and out.min() >= 0 and out.max() <= 1
    assert srl.columns() == {"vae_encoder": "srl"} and plain.columns() == {"vae_encoder": "none"}


@pytest.mark.slow     # about 55 s on a clean clone (it trains its VAE and SRL encoder)
def test_table_vae_smoke(tmp_path):
    """`make table-vae-smoke`: the vae_table sweep at CI size (robust none/srl x PhotoGuard at 8/255, 15/255),
    then the table and its figure."""
    sweep, out = tmp_path / "sweep", tmp_path / "tables"
    res = cli("experiment=vae_table", *makefile_args("VAE_SMOKE"), f"cache_dir={CACHE}", f"hydra.sweep.dir={sweep}")
    assert res.returncode == 0, res.stderr[-3000:]
    runs = sorted(p.parent for p in sweep.rglob("summary.json"))
    assert len(runs) == 4
    rows = pd.read_parquet(runs[0] / "records")
    assert {"metric_recon_mse", "attack_recon_mse", "attack_recon_agree", "bound_tv_eps0.4706"} <= set(rows.columns)
    assert (rows.attack_distance_linf <= rows.attack_eps + 1e-6).all() and rows.vae_encoder.notna().all()
    summary = json.loads((runs[0] / "summary.json").read_text())
    assert {"metric_fid_baseline", "metric_fid_attacked_smoothed"} <= set(summary)
    assert summary["certificate_violations"] == 0
    res = subprocess.run([sys.executable, "scripts/vae_table.py", str(sweep), "--out", str(out)], cwd=REPO,
                         capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    table = pd.read_csv(out / "vae_table.csv")
    assert list(table.VAE.unique()) == ["VAE", "SRL-VAE", "smoothed VAE", "SRL-VAE smoothed"]
    assert len(table) == 4 * 3                                     # clean, PhotoGuard 8/255 and 15/255
    smoothed = table[table.VAE == "smoothed VAE"].set_index("input")
    # C2's TV form at the L2 radius 8 * 15/255 <= 0.4706, sigma 0.1: 2 rho (2 Phi(0.4706 / 0.2) - 1), rho = 4
    assert smoothed.loc["PhotoGuard 15/255", "certified bound"].startswith("7.851")
    # the attack used its budget: the smoke's 10 steps reach 15/255 (they stopped at 7/255 before)
    assert list(smoothed["L-inf reached"]) == ["–", "8.0/255", "15.0/255"]
    assert (out / "vae_table.png").stat().st_size > 1000
