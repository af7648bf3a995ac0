"""certifier=semantic: certify the *answer* of a generator, up to equivalence (RS-for-VLM Algorithm 2).

1. n0 selection samples are clustered by the oracle's equivalence; the representative output is the
   first member of the largest cluster.
2. n fresh estimation samples each answer one binary question, "equivalent to the representative?".
   Their count k gives q_lower = CP_lower(k, n, alpha), corrected for oracle error as in `cohen`.
3. If p_lower > 1/2 the representative's equivalence class is certified with the noise law's radius.

The paper counts on the same samples it selects from; here selection and estimation are disjoint, which
is what makes the Clopper-Pearson bound valid. The oracle-error model, its confidence and the
validity flag are those of `cohen`. The certified object is an answer: `prediction` is the oracle's
class of it where the oracle has classes (else 0), and it counts as "correct" only then.
"""

from __future__ import annotations

import torch

from smoothgen_exp.certifiers.base import Certifier
from smoothgen_exp.certifiers.cohen import OracleErrorModel
from smoothgen_exp.config import configured
from smoothgen_exp.core import ABSTAIN
from smoothgen_exp.packing import Program, output_batches
from smoothgen_exp.stats import cp_lower, oracle_corrected_lower


def collect(batches) -> torch.Tensor | list:
    """Concatenate output batches (tensors, or lists for text outputs)."""
    batches = list(batches)
    return torch.cat(batches) if isinstance(batches[0], torch.Tensor) else [o for b in batches for o in b]


@configured
class SemanticCertifier(OracleErrorModel, Certifier):
    name = "semantic"
    certifies = "answer"

    def __init__(self, n0: int, n: int, alpha: float, batch_size: int | str,
                 oracle_error: float | None, oracle_error_model: str,
                 oracle_error_alpha: float | None):
        super().__init__(n0, n, alpha, batch_size)
        self._init_oracle_error(oracle_error, oracle_error_model, oracle_error_alpha)

    def _program(self, ctx) -> Program:
        selection = []
        for draw in output_batches(self.n0, ctx.batch_size, "select", classify=False):
            selection.append((yield draw).outputs)
        selection = collect(selection)
        clusters = ctx.oracle.cluster(selection)
        ids, sizes = torch.unique(clusters, return_counts=True)
        top = ids[sizes.argmax()]
        representative = selection[int((clusters == top).nonzero()[0, 0])]
        ctx.evidence["representative"] = representative
        k = 0
        for draw in output_batches(self.n, ctx.batch_size, "estimate", classify=False):
            batch = (yield draw).outputs
            with torch.inference_mode():
                k += int(ctx.oracle.equivalent(batch, representative).sum())
        q_lower = cp_lower(k, self.n, self.alpha)
        p_lower = oracle_corrected_lower(q_lower, self.oracle_error, self.oracle_error_model)
        certified = p_lower > 0.5
        answer = ctx.oracle.describe(representative)
        return {"prediction": answer if certified else ABSTAIN, "top_class": answer,
                "cluster_share_selection": float(sizes.max()) / self.n0, "count": k, "q_lower": q_lower,
                "p_lower": p_lower, **ctx.noise.radius_columns(p_lower, certified),
                "certified": certified, "abstained": not certified,
                "abstain_reason": "" if certified else "p_lower<=0.5",
                **self.oracle_error_columns(), "samples_used": self.n0 + self.n,
                # the certified answer itself (the row's output_text is the aggregator's, which may not be
                # equivalent to it; found by review); none where the item abstains
                **({"certified_text": representative if certified else None} if isinstance(representative, str) else {})}
