"""No attack: the run certifies and records, and adds no attack columns."""

from __future__ import annotations


class NoAttack:
    enabled = False
