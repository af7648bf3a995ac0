"""Oracle protocol: map generations to classes, and answer "is this output equivalent to that one?".

A class oracle (`classify`, `num_classes`) gets equivalence for free: two outputs are equivalent when
their classes agree. Oracles with a finer notion (text similarity, issue 6) override both methods.
"""

from __future__ import annotations

import torch

from smoothgen_exp.context import batch_of_one


class ClassEquivalence:
    """`cluster` and `equivalent` for an oracle that has `classify`."""

    has_classes = True        # its classes are ground truth that items' labels can be compared with

    def cluster(self, outputs) -> torch.Tensor:
        """An equivalence-class id per output."""
        return self.classify(outputs)

    def equivalent(self, outputs, reference) -> torch.Tensor:
        """Boolean per output: is it equivalent to `reference` (one output)?"""
        ref = self.classify(batch_of_one(reference))[0]
        return self.classify(outputs) == ref

    def describe(self, output) -> int:
        """What the certified output is, in the oracle's terms (here: its class)."""
        return int(self.classify(batch_of_one(output))[0])
