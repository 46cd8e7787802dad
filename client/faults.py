"""Fault injection for simulations: sampled clients that crash or turn Byzantine.

A measurement tool, off by default (`fault-rate = 0`). Each sampled client of a
training round draws, from (seed, round, partition) alone, whether it is
faulty this round; a faulty one then, by `fault-kind`:

* `crash`: raises instead of replying (the server counts a failed reply);
* `hang`: replies only after the round timeout (`round-timeout`) has passed,
  so the server must go on without it (in process, where nothing can be
  preempted, its reply is simply never delivered);
* `die`: its process ends at once (`os._exit`), every time it runs that
  message, as when the OOM killer or a crash in native code takes a client
  actor: the messages batched with it must still get their replies (in
  process, where that would end the run, its reply is never delivered);
* `garbage`: replies with random bytes where its payload belongs;
* `scale`: sends its honest update times `fault-scale` (x100 by default);
* `sign-flip`: sends its update times `-fault-scale`;
* `random`: sends Gaussian noise of `fault-scale` times its update's norm;
* `huge-bias`: sends its honest update with every entry of each bias tensor
  (MF's item bias, NeuMF's layer biases) set to `fault-scale` (1e30, say):
  one tensor role pushed as far as the wire carries.

The faulty update goes through the client's own uplink method (pruning,
codec), so it is as well-formed as an honest one: only the server's robust
aggregation stands between it and the model.

`mod` wraps the training handler, as Flower's client mods wrap a ClientApp:
the handler itself knows nothing of faults (it takes a `tamper` for the
update, which only this wrapper passes).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from prunus.client.handlers import message_round
from prunus.common.config import Config, RuntimeConfig
from prunus.common.params import Params, npy_array
from prunus.common.payload import Arrays, Content

HANG_MARGIN_S = 2.0  # how far past the round timeout a hung client replies
DIE_EXIT_CODE = 70  # the exit status of a `die` fault's process


class InjectedCrash(RuntimeError):
    """The crash a `crash` fault raises (the reply then counts as failed)."""


class NoReply(RuntimeError):
    """A `hang` or `die` fault where the client has no process of its own
    (the in-process engine): the transport delivers no reply instead."""


Handler = Callable[..., Content]


def mod(train: Handler, isolated: bool = True) -> Handler:
    """`train` as a client drawn faulty in a round behaves (an honest client
    unchanged). `isolated`: the client runs in a process of its own (a
    client actor), where a hung client sleeps past the round timeout and a
    dying one ends its process; else both raise `NoReply` at once."""

    def faulty_train(cfg: Config, content: Content, state: Content, client: Any) -> Content:
        runtime, server_round, partition = cfg.runtime, message_round(content), client.partition_id
        if not is_faulty(runtime, server_round, partition):
            return train(cfg, content, state, client)
        if runtime.fault_kind == "die":
            if not isolated:
                raise NoReply("the client's process died (injected)")
            os._exit(DIE_EXIT_CODE)
        if runtime.fault_kind == "hang":
            if not isolated:
                raise NoReply(f"no reply within the round timeout ({cfg.federation.round_timeout:g} s)")
            time.sleep(cfg.federation.round_timeout + HANG_MARGIN_S)
            return train(cfg, content, state, client)  # its late update is an honest one
        if runtime.fault_kind == "garbage":
            reply = train(cfg, content, state, client)
            payload = "arrays" if "arrays" in reply else "masked"  # a plain reply's payload, or a secure one's
            if reply.get("metrics", {}).get("num-examples", 1):  # a client with nothing to train on sends nothing
                reply[payload] = garbage(reply[payload], server_round, partition, runtime.seed)
            return reply
        return train(cfg, content, state, client,
                     tamper=lambda delta: corrupt_update(runtime, delta, server_round, partition))

    return faulty_train


def is_faulty(settings: RuntimeConfig, server_round: int, partition_id: int) -> bool:
    """Whether this client misbehaves in this round (seeded, order-free)."""
    if settings.fault_rate <= 0:
        return False
    return bool(np.random.default_rng([settings.seed, server_round, partition_id, 9]).random() < settings.fault_rate)


def corrupt_update(settings: RuntimeConfig, delta: Params, server_round: int, partition_id: int) -> Params:
    """The update a faulty client sends in place of `delta` (crash: raises)."""
    kind, scale = settings.fault_kind, settings.fault_scale
    if kind == "crash":
        raise InjectedCrash(f"injected crash of partition {partition_id} in round {server_round}")
    if kind == "scale":
        return {name: (value * scale).astype(np.float32) for name, value in delta.items()}
    if kind == "sign-flip":
        return {name: (value * -scale).astype(np.float32) for name, value in delta.items()}
    if kind == "huge-bias":
        return {name: np.full_like(value, scale, dtype=np.float32) if is_bias(name) else value
                for name, value in delta.items()}
    rng = np.random.default_rng([settings.seed, server_round, partition_id, 10])
    norm = float(np.sqrt(sum(np.square(v, dtype=np.float64).sum() for v in delta.values())))
    size = sum(v.size for v in delta.values())
    return {name: (rng.standard_normal(value.shape) * scale * norm / np.sqrt(size)).astype(np.float32)
            for name, value in delta.items()}


def is_bias(name: str) -> bool:
    """Whether a shared tensor is a bias (`item_bias.weight`, a layer's `.bias`)."""
    return name.endswith(".bias") or "bias." in name


def garbage(record: Arrays, server_round: int, partition_id: int, seed: int) -> Arrays:
    """Random bytes of the same sizes in place of every payload array."""
    rng = np.random.default_rng([seed, server_round, partition_id, 11])
    return Arrays({name: npy_array(rng.integers(0, 256, len(array.data), dtype=np.uint8)) for name, array in record.items()})
