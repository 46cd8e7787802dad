"""What the core exchanges: prunus's own message content, free of any transport.

A message's content is a `Content`: named entries, each `Arrays` (named
`NpyArray`s: one numpy array as npy bytes, its header included), a
`ConfigMap` (settings: the server round, the purpose of a message) or a
`MetricMap` (numbers: num-examples, the loss). The compression plug-ins,
codecs, client handlers, round engine and in-process engine work on these
alone; a transport maps them onto its own types at its edge
(`common.flower_records` for Flower's Message API) and back, keeping every
field, so the bytes counted here (`common.wire_size`) are the bytes it ships.

The types are plain containers that check nothing: whatever a transport
receives is checked where it is read (`params.array_of`, the uplink
methods' `decode`, `server.validation`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np

NPY_STYPE = "numpy.ndarray"  # how an array's bytes are serialised: numpy's npy format


@dataclass(frozen=True, slots=True)
class NpyArray:
    """One array: `data` is npy bytes (header and values); `dtype` and
    `shape` repeat the header's for a reader that does not parse it."""

    dtype: str
    shape: tuple[int, ...]
    data: bytes
    stype: str = NPY_STYPE

    def numpy(self) -> np.ndarray:
        """The values, a writable copy, checked (`params.array_of`)."""
        from prunus.common.params import array_of

        return array_of(self)


class Arrays(dict[str, NpyArray]):
    """Named arrays: a model's tensors, a compressed update's streams, a state."""


ConfigValue = Union[int, float, str, bytes, bool, list[int], list[float], list[str], list[bytes], list[bool]]
MetricValue = Union[int, float, list[int], list[float]]


class ConfigMap(dict[str, ConfigValue]):
    """Named settings of a message (server round, purpose, where a reply ran)."""


class MetricMap(dict[str, MetricValue]):
    """Named numbers a reply reports (num-examples, train-loss, ranking metrics)."""


class Content(dict[str, Union[Arrays, ConfigMap, MetricMap]]):
    """A message's content, or a client's state: named entries of the three kinds."""


class MessageType:
    """The kinds of message a round sends (a row query is `query.rows`)."""

    TRAIN = "train"
    EVALUATE = "evaluate"
    QUERY = "query"
