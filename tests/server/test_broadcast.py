"""The broadcast (`server.broadcast`): a non-finite model never goes out, and
what the downlink cannot represent is clipped and counted, never a lost round."""

from __future__ import annotations

import numpy as np
import pytest

from prunus.common.compression import DOWNLINK, ROWS
from prunus.common.config import REPLY_DEFENCES, Config
from prunus.common.models import ModelSpec
from prunus.common.params import NonFiniteModel, to_record, wire_bytes
from prunus.server.broadcast import Broadcaster
from prunus.server.federation import Federation
from prunus.server.intake import Intake
from prunus.server.ledger import Ledger
from prunus.server.transport import Reply

PARAMS = {"item_embedding.weight": np.full((5, 3), 0.01, np.float32), "item_bias.weight": np.zeros((5, 1), np.float32)}
SHAPES = {k: v.shape for k, v in PARAMS.items()}


def _broadcaster(downlink: str) -> Broadcaster:
    cfg = Config.of(downlink_codec=downlink).compression
    return Broadcaster(DOWNLINK.get(downlink)(cfg), ROWS.get("all")(cfg), ("item_embedding.weight",), 5, 0,
                       Intake(Ledger(), wire_bytes(to_record(PARAMS))))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("downlink", DOWNLINK.names())
def test_a_non_finite_model_is_never_broadcast(downlink, bad):
    params = {k: v.copy() for k, v in PARAMS.items()}
    params["item_bias.weight"][2, 0] = bad
    broadcaster = _broadcaster(downlink)
    with pytest.raises(NonFiniteModel, match="item_bias"):
        broadcaster.broadcast(1, params, {0: None, 1: None})
    assert broadcaster.intake.ledger.round(1).downlink_bytes == 0  # nothing sent


@pytest.mark.parametrize("downlink", DOWNLINK.names())
def test_a_hostile_huge_value_is_clipped_and_counted_once_a_round(downlink):
    params = {k: v.copy() for k, v in PARAMS.items()}
    params["item_bias.weight"][3, 0] = 3.0e38
    broadcaster = _broadcaster(downlink)
    messages = broadcaster.broadcast(1, params, {0: None, 1: None})
    broadcaster.broadcast(1, params, {2: None})  # the same model again in the round: counted once
    clipped = broadcaster.intake.ledger.round(1).metrics.get("downlink-clipped", 0)
    assert clipped == (0 if downlink == "fp32" else 1)
    decoded = broadcaster.downlink.decode(messages[0].content["arrays"], SHAPES)
    assert np.isfinite(decoded["item_bias.weight"]).all()
    assert decoded["item_bias.weight"][3, 0] >= min(broadcaster.downlink.limit, 3.0e38) * 0.99


def test_one_hostile_client_loses_no_round_of_an_int8_broadcast(make_train_reply):
    """The audit's case: a client that repeats an unrepresentable value got every
    round's broadcast refused (5 of 5 rounds lost); now each round's step is taken
    and the broadcast carries the model clipped, counted."""
    spec = ModelSpec(SHAPES, ("item_embedding.weight",), ("item_embedding.weight",))
    cfg = Config.of(rounds=5, clients_per_round=2, downlink_codec="int8", row_averaging=False,
                    **dict.fromkeys(REPLY_DEFENCES, 0.0))  # what the broadcast does with what the defences let by
    federation = Federation(cfg, [0, 1], {k: v.copy() for k, v in PARAMS.items()}, spec, lambda p, r: {}, Ledger())
    hostile = {"item_embedding.weight": np.zeros((5, 3), np.float32), "item_bias.weight": np.full((5, 1), 1e8, np.float32)}
    honest = {"item_embedding.weight": np.full((5, 3), 0.01, np.float32), "item_bias.weight": np.zeros((5, 1), np.float32)}

    class Transport:
        def exchange(self, message_type, messages):
            return [Reply(p, 10 + p, make_train_reply(hostile if p == 0 else honest, partition=p))
                    for p in (o.partition for o in messages)]

    federation.run(Transport())
    rounds = [federation.ledger.round(r) for r in range(1, 6)]
    assert [r.refused for r in rounds] == [0] * 5 and all(r.replies == 2 for r in rounds)
    assert all(r.metrics.get("downlink-clipped") == 5 for r in rounds[1:])  # the five bias entries beyond 8.3e6
    np.testing.assert_allclose(federation.params["item_embedding.weight"], 0.01 + 5 * 0.005, rtol=1e-5)


def test_a_run_from_a_non_finite_model_stops_before_anything_is_sent_or_scored():
    spec = ModelSpec(SHAPES, ("item_embedding.weight",), ("item_embedding.weight",))
    params = {k: v.copy() for k, v in PARAMS.items()}
    params["item_embedding.weight"][1, 1] = np.nan
    scored = []
    federation = Federation(Config.of(rounds=2, clients_per_round=2), [0, 1], params, spec,
                            lambda p, r: scored.append(r) or {"hr@10": 1.0}, Ledger())

    class Transport:
        def exchange(self, message_type, messages):
            raise AssertionError("nothing may be sent")

    with pytest.raises(NonFiniteModel, match="the model to start from"):
        federation.run(Transport(), start=2)  # as a resumed run would
    assert scored == [] and not federation.ledger.rounds
