"""Majority vote over oracle classes: the smoothed generator's output for classification certificates.

Streaming: `update` sees each batch of (generations, oracle labels) once and keeps only the vote counts
and the first generation of each class; `result` gives the winning class and that generation.
"""

from __future__ import annotations

import torch


class Majority:
    def __init__(self):
        self.counts: torch.Tensor | None = None
        self.representatives: dict[int, torch.Tensor] = {}

    def reset(self, num_classes: int) -> None:
        self.counts = torch.zeros(num_classes, dtype=torch.long)
        self.representatives = {}

    def update(self, outputs: torch.Tensor, labels: torch.Tensor) -> None:
        labels_cpu = labels.reshape(-1).cpu()
        self.counts += torch.bincount(labels_cpu, minlength=len(self.counts))
        for c in labels_cpu.unique().tolist():
            if c not in self.representatives:
                first = int((labels_cpu == c).nonzero()[0])
                self.representatives[c] = outputs[first].detach().cpu().clone()

    def result(self) -> tuple[int, torch.Tensor | None]:
        """(majority class, one generation of that class); (-1, None) before any update."""
        if self.counts is None or int(self.counts.sum()) == 0:
            return -1, None
        top = int(self.counts.argmax())
        return top, self.representatives[top]
