"""The update forms' row bookkeeping."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from prunus.common.update import Dense, Sparse, touched_rows


@settings(max_examples=60, deadline=None)
@given(width=st.integers(1, 5), rows=st.integers(1, 30), data=st.data())
def test_a_sparse_update_touches_the_rows_of_its_indices(width, rows, data):
    n = rows * width
    idx = np.array(data.draw(st.lists(st.integers(0, n - 1), unique=True, max_size=n)), dtype=np.int64)
    for order in (np.sort(idx), idx):  # the codec's sorted form, and any order
        t = Sparse(order, np.ones(len(order), np.float32), (rows, width))
        assert touched_rows(t).tolist() == sorted(set((idx // width).tolist()))


def test_a_dense_update_touches_its_non_zero_rows():
    values = np.zeros((4, 3), np.float32)
    values[1, 2], values[3, 0] = 1.0, -0.5
    assert touched_rows(Dense(values)).tolist() == [1, 3]
