"""How far an attack moves the set of outputs: the W2 between clean and attacked outputs of a run, and the
run's metrics on the attacked outputs (`attacked_summary`: metrics=reconstruction's FID)."""

from __future__ import annotations

import torch


def output_set_distances(attacked: dict[str, list], metrics=None) -> dict[str, float]:
    """Empirical W2 between the clean and the attacked output sets of each variant (POT), and what the run's
    metrics say of the attacked outputs (`metrics.attacked_summary`, where it has one).

    Exact optimal transport (uniform weights, squared L2 cost) up to 2000 items, sliced beyond.
    Covers the items attacked by this process (a resumed run attacks only the new ones).
    """
    import ot

    out = {}
    for variant, pairs in attacked.items():
        pairs = [p for p in pairs if torch.is_tensor(p[0])]      # text outputs have no W2 here
        if not pairs:
            continue
        clean = torch.stack([c.reshape(-1) for c, _ in pairs]).double().numpy()
        adv = torch.stack([a.reshape(-1) for _, a in pairs]).double().numpy()
        if len(pairs) <= 2000:
            w2 = float(ot.emd2(ot.unif(len(clean)), ot.unif(len(adv)), ot.dist(clean, adv))) ** 0.5
        else:
            w2 = float(ot.sliced_wasserstein_distance(clean, adv, n_projections=500, seed=0))
        out[f"attack_w2_{variant}"] = w2
    out["attack_w2_items"] = max((len(p) for p in attacked.values()), default=0)
    if getattr(metrics, "enabled", False) and hasattr(metrics, "attacked_summary"):
        out.update(metrics.attacked_summary(attacked))
    return out
