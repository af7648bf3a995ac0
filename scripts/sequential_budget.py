"""Where the sequential certifier's samples go at a target radius, by the items' p_A (README, Performance).

    python scripts/sequential_budget.py [--radius 0.5] [--seeds 5] [--points 100] [--budget-share 0.8]
                                        [--give-up-alpha 0.05] [--clairvoyant] [--bayes-worth 3]
                                        [--give-up predictive] [--worth 3] [--horizon 13110]

The `make bench` comparison (100 held-out digits in pixel space, sigma 0.25, alpha 0.001, fixed n = 10,000
against `certifier=sequential` on the same budget) with the digit oracle replaced by a Bernoulli vote: item
i's vote is its true label with probability p_i, its fixed-n vote rate k_i / n, else another class. The real
`SequentialCertifier` decides each item on those votes, over several seeds. Per bucket of p_i it prints the
items, the mean samples to decide, their share of all samples, and the items certified against those that
fixed-n Clopper-Pearson certifies at the same p_i. It shows which items set the mean: those just above p*
need about log(1/alpha) / KL(p || p*) samples, with any bet. --bayes-worth W decides them with
`certifier=sequential_bayes` at `worth=W` instead; --give-up and --worth set `certifier.give_up` and
`certifier.worth` of `certifier=sequential`. --horizon H gives the sequential certifier (and the clairvoyant) the budget H (fixed n stays --n; the
fraction printed is still of --n): Voracek's own code runs its sequential tests to 131,100 samples against
fixed n = 100,000, 1.311 times.

--clairvoyant adds the comparator of `make bench` (bench.known_rate_bet: told each item's p_A, it bets the
likelihood ratio of p_A against p* from the first sample) on the same votes: its mean samples and
certified items over the seeds, first on every item above p*, then told also which items to skip: it
drops the items with the most samples per certificate (means over the same seeds, so the plan is chosen
in sample) wherever its certified count stays within one item of fixed n's (or, where it certifies
fewer, drops only items it never certifies).
With --budget-share it adds a Clopper-Pearson test at the budget at that share of alpha (a union bound;
the certifier's own test at the budget is exact, and has what its bet leaves of alpha). It shows what
the items cost once it is known what to stake and which items to give up on; a certifier has to learn
both from the votes.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from scipy.stats import binom

from smoothgen_exp.bench import PixelIdentity, known_rate_bet
from smoothgen_exp.certifiers.sequential import GIVE_UP_RULES, SequentialCertifier
from smoothgen_exp.certifiers.sequential_bayes import BayesSequentialCertifier
from smoothgen_exp.cli import script_parser
from smoothgen_exp.config import SequentialConf
from smoothgen_exp.context import ItemContext
from smoothgen_exp.core import Smooth
from smoothgen_exp.data.digits import digit_images
from smoothgen_exp.errors import SmoothgenError
from smoothgen_exp.packing import run_one
from smoothgen_exp.smoothing.gaussian import GaussianNoise
from smoothgen_exp.stats import cp_lower

BUCKETS = (0.0, 0.95, 0.97, 0.977, 0.981, 0.985, 0.99, 1.0 + 1e-9)


class BernoulliOracle:
    """Votes `label` with probability p (else label + 1 mod 10), from its own seeded generator."""

    num_classes = 10

    def __init__(self, label: int, p: float, seed: int):
        self.label, self.p, self.gen = label, p, torch.Generator().manual_seed(seed)

    def classify(self, outputs: torch.Tensor) -> torch.Tensor:
        hit = torch.rand(len(outputs), generator=self.gen) < self.p
        return torch.where(hit, self.label, (self.label + 1) % 10)


def main(argv: list[str] | None = None) -> None:
    p = script_parser(__doc__)
    p.add_argument("--radius", type=float, default=0.5)
    p.add_argument("--sigma", type=float, default=0.25)
    p.add_argument("--alpha", type=float, default=0.001)
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--points", type=int, default=100)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--budget-share", type=float, default=None, help="certifier.budget_share (default: the config's)")
    p.add_argument("--give-up-alpha", type=float, default=SequentialConf.give_up_alpha,
                   help="certifier.give_up_alpha (default: the config's)")
    p.add_argument("--bayes-worth", type=float, default=None,
                   help="decide with certifier=sequential_bayes at this certifier.worth instead")
    p.add_argument("--give-up", choices=GIVE_UP_RULES, default=SequentialConf.give_up, help="certifier.give_up")
    p.add_argument("--worth", type=float, default=SequentialConf.worth, help="certifier.worth (the give-up table's)")
    p.add_argument("--horizon", type=int, default=None, help="the sequential certifier's budget (default: --n)")
    p.add_argument("--clairvoyant", action="store_true", help="add the told-p comparator and its skip plan")
    p.add_argument("--cache-dir", default="outputs/cache")
    args = p.parse_args(argv)

    import smoothgen_exp.training  # noqa: F401  (trains the oracle on first use)
    from smoothgen_exp.oracles.digits import DigitClassifier

    oracle = DigitClassifier(cache_dir=args.cache_dir)
    noise = GaussianNoise(args.sigma)
    smooth = Smooth(oracle.classify, noise=noise, num_classes=10)
    share = {} if args.budget_share is None else {"budget_share": args.budget_share}
    common = dict(n0=100, n=args.horizon or args.n, alpha=args.alpha, batch_size=1000, target_radius=args.radius)
    if args.bayes_worth is not None and (share or args.give_up_alpha != SequentialConf.give_up_alpha
                                         or args.give_up != SequentialConf.give_up or args.worth != SequentialConf.worth):
        p.error("--budget-share, --give-up-alpha, --give-up and --worth set certifier=sequential; --bayes-worth "
                "uses sequential_bayes")
    if args.bayes_worth is not None:
        certifier = BayesSequentialCertifier(**common, worth=args.bayes_worth)
    else:
        certifier = SequentialCertifier(**common, give_up_alpha=args.give_up_alpha, **share, give_up=args.give_up,
                                        worth=args.worth)
    try:
        certifier.prepare(noise)          # resolves give_up=auto and designs the table, before the fixed-n work
    except SmoothgenError as e:
        p.error(f"{e} (here: --horizon, --give-up)")
    name = f"{certifier.name} (" + ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                                             for k, v in certifier.settings().items() if k != "target_radius")
    name += f", budget {common['n']})"
    p_star = noise.required_p(args.radius)
    images, labels = digit_images("heldout")
    idx = torch.linspace(0, len(images) - 1, args.points).long().tolist()
    rates, fixed = [], []
    for i in idx:                                      # the fixed-n comparison of `make bench`
        cert = smooth.certify(torch.from_numpy(images[i]), 100, args.n, args.alpha, 1000, seed=i)
        rates.append(cert.count / args.n if cert.prediction == int(labels[i]) else 0.0)
        fixed.append(cert.prediction == int(labels[i]) and cert.radius >= args.radius)

    def decide(j: int, i: int, seed: int, clairvoyant: bool) -> tuple[float, bool]:
        """(samples, certified) of item j on its Bernoulli votes under this seed."""
        item = SimpleNamespace(item_id=f"heldout-{i}", condition="", label=int(labels[i]))
        ctx = ItemContext(item, torch.from_numpy(images[i]), PixelIdentity(),
                          BernoulliOracle(int(labels[i]), rates[j], seed * 100_003 + i), noise, run_seed=seed,
                          batch_size=1000)
        if clairvoyant:
            cp = (args.budget_share or 0.0) * args.alpha          # the Clopper-Pearson test at the budget, as in bench
            ok, samples = run_one(ctx, known_rate_bet(item.label, rates[j], p_star, common["n"], args.alpha - cp, cp))
            return samples, ok
        row = certifier.certify(ctx)
        return row["samples_used"], bool(row["certified"]) and row["prediction"] == item.label

    def over_seeds(clairvoyant: bool) -> tuple[torch.Tensor, torch.Tensor]:
        used = torch.zeros(len(idx), dtype=torch.float64)
        certified = torch.zeros(len(idx), dtype=torch.float64)
        for seed in range(args.seeds):
            for j, i in enumerate(idx):
                samples, ok = decide(j, i, seed, clairvoyant)
                used[j] += samples / args.seeds
                certified[j] += ok / args.seeds
        return used, certified

    used, certified = over_seeds(clairvoyant=False)
    fresh = fixed_on_fresh_votes(rates, args.n, args.alpha, p_star)
    total = float(used.sum())
    rate_t, fixed_t = torch.tensor(rates, dtype=torch.float64), torch.tensor(fixed)   # float64: a rate of 1 < 1 + 1e-9
    print(f"r = {args.radius}, p* = {p_star:.4f}; fixed n = {args.n} certifies "
          f"{int(fixed_t.sum())} ({fresh:.1f} expected on fresh votes), {name} {float(certified.sum()):.1f} "
          f"(mean of {args.seeds} seeds); "
          f"mean samples {total / len(idx):.0f} = {total / len(idx) / args.n:.3f} of n")
    print("| p_A | items | mean samples | share of all samples | certified (sequential / fixed) |")
    print("|---|---:|---:|---:|---:|")
    for lo, hi in zip(BUCKETS[:-1], BUCKETS[1:], strict=True):
        m = (rate_t >= lo) & (rate_t < hi)
        if m.any():
            print(f"| [{lo:g}, {min(hi, 1.0):g}{']' if hi > 1 else ')'} | {int(m.sum())} | {float(used[m].mean()):.0f} | "
                  f"{float(used[m].sum()) / total:.2f} | {float(certified[m].sum()):.1f} / {int(fixed_t[m].sum())} |")
    if args.clairvoyant:
        clairvoyant(*over_seeds(clairvoyant=True), int(fixed_t.sum()), args.n)


def fixed_on_fresh_votes(rates: list[float], n: int, alpha: float, p_star: float) -> float:
    """Fixed n's expected certified count on fresh votes at these rates: the sum of P(Binomial(n, p_i) >= k),
    k the least count whose Clopper-Pearson lower bound exceeds p*. The rates are estimated from the draw
    that certified the items, so an item whose count sat just at k certifies about half the time on fresh
    votes."""
    counts = np.arange(n + 1)
    certifying = counts[cp_lower(counts, n, alpha) > p_star]
    return sum(float(binom.sf(certifying[0] - 1, n, r)) for r in rates) if len(certifying) else 0.0


def clairvoyant(used: torch.Tensor, certified: torch.Tensor, fixed: int, n: int) -> tuple[int, float, float]:
    """The told-p comparator on every item, then told which items to skip (module docstring): in order of
    mean samples per certificate (over the same seeds, in sample), each item goes if the certified count
    stays at or above min(fixed - 1, all it certifies). Returns (skipped, fraction of n, certified)."""
    print(f"clairvoyant, every item above p*: {float(used.mean()) / n:.3f} of n, {float(certified.sum()):.1f} certified")
    keep = [j for j in range(len(used)) if used[j] > 0]
    floor = min(fixed - 1, float(certified.sum()))        # within one item of fixed n, or all it certifies
    for j in sorted(keep, key=lambda j: -float(used[j]) / max(float(certified[j]), 1e-12)):
        if float(certified[keep].sum() - certified[j]) >= floor - 1e-9:
            keep.remove(j)
    skipped = sum(1 for j in range(len(used)) if used[j] > 0 and j not in keep)
    share, kept = float(used[keep].sum()) / len(used) / n, float(certified[keep].sum())
    print(f"clairvoyant told which items to skip ({skipped} skipped): {share:.3f} of n, {kept:.1f} certified "
          f"(fixed n: {fixed})")
    return skipped, share, kept


if __name__ == "__main__":
    main()
