"""The aggregation rules, as plug-ins: `aggregator = "name"` picks one.

An aggregator turns a round's (clipped) updates and their weights into one
step for the server optimiser. Register a new rule here or in a module of its
own with `@AGGREGATORS.register("name")`; config validation checks the name
against this registry (tests/server/test_aggregation.py).

* `mean`: FedAvg, weighted by num-examples, per row with `row-averaging`
  (`server.aggregation`);
* `median`, `trimmed-mean`: per row over the clients that touched it, the
  coordinate-wise median or the mean after `trim-fraction` off each end
  (`server.robust`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from prunus.common.params import Params
from prunus.common.registry import Registry
from prunus.common.update import Update
from prunus.server.aggregation import aggregate
from prunus.server.robust import coordinate_wise

if TYPE_CHECKING:
    from prunus.common.config import FederationConfig

Shapes = dict[str, tuple[int, ...]]


class Aggregator(Protocol):
    def __call__(self, updates: list[Update], weights: list[float], shapes: Shapes,
                 settings: FederationConfig) -> Params: ...


AGGREGATORS: Registry[Aggregator] = Registry("aggregator")


@AGGREGATORS.register("mean")
def mean(updates: list[Update], weights: list[float], shapes: Shapes, settings: FederationConfig) -> Params:
    weights = [1.0] * len(updates) if settings.row_averaging else weights
    return aggregate(list(zip(updates, weights)), shapes, settings.row_averaging)


@AGGREGATORS.register("median")
def median(updates: list[Update], weights: list[float], shapes: Shapes, settings: FederationConfig) -> Params:
    return coordinate_wise(updates, shapes, None)


@AGGREGATORS.register("trimmed-mean")
def trimmed_mean(updates: list[Update], weights: list[float], shapes: Shapes, settings: FederationConfig) -> Params:
    return coordinate_wise(updates, shapes, settings.trim_fraction)
