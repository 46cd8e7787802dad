"""Masks expanded from 32-byte seeds: ChaCha20's keystream (from `cryptography`) as the PRG."""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

SEED_BYTES = 32
_NONCE = bytes(16)  # one stream per seed: every seed is fresh, so a fixed nonce is safe


def expand(seed: bytes, count: int, bits: int) -> np.ndarray:
    """`count` uniform elements of the ring mod 2^bits, as uint64 (2, 4 or 8
    bytes of keystream an element: the least that holds `bits`)."""
    if len(seed) != SEED_BYTES:
        raise ValueError(f"a mask seed has {SEED_BYTES} bytes, not {len(seed)}")
    width = 2 if bits <= 16 else 4 if bits <= 32 else 8
    stream = Cipher(algorithms.ChaCha20(seed, _NONCE), mode=None).encryptor().update(bytes(width * count))
    return np.frombuffer(stream, f"<u{width}").astype(np.uint64) & np.uint64((1 << bits) - 1)
