"""The embedded default's parts: data, MiniLM encoder, digit oracle and generator."""

import numpy as np
import pytest
import torch

from smoothgen_exp.backbones.text_encoder import minilm_path
from smoothgen_exp.data.digits import SPLITS, TEMPLATES, DigitsPrompts, digit_images, prompt
from smoothgen_exp.errors import WeightsNotFound
from smoothgen_exp.oracles.digits import heldout_accuracy


def test_prompts_and_splits():
    assert len(TEMPLATES) >= 16 and len(SPLITS["heldout"]) >= 4
    items = DigitsPrompts("heldout")
    assert len(items) == 10 * len(SPLITS["heldout"])
    assert len({it.item_id for it in items}) == len(items)
    assert {it.label for it in items} == set(range(10))
    assert len(DigitsPrompts("heldout", limit=4)) == 4
    train_prompts = {prompt(t, d) for t in SPLITS["train"] for d in range(10)}
    assert not train_prompts & {it.condition for it in items}
    x_tr, _ = digit_images("train")
    x_te, y_te = digit_images("heldout")
    assert x_tr.shape[1:] == (1, 8, 8) and 0 <= x_tr.min() and x_tr.max() <= 1
    assert len(x_tr) + len(x_te) == 1797 and set(y_te) == set(range(10))


def test_oracle_is_accurate_on_real_heldout_digits(oracle):
    assert oracle.heldout_accuracy >= 0.97
    assert heldout_accuracy(oracle.net) == pytest.approx(oracle.heldout_accuracy, abs=1e-6)
    x, _ = digit_images("heldout")
    assert oracle.features(torch.from_numpy(x[:5])).shape == (5, 128)


def test_minilm_embeddings_are_unit_norm_and_semantic(t2i):
    e = t2i.encode(["a handwritten seven", "the digit 7", "a drawing of a three"])
    assert e.shape == (3, 384)
    assert torch.allclose(e.norm(dim=1), torch.ones(3), atol=1e-5)
    assert e[0] @ e[1] > e[0] @ e[2]


def test_generator_follows_heldout_prompts_and_its_latent_is_used(t2i, oracle):
    assert t2i.heldout_prompt_accuracy >= 0.9
    items = DigitsPrompts("heldout")
    z = t2i.encode([it.condition for it in items])
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        images = t2i.generate(z.repeat_interleave(8, 0), gen)
        pred = oracle.classify(images).numpy()
    labels = np.repeat([it.label for it in items], 8)
    assert np.mean(pred == labels) >= 0.9
    assert images.min() >= 0 and images.max() <= 1
    # different latent draws give visibly different images of the same prompt (no collapsed latent)
    per_prompt = images.reshape(len(items), 8, -1)
    assert per_prompt.std(dim=1).mean() > 0.02


def test_generation_is_deterministic_given_the_generator(t2i):
    z = t2i.encode(["show me a 4"]).repeat(5, 1)
    a = t2i.generate(z, torch.Generator().manual_seed(3))
    b = t2i.generate(z, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_missing_minilm_weights_raise_one_line(tmp_path):
    with pytest.raises(WeightsNotFound, match="weights not found"):
        minilm_path(str(tmp_path))
