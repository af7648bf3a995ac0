"""Seeds derived from (run seed, item_id, stream): independent of process count, sharding and resume."""

from __future__ import annotations

import hashlib


def item_seed(run_seed: int, item_id: str, stream: str) -> int:
    """A 63-bit seed for one named random stream of one item (e.g. "certify/noise")."""
    digest = hashlib.blake2b(f"{run_seed}\x1f{item_id}\x1f{stream}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1
