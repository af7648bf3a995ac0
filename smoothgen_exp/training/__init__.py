"""Training: trained-at-first-use weights and the defences that need training.

Importing this package registers its trainers with `smoothgen_exp.weights`, so a model whose weights
are missing from the cache trains them on first use; `python -m smoothgen_exp.train task=...` trains
ahead of time. This package may import `models/`, `oracles/`, `attacks/` and `boosters/`; none of them
imports it.
"""

from smoothgen_exp.training import (
    digits,  # noqa: F401  (registers digit_oracle, digits_t2i, digit_probe)
    digits_diffusion,  # noqa: F401  (registers digits_diffusion)
    gsb,  # noqa: F401  (registers gsb_denoiser, gsb_mapper)
    vae,  # noqa: F401  (registers tiny_vae, srl_vae)
)
