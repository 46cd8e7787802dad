"""Shared parameters as named numpy arrays, and their Flower `ArrayRecord` form."""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord

Params = dict[str, np.ndarray]


def to_record(params: Params) -> ArrayRecord:
    """Pack named float32 arrays into an ArrayRecord (Flower serialises it)."""
    return ArrayRecord({name: Array(np.ascontiguousarray(value)) for name, value in params.items()})


def from_record(record: ArrayRecord) -> Params:
    """Unpack an ArrayRecord into named numpy arrays."""
    return {name: array.numpy() for name, array in record.items()}
