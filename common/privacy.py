"""The privacy accountant of local differential privacy (`defence = "ldp"`).

Each reply releases the client's clipped update plus Gaussian noise: a
Gaussian mechanism with L2 sensitivity 2C (any two of a client's possible
updates, each clipped to norm C, differ by at most 2C) and noise standard
deviation `sigma * 2C`. Its Renyi DP at order a is a / (2 sigma^2) per release
and adds up over releases (Mironov, 2017); an (epsilon, delta) guarantee is
read off with the conversion Opacus's RDP accountant uses (Balle et al.,
2020), minimised over Opacus's default orders.
"""

from __future__ import annotations

import math
from functools import lru_cache

ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))


def epsilon(sigma: float, releases: int, delta: float) -> float:
    """(epsilon, delta)-DP of `releases` Gaussian releases at noise multiplier `sigma`."""
    if releases <= 0:
        return 0.0
    best = math.inf
    for a in ORDERS:
        rdp = releases * a / (2 * sigma**2)
        best = min(best, rdp + math.log((a - 1) / a) - (math.log(delta) + math.log(a)) / (a - 1))
    return max(best, 0.0)


@lru_cache(maxsize=32)
def noise_multiplier(target: float, delta: float, releases: int = 1) -> float:
    """The smallest sigma whose `releases` releases are (target, delta)-DP (bisection)."""
    if target <= 0:
        raise ValueError(f"epsilon must be positive, got {target}")
    low, high = 1e-3, 1.0
    while epsilon(high, releases, delta) > target:
        high *= 2
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if epsilon(mid, releases, delta) > target else (low, mid)
    return high
