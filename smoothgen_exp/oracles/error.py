"""An upper confidence bound on an oracle's error rate, for `certifier.oracle_error` (SPEC C1).

The certificate asks the oracle one binary question per sample: "is this output of class c?". Its
error has two directions per class: false negatives P(says not c | is c) and false positives
P(says c | is not c). From labelled held-out data each of the 2K rates gets a one-sided
Clopper-Pearson upper bound at alpha / (2K) (Bonferroni), so all hold together with prob. >= 1 - alpha;
eps is their maximum. It bounds the oracle on data like the held-out set; for generated outputs that
is an assumption, which the records state by carrying eps and the error model.
"""

from __future__ import annotations

import numpy as np

from smoothgen_exp.stats import cp_upper


def oracle_error_bound(pred: np.ndarray, labels: np.ndarray, num_classes: int, alpha: float = 0.001) -> dict:
    pred, labels = np.asarray(pred), np.asarray(labels)
    level = alpha / (2 * num_classes)
    rows = []
    for c in range(num_classes):
        pos, neg = labels == c, labels != c
        fn, fp = int(np.sum(pos & (pred != c))), int(np.sum(neg & (pred == c)))
        rows.append({"class": c, "false_neg": fn, "positives": int(pos.sum()), "false_pos": fp,
                     "negatives": int(neg.sum()),
                     "fn_upper": cp_upper(fn, int(pos.sum()), level) if pos.any() else 1.0,
                     "fp_upper": cp_upper(fp, int(neg.sum()), level) if neg.any() else 1.0})
    eps = max(max(r["fn_upper"], r["fp_upper"]) for r in rows)
    return {"eps": eps, "alpha": alpha, "accuracy": float(np.mean(pred == labels)), "n": int(len(labels)),
            "per_class": rows}
