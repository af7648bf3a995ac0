"""Text-to-image diffusion (tiny_sd, sd15), the ot_blend aggregator, the CLIP score, and batch_size=auto."""

import contextlib
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from smoothgen_exp.batching import AUTO_START, Batcher, OOMGuard
from smoothgen_exp.errors import SmoothgenError
from smoothgen_exp.seeding import SEED_HIGH, row_seeds
from tests.conftest import CACHE, cli, run_in_process

TINY_SD = {"image_size": 32, "width": 32, "layers": 2, "heads": 2, "seed": 0}
TINY_CLIP = {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2, "heads": 2, "projection_dim": 32, "seed": 0}


@pytest.fixture(scope="module")
def sd():
    from smoothgen_exp.models.diffusion import StableDiffusion

    return StableDiffusion(name="tiny_sd", tiny=TINY_SD, height=32, width=32, steps=3, guidance_scale=2.0, dtype="float32")


# ----------------------------------------------------------------------------- the tiny pipeline
def test_noise_goes_on_the_prompt_embeddings_and_each_sample_has_its_own_seed(sd):
    z = sd.encode(["a photo of the digit seven", "the number 3"])
    assert z.shape == (2, 77, 32) and z.dtype == torch.float32
    assert not torch.equal(z[0], z[1])                                 # the byte-level tokenizer works
    batch = z[:1].expand(4, -1, -1)
    images = sd.generate(batch, torch.Generator().manual_seed(0))
    assert images.shape == (4, 3, 32, 32) and 0 <= float(images.min()) and float(images.max()) <= 1
    assert all(not torch.equal(images[0], images[i]) for i in range(1, 4))    # one seed per sample
    again = sd.generate(batch, torch.Generator().manual_seed(0))
    assert torch.equal(images, again)                                  # seeds come from the stream
    shared = sd.generate(batch, torch.Generator().manual_seed(0), shared=True)
    assert all(torch.equal(shared[0], shared[i]) for i in range(4))    # one deterministic G(., u)
    noisy = sd.generate(batch + 0.5 * torch.randn(batch.shape, generator=torch.Generator().manual_seed(1)),
                        torch.Generator().manual_seed(0))
    assert not torch.allclose(noisy, images)                           # the condition reaches the UNet


def test_a_sample_does_not_depend_on_the_batch_it_lands_in(sd):
    z = sd.encode(["a handwritten digit five"]).expand(6, -1, -1)
    whole = sd.generate(z, torch.Generator().manual_seed(4))
    gen = torch.Generator().manual_seed(4)
    parts = torch.cat([sd.generate(z[:2], gen), sd.generate(z[2:], gen)])
    torch.testing.assert_close(parts, whole, rtol=0, atol=1e-5)


def test_tiny_sd_generates_at_model_height_and_width():
    """tiny_sd replaced model.height/width by its config's image size without a word; a size that is no
    multiple of 8 fails in one line before loading (diffusers raised mid-run)."""
    from smoothgen_exp.models.diffusion import StableDiffusion

    wide = StableDiffusion(name="tiny_sd", tiny=TINY_SD, height=16, width=24, steps=1, guidance_scale=1.0,
                           dtype="float32")
    assert wide.output_shape == (3, 16, 24)
    assert wide.generate(wide.encode(["a seven"]), torch.Generator().manual_seed(0)).shape == (1, 3, 16, 24)
    res = cli("model=tiny_sd", "model.height=36", "hydra.run.dir=unused")
    assert res.returncode != 0 and res.stderr.strip().splitlines()[-1] == "error: model.height=36: must be a positive multiple of 8"


@pytest.mark.slow     # 20-30 s; tiny_sd runs end to end in test_output_and_distribution_certificates_work_unchanged
def test_tiny_sd_runs_end_to_end_with_one_override(tmp_path):
    res = cli("model=tiny_sd", "dataset.limit=2", "progress=false", f"cache_dir={CACHE}", f"hydra.run.dir={tmp_path}")
    assert res.returncode == 0, res.stderr[-3000:]
    df = pd.read_parquet(tmp_path / "records")
    summary = json.loads((tmp_path / "summary.json").read_text())
    sm = df.query("variant == 'smoothed'")
    assert len(df) == 4 and summary["items"] == 2
    assert sm.radius.notna().all() and sm.p_lower.between(0, 1).all() and (sm.samples_used == 16 + 64).all()
    assert (df.metric_clip_score >= 0).all() and np.isfinite(summary["metric_fid_smoothed_vs_baseline"])
    assert {"metric_clip_score_baseline", "retention_clip_score"} <= summary.keys()
    assert (tmp_path / "samples.png").exists()


@pytest.mark.parametrize("args", [["aggregator=ot_blend", "certifier=output_bound", "certifier.batch_size=auto"],
                                  pytest.param(["certifier=distribution", "attack=random_search", "attack.queries=4",
                                                "attack.eval_n=16"], marks=pytest.mark.slow)])
def test_output_and_distribution_certificates_work_unchanged(tmp_path, args):
    df, _ = run_in_process("model=tiny_sd", *args, "metrics=none", "dataset.limit=1", "certifier.n=32",
                           "aggregator.n=4", "progress=false", f"cache_dir={CACHE}", run_dir=tmp_path)
    sm = df.query("variant == 'smoothed'")
    m = 3 * 32 * 32                                                     # outputs in [0, 1]^m
    if "aggregator=ot_blend" in args:
        assert np.allclose(sm.diag_rho, np.sqrt(m) / 2) and (sm.batch_size == AUTO_START).all()
    else:
        assert (sm.diag_diameter == np.sqrt(m)).all() and sm.bound_event_p_upper.between(0, 1).all()
        assert "attack_success" in sm


def test_missing_sd15_weights_fail_in_one_line_naming_the_key(tmp_path):
    env = {"HF_HOME": str(tmp_path / "empty_hf_home"), "HF_HUB_OFFLINE": "1"}
    for args, key in ((["model=sd15"], "oracle.path"), (["model=sd15", "oracle=tiny_clip_zero_shot"], "model.path")):
        res = cli(*args, "dataset.limit=1", f"hydra.run.dir={tmp_path / 'run'}", env=env)
        err = [line for line in res.stderr.splitlines() if line.startswith("error:")]
        assert res.returncode == 2 and len(err) == 1 and "Traceback" not in res.stderr, res.stderr[-2000:]
        assert "not found" in err[0] and key in err[0]


def test_white_box_attacks_are_refused_before_loading_a_model_without_gradients(tmp_path):
    from omegaconf import OmegaConf

    from smoothgen_exp.checks import check_attack_fits_model

    res = cli("model=tiny_sd", "attack=pgd", f"hydra.run.dir={tmp_path}")
    err = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert res.returncode == 2 and err == [err[0]] and "attack=nes" in err[0], res.stderr[-2000:]
    assert "setup (weights" not in res.stderr                          # nothing was loaded
    for target, differentiable in (("models.lm.CausalLM", True), ("models.vlm.VisionLanguageModel", False),
                                   ("models.digits.DigitsT2I", True), ("models.clip.CLIPVisionEncoder", True)):
        cfg = OmegaConf.create({"attack": {"_target_": "smoothgen_exp.attacks.pgd.PGD"},
                                "model": {"_target_": f"smoothgen_exp.{target}"}})
        if differentiable:
            check_attack_fits_model(cfg)
        else:
            with pytest.raises(SmoothgenError, match="attack=pgd"):
                check_attack_fits_model(cfg)


def test_clip_pixels_are_what_clips_own_processor_makes():
    """CLIP scores resized by bilinear interpolation without antialiasing and squashed non-square images to a
    square (image review); now the shortest edge, bicubic, antialiased, and the centre crop."""
    import numpy as np
    import transformers

    from smoothgen_exp.backbones.clip import pixel_values

    processor = (getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor)(
        size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
    coarse = torch.rand(1, 3, 16, 24, generator=torch.Generator().manual_seed(0))
    image = (torch.nn.functional.interpolate(coarse, size=(512, 768), mode="bilinear")[0] * 255).round() / 255
    theirs = processor(images=[(image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)], return_tensors="np")
    ours = pixel_values(image[None], 224, torch.float32)[0]
    gap = (ours - torch.from_numpy(theirs["pixel_values"][0])).abs()
    assert float(gap.max()) < 0.03 and float(gap.mean()) < 0.01          # uint8 rounding and PIL's kernel


# ----------------------------------------------------------------------------- ot_blend
def _blob(cx: float, r: int = 32, width: float = 0.05) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(0, 1, r, dtype=torch.float64), torch.linspace(0, 1, r, dtype=torch.float64),
                            indexing="ij")
    return torch.exp(-((xx - cx) ** 2 + (yy - 0.5) ** 2) / (2 * width**2))


def test_the_barycenter_of_two_shifted_blobs_is_one_blob_halfway():
    from smoothgen_exp.aggregators.ot_blend import channel_barycenter

    stack = torch.stack([_blob(0.25), _blob(0.75)])[:, None]          # [2, 1, 32, 32]
    bary = channel_barycenter(stack, reg=0.002, floor=1e-6, iters=2000, tol=1e-9)[0]
    mean = stack.mean(0)[0]
    profile, mean_profile = bary.sum(0), mean.sum(0)                   # mass per column
    x = torch.linspace(0, 1, 32, dtype=torch.float64)
    assert abs(float((profile * x).sum() / profile.sum()) - 0.5) < 0.01       # centred
    assert abs(float(bary.sum() - mean.sum())) < 1e-3 * float(mean.sum())      # mass kept
    assert int(profile.argmax()) in (15, 16)                           # one mode, in the middle ...
    assert float(profile[8]) < 0.05 * float(profile.max())            # ... and nothing left at the ends
    assert float(mean_profile[15]) < 0.05 * float(mean_profile.max())  # where the mean has a hole
    # regression: POT's plain-domain method (the default until a review) converged to a wrong barycenter
    # at this reg, with ghost bumps beyond the blobs; the log-domain default has none
    assert float(profile[2:7].max()) < 1e-3 * float(profile.max())
    plain = channel_barycenter(stack, reg=0.002, floor=1e-6, iters=2000, tol=1e-9, method="sinkhorn")[0].sum(0)
    assert float(plain[2:7].max()) > 1e-2 * float(plain.max())


def test_log_barycenter_is_pots_log_domain_barycenter(monkeypatch):
    """Both ways of taking log(K x): max-shifted matrix products (where `shifted_products_exact`, at the
    default reg 0.002) and logsumexp (below), against POT, and against each other on blobs of a 1e-9
    dynamic range; the flush and thread settings are restored, a user's own flush setting included."""
    import ot

    from smoothgen_exp.aggregators import ot_blend

    images = torch.rand(5, 12, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) + 1e-3
    images /= images.sum(dim=(1, 2), keepdim=True)
    # exp(-1/reg) is normal down to reg = 1/708, but the terms flushed below 2.2e-308 cost 3e-4 of a sum
    # at 1/699.9 (a review): shifted products only from 1/668 at 32 points
    assert ot_blend.shifted_products_exact(0.002, 32) and not ot_blend.shifted_products_exact(1 / 699.9, 32)
    assert ot_blend.shifted_products_exact(1 / 665, 32) and not ot_blend.shifted_products_exact(1 / 670, 32)
    for reg in (0.01, 0.002, 0.001):                       # 0.001: the logsumexp path
        ours = ot_blend.log_barycenter(images, reg, 300, 1e-7)
        theirs = ot.bregman.convolutional_barycenter2d(images.numpy(), reg, method="sinkhorn_log", numItermax=300,
                                                       stopThr=1e-7, warn=False)
        assert torch.allclose(ours, torch.from_numpy(theirs), rtol=1e-9, atol=1e-14), reg
    blobs = torch.stack([_blob(0.1), _blob(0.9), _blob(0.5)]).double() + 1e-9
    blobs /= blobs.sum(dim=(1, 2), keepdim=True)
    threads = torch.get_num_threads()
    flushed = ot_blend.channel_barycenter(blobs[:, None], 0.002, 1e-12, 500, 1e-9)[0]    # one thread, no subnormals
    assert torch.get_num_threads() == threads                                          # restored
    monkeypatch.setattr(ot_blend, "subnormals_flushed", lambda device: contextlib.nullcontext())
    shifted = ot_blend.channel_barycenter(blobs[:, None], 0.002, 1e-12, 500, 1e-9)[0]
    monkeypatch.setattr(ot_blend, "shifted_products_exact", lambda *a: False)
    exact = ot_blend.channel_barycenter(blobs[:, None], 0.002, 1e-12, 500, 1e-9)[0]
    for ours in (flushed, shifted):
        assert torch.isfinite(ours).all() and float((ours - exact).abs().max()) < 1e-12 * float(exact.max())
    subnormal = torch.tensor([1e-310], dtype=torch.float64)
    try:
        torch.set_flush_denormal(True)
        with ot_blend.subnormals_flushed(torch.device("cpu")):
            pass
        assert float(subnormal * 1.0) == 0                                             # still the user's
    finally:
        torch.set_flush_denormal(False)
    assert float(subnormal * 1.0) > 0


class _Ctx:
    """The slice of ItemContext an aggregator uses: outputs(num, stream) in batches, x, oracle."""

    def __init__(self, images: torch.Tensor):
        self.images, self.x, self.calls = images, torch.zeros(3), []
        self.oracle = type("O", (), {"classify": staticmethod(lambda out: torch.zeros(len(out), dtype=torch.long))})

    def outputs(self, num, stream, batch_size=2):
        self.calls.append(stream)
        for i in range(0, num, batch_size):
            yield self.images[i:i + batch_size]


def test_ot_blend_streams_reduced_outputs_and_blends_per_channel():
    from smoothgen_exp.aggregators.ot_blend import OTBlend

    red = torch.zeros(3, 64, 64, dtype=torch.float64)
    images = torch.stack([red.clone(), red.clone()])
    images[0, 0] = torch.nn.functional.interpolate(_blob(0.25, 64)[None, None], size=64)[0, 0]
    images[1, 0] = torch.nn.functional.interpolate(_blob(0.75, 64)[None, None], size=64)[0, 0]
    agg = OTBlend(n=2, resolution=32, floor=1e-6, iters=2000, tol=1e-9)
    row, image = agg.aggregate(_Ctx(images.float()))
    assert row == {"smoothed_prediction": 0, "predict_n": 2} and image.shape == (3, 64, 64)
    assert float(image[1:].abs().max()) < 1e-3                        # empty channels stay empty
    profile = image[0].sum(0)
    assert 28 <= int(profile.argmax()) <= 35 and float(profile[16]) < 0.1 * float(profile.max())


# ----------------------------------------------------------------------------- CLIP score
def test_clip_score_through_torchmetrics_equals_the_cosine_of_our_clip():
    from torchmetrics.functional.multimodal import clip_score

    from smoothgen_exp.backbones.clip import embeds, image_features, shared_clip
    from smoothgen_exp.metrics.clip_score import CLIPForTorchmetrics

    tok, clip = shared_clip("tiny_clip", None, TINY_CLIP, "float32", "cpu")
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    prompts = ["the digit one", "two", "nine"]                        # a positive mean cosine: no clipping
    score = clip_score(list(images), prompts, CLIPForTorchmetrics(clip, tok, 32).pair)
    text = embeds(clip.get_text_features(**tok(prompts, return_tensors="pt", padding=True)))
    cos = (image_features(clip, images, 32) * torch.nn.functional.normalize(text, dim=-1)).sum(1)
    assert float(score) > 1 and torch.isclose(score, 100 * cos.mean(), atol=1e-4)


# ----------------------------------------------------------------------------- batch_size=auto
class _Fits:
    """A generator that runs out of memory above `limit` rows, in the way CUDA reports it."""

    def __init__(self, limit: int):
        self.limit, self.seen = limit, []

    def generate(self, z, generator, shared=False):
        if len(z) > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        self.seen.append(len(z))
        draws = row_seeds(generator, len(z), shared).double()[:, None] / SEED_HIGH
        return z[:, :1] * 0 + draws


def test_auto_batch_size_backs_off_on_out_of_memory_and_keeps_the_size():
    model = OOMGuard(_Fits(limit=100), Batcher("auto"))
    z = torch.zeros(300, 4)
    out = model.generate(z, torch.Generator().manual_seed(0))
    assert out.shape == (300, 1) and model.batcher.size == 75 and model.batcher.backoffs == 2
    assert model.seen == [75] * 4                                      # 1024 -> 300 rows fail -> 150 fail -> 75
    model.generate(z[:10], torch.Generator())                          # the size found is kept
    assert model.batcher.backoffs == 2
    shared = model.generate(z, torch.Generator().manual_seed(0), shared=True)
    assert torch.all(shared == shared[0])                              # one draw, whatever the chunks
    fresh = OOMGuard(_Fits(limit=1000), Batcher("auto")).generate(z, torch.Generator().manual_seed(0))
    assert torch.equal(out, fresh)                                     # the back-off changed no draw


def test_a_fixed_batch_size_reports_out_of_memory_in_one_line_and_other_errors_pass():
    with pytest.raises(SmoothgenError, match="certifier.batch_size=auto"):
        OOMGuard(_Fits(limit=10), Batcher(50)).generate(torch.zeros(50, 2), torch.Generator())
    with pytest.raises(SmoothgenError, match="batch size 1"):
        OOMGuard(_Fits(limit=0), Batcher("auto")).generate(torch.zeros(5, 2), torch.Generator())
    with pytest.raises(TypeError):
        OOMGuard(_Fits(limit=10), Batcher("auto")).generate(torch.zeros(5, 2), torch.Generator(), bad=1)
    for bad in (0, -3, "big", True):
        with pytest.raises(SmoothgenError):
            Batcher(bad)


@pytest.mark.parametrize("value,ok", [("auto", True), ("64", True), ("0", False), ("many", False)])
def test_batch_size_config_accepts_integers_and_auto(value, ok):
    res = cli(f"certifier.batch_size={value}", "dry_run=true")
    assert (res.returncode == 0) == ok, res.stderr
    if not ok:
        assert res.stderr.strip().splitlines()[-1].startswith("error: certifier.batch_size=")


# ----------------------------------------------------------------------------- real loading code
@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Tiny models written with save_pretrained: the real configs load them through from_pretrained."""
    from smoothgen_exp.backbones.clip import build_clip
    from smoothgen_exp.backbones.lm import tiny_model, tiny_tokenizer
    from smoothgen_exp.models.diffusion import tiny_pipeline
    from smoothgen_exp.models.vlm import tiny_llava

    root = tmp_path_factory.mktemp("checkpoints")
    tiny_pipeline(TINY_SD).save_pretrained(root / "sd")
    for name, (processor, model) in {"clip": build_clip("tiny", None, TINY_CLIP),
                                     "llava": tiny_llava({**TINY_CLIP, "seed": 0}),
                                     "gpt2": (tiny_tokenizer(), None)}.items():
        if model is None:
            model = tiny_model("gpt2", len(processor), 64, 2, 2, 0)
        processor.save_pretrained(root / name)
        model.save_pretrained(root / name)
    processor, model = tiny_llava({**TINY_CLIP, "next": True})          # LLaVA-1.6's classes
    processor.save_pretrained(root / "llava16")
    model.save_pretrained(root / "llava16")
    from diffusers import AutoencoderKL  # Stable Diffusion's VAE class

    AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
                  norm_num_groups=8, sample_size=16).save_pretrained(root / "sd_vae")
    return root


@pytest.mark.parametrize("name,args", [
    ("sd", ["model=sd15", "model.height=32", "model.width=32", "model.steps=2", "model.dtype=float32",
            "oracle.path={root}/clip", "oracle.image_size=32", "certifier.batch_size=auto"]),
    pytest.param("gpt2", ["model=gpt2"], marks=pytest.mark.slow),      # from_local, as llava (make test: 12 s each)
    ("llava", ["model=llava", "model.image_size=32", "model.dtype=float32", "model.max_new_tokens=4"]),
    pytest.param("llava16", ["model=llava16", "model.image_size=32", "model.dtype=float32", "model.max_new_tokens=4"],
                 marks=pytest.mark.slow),
    # the feature certifier's betting bound needs n >= 32 to reach cosine 1/2 at alpha = 0.001
    pytest.param("clip", ["model=clip_vision", "model.image_size=32", "oracle.image_size=32", "certifier.n=64"],
                 marks=pytest.mark.slow),
    pytest.param("sd_vae", ["model=sd_vae", "model.image_size=16", "model.dtype=float32"], marks=pytest.mark.slow),
])
def test_real_configs_load_local_checkpoints_through_from_pretrained(tmp_path, checkpoints, name, args):
    n = next((int(a.split("=")[1]) for a in args if a.startswith("certifier.n=")), 16)
    args = [*args, f"certifier.n={n}"] if n == 16 else args
    res = cli(*(a.format(root=checkpoints) for a in args), f"model.path={checkpoints / name}", "dataset.limit=1",
              "certifier.n0=8", "aggregator.n=4", "progress=false", f"cache_dir={CACHE}",
              f"hydra.run.dir={tmp_path}", env={"HF_HOME": str(tmp_path / "empty_hf_home"), "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["items"] == 1 and summary["n"] == n
    if name == "sd_vae":       # RGB 16x16 reconstructions in [0, 1]: the output ball's radius sqrt(768) / 2
        assert summary["mean_diag_rho"] == pytest.approx(math.sqrt(3 * 16 * 16) / 2)

