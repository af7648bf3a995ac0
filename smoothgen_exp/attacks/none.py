"""No attack: the run certifies and records, and adds no attack columns."""

from __future__ import annotations

from smoothgen_exp.config import configured


@configured
class NoAttack:
    enabled = False
