"""An upper confidence bound on an oracle's error rate, for `certifier.oracle_error` (SPEC C1).

The certificate asks the oracle one binary question per sample: "is this output of class c?". The sound
(`bounded`) model needs one rate below eps: the false-positive rate P(says c_A | is not c_A) under the
generated outputs' class mix, which is unknown and need not be the held-out set's (noisy samples of one
prompt are mostly one class). Whatever the mix, that rate is a weighted mean of the confusions
P(says c_A | is k), k != c_A, each at most class k's false-negative rate P(says not k | is k). So the K
false-negative rates, each with a one-sided Clopper-Pearson upper bound at alpha / K (Bonferroni; they
hold together with prob. >= 1 - alpha), bound it for every mix: eps is their maximum. A pooled
false-positive estimate at the held-out class frequencies would not (the counts are listed, not used).
It bounds the oracle on data like the held-out set; for generated outputs that is an assumption, which
the records state by carrying eps and the error model.
"""

from __future__ import annotations

import numpy as np

from smoothgen_exp.stats import cp_upper


def oracle_error_bound(pred: np.ndarray, labels: np.ndarray, num_classes: int, alpha: float = 0.001) -> dict:
    pred, labels = np.asarray(pred), np.asarray(labels)
    level = alpha / num_classes
    rows = []
    for c in range(num_classes):
        pos, neg = labels == c, labels != c
        fn, fp = int(np.sum(pos & (pred != c))), int(np.sum(neg & (pred == c)))
        rows.append({"class": c, "false_neg": fn, "positives": int(pos.sum()), "false_pos": fp,
                     "negatives": int(neg.sum()),
                     "fn_upper": cp_upper(fn, int(pos.sum()), level) if pos.any() else 1.0})
    eps = max(r["fn_upper"] for r in rows)
    return {"eps": eps, "alpha": alpha, "accuracy": float(np.mean(pred == labels)), "n": int(len(labels)),
            "per_class": rows}
