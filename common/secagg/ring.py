"""Fixed-point values in the ring of integers modulo 2^bits.

Secure aggregation adds integers: each client clips its values to
[-clip, clip] and maps them to {0, ..., levels} with stochastic rounding
(unbiased), leaving headroom so that the sum of up to `max_clients` inputs
never wraps; the server maps the sum back. The clip is what bounds any one
client's push on a coordinate: at most `clip` (in the update's units).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MIN_BITS, MAX_BITS = 12, 56  # elements travel in bits / 8 bytes (rounded up for a whole input), little-endian


@dataclass(frozen=True)
class Ring:
    bits: int  # the modulus is 2^bits, from 12 to 56
    clip: float  # values are clipped to [-clip, clip]
    max_clients: int  # the most inputs one sum may hold without wrapping

    def __post_init__(self) -> None:
        if not MIN_BITS <= self.bits <= MAX_BITS:
            raise ValueError(f"ring bits must be from {MIN_BITS} to {MAX_BITS}, not {self.bits}")
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise ValueError(f"ring clip must be a positive number, not {self.clip}")
        if self.max_clients < 1 or self.levels < 2:
            raise ValueError(f"a {self.bits}-bit ring has no room for sums of {self.max_clients} inputs")

    @property
    def mask(self) -> int:
        return (1 << self.bits) - 1

    @property
    def dtype(self) -> np.dtype:
        """The narrowest unsigned integer holding an element (up to 16 bits:
        uint16, up to 32: uint32, more: uint64); its wrap-around is a multiple of 2^bits."""
        return np.dtype(np.uint16 if self.bits <= 16 else np.uint32 if self.bits <= 32 else np.uint64)

    def elements(self, values: np.ndarray) -> np.ndarray:
        """`values` (non-negative integers) reduced into the ring, as `dtype`."""
        return np.asarray(values).astype(self.dtype) & self.dtype.type(self.mask)

    @property
    def levels(self) -> int:
        """The largest level one input takes: sums of `max_clients` stay below
        2^bits. Even, so that zero is a level (`levels / 2`) and an entry a
        client did not touch adds no rounding noise."""
        return ((1 << self.bits) - 1) // self.max_clients // 2 * 2

    def encode(self, values: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """(levels as ring elements, how many values were clipped). Non-finite values
        are a ValueError: nothing the ring cannot represent is sent."""
        values = np.asarray(values, dtype=np.float64)
        if not np.isfinite(values).all():
            raise ValueError("non-finite values cannot enter the ring")
        clipped = int(np.count_nonzero(np.abs(values) > self.clip))
        scaled = (np.clip(values, -self.clip, self.clip) + self.clip) * (self.levels / (2 * self.clip))
        floor = np.floor(scaled)
        up = rng.random(scaled.shape) < (scaled - floor)  # stochastic rounding: unbiased
        return np.minimum(floor + up, self.levels).astype(self.dtype), clipped

    def digit_count(self, most: int) -> int:
        """How many digits `digits` gives a count of at most `most`."""
        base, n = self.levels + 1, 1
        while base**n <= most:
            n += 1
        return n

    def digits(self, count: int, most: int) -> np.ndarray:
        """`count` (0..`most`) in base levels + 1, least significant first: each
        digit a level, so the digits of `max_clients` counts add without wrapping."""
        base, out = self.levels + 1, []
        for _ in range(self.digit_count(most)):
            count, digit = divmod(count, base)
            out.append(digit)
        return np.array(out, self.dtype)

    def undigits(self, sums: np.ndarray) -> int:
        """The sum of the counts whose `digits` were added into `sums`."""
        return sum(int(d) * (self.levels + 1) ** i for i, d in enumerate(sums))

    def decode_sum(self, total: np.ndarray, count: int) -> np.ndarray:
        """The float sum of `count` inputs from the ring sum of their levels."""
        if not 1 <= count <= self.max_clients:
            raise ValueError(f"a sum of {count} inputs in a ring made for at most {self.max_clients}")
        return (np.asarray(total, dtype=np.float64) * (2 * self.clip / self.levels) - count * self.clip)

    def add(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a + b) & self.dtype.type(self.mask)  # `dtype` wraps modulo a multiple of 2^bits

    def sub(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a - b) & self.dtype.type(self.mask)

    def byte_count(self, count: int) -> int:
        """The bytes `count` elements travel in: `bits` each, the last byte padded with zeros."""
        return -(-count * self.bits // 8)

    def to_bytes(self, values: np.ndarray) -> bytes:
        size = self.dtype.itemsize
        little = np.ascontiguousarray(values, dtype=self.dtype.newbyteorder("<"))
        if self.bits % 8:  # a ring of 12 bits sends 12 bits an element, not 16
            bits = np.unpackbits(little.view(np.uint8).reshape(-1, size), axis=1, bitorder="little")
            return np.packbits(bits[:, : self.bits].reshape(-1), bitorder="little").tobytes()
        width = self.bits // 8
        return little.tobytes() if width == size else little.view(np.uint8).reshape(-1, size)[:, :width].tobytes()

    def from_bytes(self, data: bytes, count: int) -> np.ndarray:
        """`count` ring elements from `data`; ValueError if the length is not
        exactly theirs (or the last byte's padding is not zero)."""
        if len(data) != self.byte_count(count):
            raise ValueError(f"{len(data)} bytes for {count} elements of {self.bits} bits")
        little, size = self.dtype.newbyteorder("<"), self.dtype.itemsize
        if self.bits % 8:
            bits = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")
            if bits[count * self.bits:].any():
                raise ValueError("the padding after the last element is not zero")
            wide = np.zeros((count, 8 * size), np.uint8)
            wide[:, : self.bits] = bits[: count * self.bits].reshape(count, self.bits)
            return np.packbits(wide, axis=1, bitorder="little").view(little).reshape(count).astype(self.dtype)
        width = self.bits // 8
        if width == size:
            return np.frombuffer(data, little).astype(self.dtype)
        wide = np.zeros((count, size), np.uint8)
        wide[:, :width] = np.frombuffer(data, np.uint8).reshape(count, width)
        return wide.view(little).reshape(count).astype(self.dtype)
