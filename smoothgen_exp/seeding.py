"""Seeds derived from (run seed, item_id, stream): independent of process count, sharding and resume."""

from __future__ import annotations

import hashlib


def item_seed(run_seed: int, item_id: str, stream: str) -> int:
    """A 63-bit seed for one named random stream of one item (e.g. "certify/noise")."""
    digest = hashlib.blake2b(f"{run_seed}\x1f{item_id}\x1f{stream}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


# ---------------------------------------------------------------- per-row randomness of a generator
# A generator's own random draws (a latent, a sampling seed) are tied to the row, not to the batch: every
# row gets one 62-bit seed, drawn from the stream's generator by `torch.randint`, which takes one draw per
# element in order, so a stream's k-th seed does not depend on how its rows are split into batches.
# Models turn a row's seed into what they need (`row_normals`, or a torch.Generator per sample).
SEED_HIGH = 2**62


def row_seeds(source, rows: int, shared: bool = False):
    """[rows] int64 seeds: `source` itself when it is already a seed tensor, else drawn from the torch
    Generator `source` (one seed repeated for every row when `shared`: one draw of u for all rows)."""
    import torch

    if torch.is_tensor(source):
        if len(source) != rows:
            raise ValueError(f"{len(source)} row seeds for {rows} rows")
        return source
    drawn = torch.randint(0, SEED_HIGH, (1 if shared else rows,), generator=source, device=source.device)
    return drawn.expand(rows) if shared else drawn


_GOLDEN, _MIX1, _MIX2 = (c - 2**64 for c in (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB))


def _shift_right(z, k: int):
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def splitmix64(z):
    """The splitmix64 finaliser (Steele et al. 2014), vectorised on int64 tensors (products wrap mod 2^64)."""
    z = z + _GOLDEN
    z = (z ^ _shift_right(z, 30)) * _MIX1
    z = (z ^ _shift_right(z, 27)) * _MIX2
    return z ^ _shift_right(z, 31)


def row_uniforms(seeds, count: int, offset: int = 0, device=None):
    """[rows, count] float64 uniforms in (0, 1): element (i, j) is a fixed function of (seeds[i], offset + j)
    (splitmix64 of the seed and the counter, top 53 bits). Batch-invariant by construction."""
    import torch

    seeds = seeds.to(device=device or seeds.device, dtype=torch.int64)
    counters = torch.arange(offset, offset + count, device=seeds.device, dtype=torch.int64)
    bits = splitmix64(splitmix64(seeds)[:, None] + counters * _GOLDEN)
    return (_shift_right(bits, 11).double() + 0.5) * 2.0**-53


def row_normals(seeds, dim: int, dtype=None, device=None):
    """[rows, dim] standard normals, row i a fixed function of seeds[i] (counter-based: `row_uniforms`,
    two per normal, Box-Muller in float64). Batch-invariant by construction."""
    import torch

    u = row_uniforms(seeds, 2 * dim, device=device)
    u1, u2 = u[:, :dim], u[:, dim:]
    normals = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * torch.pi * u2)
    return normals.to(dtype or torch.float32)
