"""Is a certificate violated at an attacked point? A sound test, not a noisy estimate (SPEC 4).

Only certified items (radius > 0, not abstained, `certificate_valid`) attacked to a point z other than x
within their radius are checked: an abstained item promises nothing, so an attack that leaves it
unchanged is no violation, and an attack that returned x itself tests no attack.
At an attacked condition z with d = ||z - x|| <= R, each kind of certificate promises a value:

- class (`cohen`, `sequential`) and answer (`semantic`) certificates promise
  p_A(z) >= Phi(Phi^-1(p_lower) - d / s) > 1/2, s the noise law's L2 scale (sigma). Under a fixed
  covariance (`smoothing=calibrated`) distances are Mahalanobis, ||Sigma^{-1/2}(z - x)|| against
  `radius_mahalanobis`, in place of d / s: that checks every point the certificate covers, not only
  those inside its (smaller) L2 radius sqrt(lambda_min) R. p_A(z) is the probability of
  the certified class (or of an output equivalent to the certified answer). With an oracle-error
  correction (bounded model, false-negative rate <= eps) the vote rate q satisfies q >= p (1 - eps), so
  p_A(z) <= q_upper / (1 - eps);
- feature certificates (`feature`, C4) promise s(z) = (1 + <F(z), u>)/2 >= Phi(Phi^-1(s_lower) - d/sigma);
- decoding certificates (`decoding`, C5) promise, at every step t of the certified sequence y,
  p_t(y_t | z, y_<t) >= Phi(Phi^-1(pA_lower,t) - d/sigma).

A violation is reported only when a one-sided upper confidence bound on the promised quantity at z,
from `n` fresh samples at level `alpha` (Clopper-Pearson for counts, Hoeffding for [0, 1] means, split
over the steps of a sequence), falls below the promise. A sound certificate is then reported violated
with probability at most alpha (plus the certificate's own alpha), so a reported violation is evidence
of a bug, not Monte Carlo noise. PREDICT, which abstains near ties, is not used as the judge.
"""

from __future__ import annotations

import math

import torch
from scipy.stats import norm

from smoothgen_exp.certifiers.decoding import step_prob_batches
from smoothgen_exp.stats import cp_upper, hoeffding_upper

WITHIN_SLACK = 1e-6      # relative: an attack this far past the radius (rounding) is checked all the same


def promised(p_lower: float, distance: float) -> float:
    """The least value a certificate with lower bound p_lower promises at `distance` (in noise units, `reach`)."""
    return float(norm.cdf(norm.ppf(p_lower) - distance))


def rounding(ctx, z: torch.Tensor) -> float:
    """How far rounding z's coordinates can move it, in the noise's units: eps * ||z|| over the L2 scale
    (sigma; sqrt(lambda_min) under a fixed covariance, where ||Sigma^-1/2 e|| <= ||e|| / sqrt(lambda_min)).
    eps is z's dtype's, at most float32's (a half-precision z's rounding would reach far past R)."""
    eps = min(torch.finfo(z.dtype).eps, torch.finfo(torch.float32).eps) if z.is_floating_point() else 0.0
    return eps * float(z.double().norm()) / ctx.noise.l2_scale


def checkable(row: dict) -> bool:
    """Certified (radius > 0, not abstained) under a valid certificate."""
    radius = row.get("radius")
    return (bool(row.get("certified")) and not bool(row.get("abstained"))
            and radius is not None and not math.isnan(radius) and radius > 0
            and bool(row.get("certificate_valid", False)))


def reach(ctx, row: dict, z: torch.Tensor) -> tuple[float, float | None]:
    """(how far z is from x, how far the certificate reaches), both in units of the noise: the
    Mahalanobis distance and radius under a fixed covariance, else L2 over the noise's L2 scale."""
    delta = z.to(ctx.x.device, torch.float64) - ctx.x.to(torch.float64)      # as attack_distance is measured
    whiten = getattr(ctx.noise, "whitened_norm", None)
    if whiten is not None and row.get("radius_mahalanobis") is not None:
        return whiten(delta), row["radius_mahalanobis"]
    radius = row.get("radius")
    return float(delta.norm()) / ctx.noise.l2_scale, None if radius is None else radius / ctx.noise.l2_scale


def check_certificate(certifier, ctx, row: dict, z: torch.Tensor, n: int, alpha: float) -> dict:
    """The `certificate_*` columns of a smoothed row attacked to condition z."""
    distance, radius = reach(ctx, row, z) if checkable(row) else (math.inf, 0.0)
    # an attack that returned x itself moved nothing: its point is the clean one, not a check of the
    # certificate against an attack (found by a new user: 3 of 3 "checked" at distance 0)
    # the promise holds at every distance, so a rounding's worth past R is still a sound check: an attack
    # projected onto the sphere ||delta|| = R lands outside it by up to the rounding of z's coordinates
    # (3 of 10 unchecked at eps = R: review; 60 of 200 at R = 0.005 with a relative slack alone: diff review)
    within = 0 < distance <= radius * (1 + WITHIN_SLACK) + rounding(ctx, z)
    # unchecked: no verdict (null), not "checked, no violation"
    out = {"attack_within_radius": within, "certificate_checked": False, "certificate_violation": None}
    if checkable(row):      # the distance and the reach the check compares (Mahalanobis under calibrated noise)
        out.update(attack_reach=distance, certificate_reach=radius)
    kind = getattr(certifier, "certifies", None)
    if not within or kind not in CHECKS:
        return out
    test = CHECKS[kind](certifier, ctx, row, z.to(ctx.x), distance, n, alpha)
    return {**out, "certificate_checked": True, "certificate_check_n": n, "certificate_check_alpha": alpha,
            **test, "certificate_violation": bool(test["certificate_check_upper"] < test["certificate_promise"])}


def _class_check(certifier, ctx, row, z, distance, n, alpha) -> dict:
    p_lower = row.get("p_lower")
    if p_lower is None or (isinstance(p_lower, float) and math.isnan(p_lower)):
        p_lower = row["p_required"]              # sequential: p_A(x) > p_required was certified
    promise = promised(p_lower, distance)
    if certifier.certifies == "answer":
        reference = ctx.evidence["representative"]
        k = sum(int(ctx.oracle.equivalent(batch, reference).sum()) for batch in ctx.outputs(n, "check", at=z))
    else:
        counts = ctx.smooth("check").sample_counts(z, n, ctx.batch_size, ctx.generator("check/noise"))
        k = int(counts[int(row["prediction"])])
    upper = cp_upper(k, n, alpha)
    eps = getattr(certifier, "oracle_error", None)
    if eps is not None:
        upper = min(1.0, upper / (1.0 - eps))
    return {"certificate_promise": promise, "certificate_check_upper": upper, "certificate_check_count": k}


def _feature_check(certifier, ctx, row, z, distance, n, alpha) -> dict:
    u = ctx.evidence["direction"]
    total = 0.0
    for out in ctx.outputs(n, "check", at=z):
        total += float(((1.0 + certifier.features(ctx, out) @ u) / 2.0).sum())
    promise = promised(row["bound_s_lower"], distance)
    return {"certificate_promise": promise, "certificate_check_upper": hoeffding_upper(total / n, n, alpha)}


def _decoding_check(certifier, ctx, row, z, distance, n, alpha) -> dict:
    tokens = ctx.evidence["tokens"]
    total = sum(p.sum(0) for p in step_prob_batches(ctx, tokens, n, certifier.batch_size, z, "check/noise"))
    level = alpha / len(tokens)
    uppers = [hoeffding_upper(float(m), n, level) for m in total / n]
    promises = [promised(p, distance) for p in row["decoding_step_p_lower"]]
    worst = min(range(len(tokens)), key=lambda t: uppers[t] - promises[t])
    return {"certificate_promise": promises[worst], "certificate_check_upper": uppers[worst],
            "certificate_check_step": worst}


CHECKS = {"class": _class_check, "answer": _class_check, "cosine": _feature_check,
          "sequence": _decoding_check}
