"""Masks expanded from 32-byte seeds: ChaCha20's keystream (from `cryptography`) as the PRG."""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from prunus.common.secagg.ring import Ring

SEED_BYTES = 32
_NONCE = bytes(16)  # one stream per seed: every seed is fresh, so a fixed nonce is safe


def expand(seed: bytes, count: int, ring: Ring) -> np.ndarray:
    """`count` uniform elements of `ring`, as its dtype (2, 4 or 8 bytes of
    keystream an element: the least that holds them)."""
    if len(seed) != SEED_BYTES:
        raise ValueError(f"a mask seed has {SEED_BYTES} bytes, not {len(seed)}")
    stream = Cipher(algorithms.ChaCha20(seed, _NONCE), mode=None).encryptor().update(bytes(ring.dtype.itemsize * count))
    elements = np.frombuffer(stream, ring.dtype.newbyteorder("<"))
    return elements.astype(ring.dtype) if ring.bits == 8 * ring.dtype.itemsize else ring.elements(elements)
