"""Shamir's t-of-n secret sharing of 32-byte secrets over the prime field GF(2^521 - 1).

A share is (x, y) with x a client's nonzero index; any `threshold` shares
give the secret back (Lagrange interpolation at 0), fewer say nothing of it.
"""

from __future__ import annotations

import secrets

PRIME = 2**521 - 1  # a Mersenne prime above every 32-byte secret
SHARE_BYTES = 66  # ceil(521 / 8)
SECRET_BYTES = 32


def share(secret: bytes, threshold: int, xs: list[int]) -> dict[int, bytes]:
    """One share of `secret` for each x in `xs` (distinct, in [1, PRIME))."""
    if len(secret) != SECRET_BYTES:
        raise ValueError(f"a shared secret has {SECRET_BYTES} bytes, not {len(secret)}")
    if not 1 <= threshold <= len(xs) or len(set(xs)) != len(xs) or not all(0 < x < PRIME for x in xs):
        raise ValueError(f"{threshold}-of-{len(xs)} sharing needs distinct nonzero points")
    coefficients = [int.from_bytes(secret, "big")] + [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    out = {}
    for x in xs:
        y = 0
        for c in reversed(coefficients):  # Horner
            y = (y * x + c) % PRIME
        out[x] = y.to_bytes(SHARE_BYTES, "big")
    return out


def combine(shares: dict[int, bytes], threshold: int) -> bytes:
    """The secret from at least `threshold` shares; ValueError if there are
    fewer, or a share is malformed, or they do not describe a 32-byte secret."""
    if len(shares) < threshold:
        raise ValueError(f"{len(shares)} shares, {threshold} needed")
    points = []
    for x, data in list(shares.items())[:threshold]:
        if not (isinstance(x, int) and 0 < x < PRIME) or len(data) != SHARE_BYTES:
            raise ValueError("a malformed share")
        y = int.from_bytes(data, "big")
        if y >= PRIME:
            raise ValueError("a share outside the field")
        points.append((x, y))
    secret = 0
    for i, (xi, yi) in enumerate(points):
        num, den = 1, 1
        for j, (xj, _) in enumerate(points):
            if i != j:
                num, den = num * xj % PRIME, den * (xj - xi) % PRIME
        secret = (secret + yi * num * pow(den, -1, PRIME)) % PRIME
    if secret >> (8 * SECRET_BYTES):
        raise ValueError("the shares do not describe a secret (inconsistent shares)")
    return secret.to_bytes(SECRET_BYTES, "big")
