"""oracle=none: no classes. For generators judged by distances, not classes (a GAN's faces).

Every output is class 0, so what needs no class runs unchanged: `certifier=output_bound`, `distribution`
(TV and W_p bounds; items without a label have no harm event) and `center` (metric=l2), the `mean` and
`ot_blend` aggregators, and attacks with `attack.objective=distance`. It answers no question a class
certificate asks: with `certifier=cohen` every item would "certify" class 0 at the largest radius n
allows, which says nothing. Two classes, because the voting code counts at least two; class 1 never occurs.
Its features are the outputs themselves, flattened (an attack's cosine and `metric=feature` then compare
the outputs directly).
"""

from __future__ import annotations

import torch

from smoothgen_exp.config import configured
from smoothgen_exp.oracles.base import ClassEquivalence


@configured
class NoOracle(ClassEquivalence):
    num_classes = 2
    has_classes = False        # no ground truth: rows' `correct` is left empty
    reads = ("image", "features")  # tensors, flattened
    classifies = False         # one class for everything: class certificates are refused (checks.py)

    def __init__(self, *, cache_dir: str = "outputs/cache", device: str | torch.device = "cpu"):
        self.device = torch.device(device)

    def classify(self, outputs) -> torch.Tensor:
        return torch.zeros(len(outputs), dtype=torch.long)

    def features(self, outputs) -> torch.Tensor:
        return torch.as_tensor(outputs).reshape(len(outputs), -1).float()
