"""`make bench`'s sequential comparison on several draws of the votes (README, Performance).

    python scripts/sequential_draws.py [--seeds 5] [--radius 0.5] [--points 100] [--n 10000]

`make bench` compares fixed n = 10,000 with `certifier=sequential` and `certifier=sequential_bayes` (their
config defaults) on one draw of the noise: 100 held-out digits in pixel space, sigma 0.25, alpha 0.001,
the real digit oracle, run seed 0. This runs the same comparison (`bench.bench_sequential` at the one
radius) at run seeds 0 .. seeds - 1 (seed 0 is `make bench`'s draw), fixed n included, so the spread of
`seq_samples_ratio` and `seq_acc_delta` between draws can be read beside the one draw the targets are
judged on. Per seed it prints fixed n's certified accuracy at the radius, and each sequential
certifier's certified accuracy and mean samples to decide (as a fraction of n): `sequential` (its designed
give-up table), the same with `give_up=predictive`, and `sequential_bayes`; then their means.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from smoothgen_exp.bench import bench_sequential
from smoothgen_exp.cli import script_parser
from smoothgen_exp.config import SequentialBayesConf, SequentialConf

CERTIFIERS = ("sequential", "sequential_predictive", "sequential_bayes")   # the table's columns, after fixed n


def draw(oracle, seed: int, args) -> dict:
    """Certified accuracy at args.radius of fixed n and of both sequential certifiers (config defaults),
    and their mean samples to decide as a fraction of n, on the votes of run seed `seed`."""
    bench = SimpleNamespace(seq_points=args.points, n=args.n, n0=100, alpha=args.alpha, sigma=args.sigma,
                            batch_size=1000, seq_radii=[args.radius], target_radius=args.radius, seq_n0=100,
                            seq_max_n=args.n, give_up_alpha=SequentialConf.give_up_alpha,
                            seq_budget_share=0.8, seq_worth=SequentialBayesConf.worth)
    out = bench_sequential(oracle, bench, torch.device("cpu"), run_seed=seed)
    bayes = out["seq_bayes_by_radius"][f"{args.radius:g}"]
    predictive = out["seq_predictive_give_up"]
    return {"fixed": out["fixed_certified_accuracy_at_r"],
            "sequential": (out["seq_certified_accuracy_at_r"], out["seq_samples_ratio"]),
            "sequential_predictive": (predictive["seq_certified_accuracy"], predictive["seq_samples_ratio"]),
            "sequential_bayes": (bayes["seq_certified_accuracy"], bayes["seq_samples_ratio"])}


def main(argv: list[str] | None = None) -> list[dict]:
    p = script_parser(__doc__)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--radius", type=float, default=0.5)
    p.add_argument("--sigma", type=float, default=0.25)
    p.add_argument("--alpha", type=float, default=0.001)
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--points", type=int, default=100)
    p.add_argument("--cache-dir", default="outputs/cache")
    args = p.parse_args(argv)

    import smoothgen_exp.training  # noqa: F401  (trains the oracle on first use)
    from smoothgen_exp.oracles.digits import DigitClassifier

    oracle = DigitClassifier(cache_dir=args.cache_dir)
    print(f"r = {args.radius}, sigma = {args.sigma}, alpha = {args.alpha}, n = {args.n}, {args.points} digits")
    print("| run seed | fixed n | sequential | fraction of n | give_up=predictive | fraction of n | sequential_bayes | "
          "fraction of n |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    for seed in range(args.seeds):
        row = draw(oracle, seed, args)
        rows.append(row)
        print(f"| {seed} | {row['fixed']:.2f} | " + " | ".join(
            f"{row[key][0]:.2f} | {row[key][1]:.4f}" for key in CERTIFIERS) + " |", flush=True)

    def mean(f) -> float:
        return sum(map(f, rows)) / len(rows)

    print(f"| mean | {mean(lambda r: r['fixed']):.3f} | " + " | ".join(
        f"{mean(lambda r, k=key: r[k][0]):.3f} | {mean(lambda r, k=key: r[k][1]):.4f}" for key in CERTIFIERS) + " |")
    return rows


if __name__ == "__main__":
    main()
