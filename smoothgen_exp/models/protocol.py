"""What the runner asks of a generator (`model=...`). Torch-free: the types are only named.

Every model has `generate`, and `encode` (conditions -> the noised space) or `encode_items` (items with
their images -> the noised space); the rest depends on what it generates. The tiny twins in
`conf/model/tiny_*.yaml` implement the same protocol with random weights, and are what tests run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

# the dataset items a model conditioned on each kind reads (a class's `reads` says so where it differs: a VLM
# noises its image but reads prompts, with the images they name)
ITEMS_READ = {"text": "prompts", "image": "images", "latent": "latent seeds"}


def model_reads(model: type) -> str | None:
    """The kind of dataset item a model class reads: prompts, images or latent seeds (checks.py)."""
    return getattr(model, "reads", None) or ITEMS_READ.get(getattr(model, "condition_kind", None))


@runtime_checkable
class Generator(Protocol):
    """G: condition -> output. Noise is added in the space `encode` returns."""

    condition_kind: str        # "text" (prompts) | "image" (pixels in [0, 1]) | "latent" (a GAN's latent)
    # the dataset items it reads follow from it (`model_reads`); a class says `reads` where they do not
    differentiable: bool       # white-box attacks (PGD) need gradients through `generate`

    def generate(self, z: Any, generator: Any) -> Any:
        """One generation per row of z (a tensor [B, ...]), seeded by `generator`, a torch Generator or a
        tensor of per-row seeds (`seeding.row_seeds`: packing and the attacks' shared draws pass seeds): images
        [B, C, H, W] in `output_range`, feature vectors [B, d], or a list of B strings."""


@runtime_checkable
class ImageGenerator(Generator, Protocol):
    """Outputs are arrays: output bounds and mean aggregation apply."""

    output_shape: tuple[int, ...]
    output_range: tuple[float, float]


@runtime_checkable
class TextGenerator(Generator, Protocol):
    """Autoregressive text: token-averaged decoding (`aggregator=token_average`) and certified decoding."""

    max_new_tokens: int

    def token_average(self, z: Any, generator: Any, use_cache: bool = True, greedy: bool = True,
                      steps: int | None = None) -> tuple[list[int], Any]: ...

    def step_probs(self, z: Any, tokens: Sequence[int]) -> Any: ...

    def decode(self, tokens: Sequence[int]) -> str: ...


@runtime_checkable
class EncodesConditions(Protocol):
    """Conditions alone (prompts) -> the noised space: a tensor [B, ...] (prompt embeddings)."""

    def encode(self, conditions: Sequence[Any]) -> Any: ...


@runtime_checkable
class EncodesItems(Protocol):
    """A model whose condition needs more than the item's text (a vision-language model's image)."""

    def encode_items(self, items: Sequence[Any], images: dict | None) -> Any: ...
