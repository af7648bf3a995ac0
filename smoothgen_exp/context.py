"""One item's view of a run: its condition, the generator, the oracle, the noise law and its seeds.

Certifiers, aggregators and attacks draw everything through this object, so every random stream is
seeded by (run seed, item_id, stream name) (SPEC 7). Noise comes from a stream's `core.NoiseStream` and
the generator's randomness from one seed per row (`seeding.row_seeds`), so no draw depends on how rows
are batched: sampling programs (`packing`) draw through `stream(name)`, the other parts through
`outputs` / `smooth` (`core.noisy_batches`: a preallocated buffer, outputs streamed batch by batch).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from smoothgen_exp.core import NoiseStream, Smooth, noisy_batches
from smoothgen_exp.seeding import item_seed


def batch_of_one(output):
    """A batch holding one output: [1, ...] for tensors, a one-element list for text."""
    return output[None] if isinstance(output, torch.Tensor) else [output]


@dataclass
class ItemStream:
    noise: NoiseStream               # x + eta in fixed chunks (core.NoiseStream)
    model_gen: torch.Generator       # the generator's per-row seeds (seeding.row_seeds), on the CPU


@dataclass
class ItemContext:
    item: Any                 # .item_id, .condition, .label
    x: torch.Tensor           # the clean condition in the noised space
    model: Any                # generator protocol: encode / generate
    oracle: Any               # oracle protocol: classify (+ features, equivalent where it has them)
    noise: Any                # the noise law at this item (smoothing protocol)
    run_seed: int
    batch_size: int
    aggregator: Any = None    # the run's aggregator (what the smoothed row shows), where a certifier needs it
    smoothing: Any = None     # the run's noise law (`.at(z, model)`: the law at any condition); None: `noise`
    # what a certificate was issued for (the representative answer, the feature direction u, the
    # certified tokens), kept by the certifier so that an attacked point can be checked against it
    evidence: dict = field(default_factory=dict)
    # the item's named random streams, continued across requests (packing.run_programs draws from them)
    streams: dict = field(default_factory=dict)
    # seconds spent on the item, by phase (baseline | aggregate | certify): under packing, its rows'
    # share of each shared generator call plus its own programs' work
    phase: str = "setup"
    timings: dict = field(default_factory=dict)

    def __post_init__(self):
        # a model whose prompt is not in the condition (a VLM: noise on the image) binds the item's own
        bind = getattr(self.model, "for_item", None)
        if bind is not None:
            self.model = bind(self.item)

    @property
    def device(self) -> torch.device:
        return self.x.device

    @property
    def num_classes(self) -> int:
        return self.oracle.num_classes

    def noise_at(self, z: torch.Tensor):
        """The law the smoothed generator uses at condition z: `noise` unless it depends on the input
        (smoothing=adaptive), where an attacked point gets its own."""
        return self.noise if self.smoothing is None else self.smoothing.at(z, self.model)

    def noise_scales(self, z: torch.Tensor) -> torch.Tensor | float:
        """sigma(z_b) / sigma(x) for each row b of z, shaped [B, 1, ...] to scale x's draws to each row's
        law (1 for noise fixed in advance; the law at z_b is isotropic Gaussian, as `noise_at` gives)."""
        if self.smoothing is None:
            return 1.0
        scales = [self.noise_at(zb.detach()).sigma / self.noise.sigma for zb in z]
        return torch.tensor(scales, dtype=z.dtype, device=z.device).reshape(-1, 1, *[1] * (z.dim() - 1))

    def seed(self, stream: str) -> int:
        return item_seed(self.run_seed, self.item.item_id, stream)

    def generator(self, stream: str, device: torch.device | str | None = None) -> torch.Generator:
        return torch.Generator(device=device or self.device).manual_seed(self.seed(stream))

    def model_generator(self, stream: str) -> torch.Generator:
        """The source of the generator's per-row seeds for `stream` (on the CPU: `randint` there takes one
        draw per row, whatever the batch, which a CUDA generator's offsets do not promise)."""
        return self.generator(f"{stream}/model", "cpu")

    def stream(self, name: str) -> ItemStream:
        """The stream `name`: noise from generator `<name>/noise`, generator seeds from `<name>/model`."""
        if name not in self.streams:
            self.streams[name] = ItemStream(NoiseStream(self.x, self.noise, self.generator(f"{name}/noise")),
                                            self.model_generator(name))
        return self.streams[name]

    def add_time(self, seconds: float, phase: str | None = None) -> None:
        phase = phase or self.phase
        self.timings[phase] = self.timings.get(phase, 0.0) + seconds

    def base(self, stream: str) -> Callable[[torch.Tensor], torch.Tensor]:
        """The base classifier O(G(z)); G's own randomness comes from `<stream>/model`."""
        gen = self.model_generator(stream)
        return lambda z: self.oracle.classify(self.model.generate(z, gen))

    def smooth(self, stream: str) -> Smooth:
        return Smooth(self.base(stream), noise=self.noise, num_classes=self.num_classes)

    @torch.inference_mode()
    def outputs(self, num: int, stream: str, batch_size: int | None = None,
                at: torch.Tensor | None = None) -> Iterator[torch.Tensor]:
        """Generations G(x + eta) (or G(at + eta)) for `num` fresh draws of stream `stream`, batch by batch."""
        noise_gen, model_gen = self.generator(f"{stream}/noise"), self.model_generator(stream)
        centre = self.x if at is None else at
        for z in noisy_batches(centre, num, batch_size or self.batch_size, self.noise, noise_gen):
            yield self.model.generate(z, model_gen)

    @torch.inference_mode()
    def baseline_output(self) -> torch.Tensor:
        """One generation from the clean condition (the undefended generator)."""
        return self.model.generate(self.x[None], self.model_generator("baseline"))[0]
