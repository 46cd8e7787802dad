"""Masks expanded from 32-byte seeds: AES-256 in counter mode (from `cryptography`) as the PRG.

AES-CTR is the PRG of SecAgg (Bonawitz et al. 2017) and, with the CPU's AES
instructions, about twice as fast as ChaCha20 here: a client of an ML-1M
round expands one mask per neighbour over its whole input, so the keystream
is most of what masking costs.
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from prunus.common.secagg.ring import Ring

SEED_BYTES = 32
_COUNTER = bytes(16)  # one stream per seed: every seed is fresh, so a fixed starting counter is safe


def expand(seed: bytes, count: int, ring: Ring) -> np.ndarray:
    """`count` uniform elements of `ring`, as its dtype (2, 4 or 8 bytes of
    keystream an element: the least that holds them); read-only."""
    if len(seed) != SEED_BYTES:
        raise ValueError(f"a mask seed has {SEED_BYTES} bytes, not {len(seed)}")
    stream = Cipher(algorithms.AES(seed), modes.CTR(_COUNTER)).encryptor().update(bytes(ring.dtype.itemsize * count))
    elements = np.frombuffer(stream, ring.dtype.newbyteorder("<")).astype(ring.dtype, copy=False)
    return elements if ring.bits == 8 * ring.dtype.itemsize else ring.elements(elements)
