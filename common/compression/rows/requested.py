"""`requested`: each client gets only the item rows it asks for.

A client's round touches its positives and the negatives it samples (and
federated evaluation its held-out candidates), a fraction of the catalogue.
Before each message the server queries the client; the client answers with
the rows it needs: its positives (and candidates), a pool of
`negative-pool` x as many random rows (at least `negative-pool-min`) that its
negatives will be drawn from,
and `request-pad` x as many further random rows it will not use. The server
sends those rows only; the client's update touches no other row.

The request reveals the client's items among the pool and the padding rows:
padding costs downlink bytes and hides the positives in a larger set (the
update still shows which rows were trained on).
"""

from __future__ import annotations

import math
from dataclasses import field
from typing import TYPE_CHECKING

import numpy as np

from prunus.common.compression import ROWS
from prunus.common.compression.base import RoundContext, RowPlan, RowSelection
from prunus.common.config import non_negative, positive, section

if TYPE_CHECKING:
    from prunus.common.config import CompressionConfig


@section
class RequestedOptions:
    """`requested`'s own settings (section `broadcast-rows.requested`)."""

    negative_pool: float = field(default=4.0, metadata=positive())  # pool rows per needed row
    # the fewest pool rows a client gets: a client of few items otherwise
    # draws its negatives from a handful of rows, the same ones many times
    negative_pool_min: int = field(default=0, metadata=non_negative())
    request_pad: float = field(default=0.0, metadata=non_negative())  # padding rows per needed row


@ROWS.register("requested")
class RequestedRows(RowSelection):
    name = "requested"
    queries = True
    Options = RequestedOptions

    def __init__(self, settings: CompressionConfig, options: RequestedOptions) -> None:
        self.settings = settings
        self.options = options

    def plan(self, needed: np.ndarray, n_items: int, ctx: RoundContext) -> RowPlan:
        """Seeded by the client's secret, the run seed, the round and the
        partition: the query and the message that follows it plan the same
        rows without the client keeping anything, and the server cannot draw
        the pool and the padding again to strip them from a request."""
        rng = ctx.private_rng(5)
        base = max(len(needed), 1)
        size = max(math.ceil(self.options.negative_pool * base), self.options.negative_pool_min)
        pool = np.sort(rng.choice(n_items, min(n_items, size), replace=False))
        request = np.union1d(needed, pool)
        pad = math.ceil(self.options.request_pad * base)
        if pad:
            free = np.setdiff1d(np.arange(n_items), request, assume_unique=True)
            request = np.union1d(request, rng.choice(free, min(pad, len(free)), replace=False))
        return RowPlan(request.astype(np.int64), pool.astype(np.int64))

    def rows(self, server_round: int, request: np.ndarray | None, n_items: int, purpose: str,
             seed: int) -> np.ndarray | None:
        return request
