"""Sticky traffic routing: the same routing key always lands on the same track.

A key is hashed (BLAKE2b, salted per purpose so that canary and shadow picks are
independent) to a number in [0, 1), which is compared with the current weight. Because
the comparison is ``u < weight``, raising a canary weight from 5% to 25% keeps every key
that was already on the canary there: users do not flip between versions as a rollout
advances. The hash is stable across processes and restarts (unlike Python's ``hash``).
"""

from __future__ import annotations

import hashlib

_SCALE = float(2**64)
CANARY_SALT = b"mlcicd-canary"
SHADOW_SALT = b"mlcicd-shadow"


def key_fraction(key: str, salt: bytes) -> float:
    """A uniform, deterministic number in [0, 1) for ``key``."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8, key=salt)
    return int.from_bytes(digest.digest(), "big") / _SCALE


def goes_to_canary(key: str, weight: float) -> bool:
    if weight <= 0.0:
        return False
    if weight >= 1.0:
        return True
    return key_fraction(key, CANARY_SALT) < weight


def mirrored_to_shadow(key: str, weight: float) -> bool:
    if weight <= 0.0:
        return False
    if weight >= 1.0:
        return True
    return key_fraction(key, SHADOW_SALT) < weight
