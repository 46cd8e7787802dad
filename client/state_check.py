"""A client's state checked before a handler uses it.

A client's state lives outside its process between messages (files or
shared memory a store keeps, `client.state_store`), where a crash can
truncate it and any process of the machine can write it. Whatever a store
hands back is therefore checked as a reply is: the records must be those
an honest run writes, each array of the dtype and shape the model gives it,
its values finite and within `STATE_LIMIT`. Otherwise `StateError` names the
record, the tensor and what is wrong; the message fails with it and the run
goes on without that reply. The bound matters most: an error-feedback
residual multiplied by 1e30 is finite and well formed, and would go out as
an update of 1e30.
"""

from __future__ import annotations

import numpy as np

from prunus.client.state_format import StateError
from prunus.common.compression.sparse import check_residual
from prunus.common.params import Params, from_record
from prunus.common.payload import Arrays

# The largest magnitude an honest state's entry may have. User vectors are
# of the model's scale, and a residual is kept per unit of learning rate, so
# its entries are sums of gradients: after 30 rounds of 150 clients on
# ML-100K (ml100k-dense.toml) the largest were 5.0 (user vectors) and 4.1
# (a rank-4 lowrank residual; 0.55 for top-k at 1%). The bound is far above
# those and far below where float32 sums of updates overflow.
STATE_LIMIT = 1e6


def checked_private(record: Arrays, rows: dict[str, tuple[int, ...]], n_users: int) -> Params:
    """The private user tables of a state: exactly the model's private
    tables (`rows`: each one's row shape), one float32 row per local user."""
    arrays = _arrays("private", record)
    if set(arrays) != set(rows):
        raise StateError(f"client state: private tables {sorted(arrays)}, the model's are {sorted(rows)}")
    for name, value in arrays.items():
        expected = (n_users, *rows[name])
        if value.dtype != np.float32 or value.shape != expected:
            raise StateError(f"client state: private {name!r} is {value.dtype} of shape {value.shape}, "
                             f"not float32 of shape {expected}")
    return _bounded("private", arrays)


def checked_residual(record: Arrays, shapes: dict[str, tuple[int, ...]]) -> Params:
    """An error-feedback residual of a state, laid out for a model of `shapes`
    (`common.compression.sparse.check_residual`); read-only views."""
    arrays = _arrays("residual", record, writable=False)
    try:
        check_residual(arrays, shapes)
    except ValueError as err:
        raise StateError(f"client state: residual {err}") from None
    return _bounded("residual", arrays)


def _arrays(what: str, record: Arrays, writable: bool = True) -> Params:
    try:
        return from_record(record, writable)
    except ValueError as err:
        raise StateError(f"client state: {what}: {err}") from None


def _bounded(what: str, arrays: Params) -> Params:
    """`arrays`, if every float entry is finite and within `STATE_LIMIT`."""
    for name, value in arrays.items():
        if value.dtype.kind != "f" or not value.size:
            continue
        largest = float(np.abs(value).max())  # (NaN if any entry is)
        if not np.isfinite(largest):
            raise StateError(f"client state: {what} {name!r} holds NaN or infinity")
        if largest > STATE_LIMIT:
            raise StateError(f"client state: {what} {name!r} holds an entry of {largest:.3g}, beyond the "
                             f"{STATE_LIMIT:g} no honest state comes near")
    return arrays
