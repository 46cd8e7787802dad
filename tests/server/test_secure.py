"""Secure rounds in the round engine: the server's step is exactly the sum of
the quantised updates of the clients that sent one, with clients crashing;
too few clients: the round is abandoned and the model kept; what composes
with it is checked before any work."""

import numpy as np
import pytest

from prunus.common.config import REPLY_DEFENCES, Config, ConfigError, FederationConfig, from_mapping
from prunus.common.secagg import protocol
from prunus.common.secagg.messages import Layout
from prunus.server.ledger import Ledger
from prunus.server.run import run_federation
from prunus.simulations.inprocess import InProcessTransport

SETTINGS = dict(synthetic_users=40, synthetic_items=60, eval_negatives=20, dim=8, rounds=2, clients_per_round=20,
                eval_every=2, seed=3, secure_aggregation=True)


@pytest.mark.parametrize("compression", [
    {},
    {"prune_method": "randomk", "density": 0.3, "error_feedback": True},
    {"prune_method": "lowrank", "rank": 2, "error_feedback": True},
    {"prune_method": "lowrank", "rank": 2, "rank_basis": "model", "ring_bits": 13},
    {"broadcast_rows": "bandit", "bandit_items": 0.5, "ring_bits": 24},
], ids=["dense", "shared-randomk", "shared-lowrank", "model-basis-lowrank-13-bit-ring", "bandit-rows"])
def test_with_a_fifth_crashing_the_secure_sum_is_the_sum_of_the_survivors_quantised_updates(tmp_path, monkeypatch,
                                                                                            compression):
    inputs, totals = {}, []
    encode, total = Layout.encode, protocol.ServerRound.total

    def recording_encode(self, update, ring, rng, carried=False):
        vector, carried = encode(self, update, ring, rng, carried)
        inputs.setdefault(len(totals), []).append(vector)  # the round in progress: totals so far
        return vector, carried

    def recording_total(self):
        out = total(self)
        totals.append((out, {p: None for p in out[1]}, self.setup.ring))
        return out

    monkeypatch.setattr(Layout, "encode", recording_encode)
    monkeypatch.setattr(protocol.ServerRound, "total", recording_total)
    cfg = Config.of(**SETTINGS, **compression, fault_rate=0.2, fault_kind="crash", out=str(tmp_path))
    summary = run_federation(cfg, InProcessTransport(cfg), list(range(40)), Ledger())
    assert summary["failures"] > 0 and len(totals) == 2
    # each round: the ring sum of the inputs recorded in it, bit for bit
    for r, (out, members, ring) in enumerate(totals):
        sent = inputs[r]
        assert len(sent) == len(members) == len(out[1])
        expected = np.zeros_like(out[0])
        for vector in sent:
            expected = ring.add(expected, vector)
        np.testing.assert_array_equal(out[0], expected)


def test_too_few_clients_abandon_the_round_and_keep_the_model(tmp_path):
    cfg = Config.of(**{**SETTINGS, "clients_per_round": 4}, fault_rate=0.9, fault_kind="crash", out=str(tmp_path))
    ledger = Ledger()
    run_federation(cfg, InProcessTransport(cfg), list(range(40)), ledger)
    abandoned = [r for r in ledger.rows() if r.get("secure-abandoned")]
    assert abandoned and all(np.isnan(r.get("ring-clipped", np.nan)) for r in abandoned)


def test_the_leakage_ledger_attacks_the_masked_inputs_and_the_round_sum(tmp_path):
    """What the server holds under secure aggregation: each masked input, decoded
    as if it were an update, names a client's items at chance (its every row is
    "touched": membership is exactly chance); the round's step is attacked too."""
    cfg = Config.of(**{**SETTINGS, "rounds": 3}, leakage_sample=10, out=str(tmp_path))
    ledger = Ledger()
    summary = run_federation(cfg, InProcessTransport(cfg), list(range(40)), ledger)
    privacy = summary["privacy"]
    assert privacy["leak-membership-precision"] == pytest.approx(privacy["leak-random-precision"])
    for attack in ("bias", "direction", "norm", "link-sum-bias", "link-sum-direction", "final-link-sum-bias"):
        chance = privacy["leak-link-random-precision" if "link" in attack else "leak-random-precision"]
        assert abs(privacy[f"leak-{attack}-precision"] - chance) < 0.1, attack
    assert {"leak-round-bias-precision", "leak-round-direction-auc", "leak-link-votes-precision"} <= set(privacy)
    assert all("leak-random-precision" in row for row in ledger.rows()[1:])


@pytest.mark.parametrize(("change", "reason"), [
    ({"prune_method": "topk"}, "own coordinates"),
    ({"prune_method": "lowrank", "rank_basis": "client"}, "its own factor"),
    ({"prune_method": "lowrank", "rank_basis": "client-rows"}, "its own factor"),
    ({"broadcast_rows": "requested"}, "each client's rows"),
    ({"aggregator": "median"}, "cannot zero, clip or order"),
    ({"clip_quantile": 0.5}, "cannot zero, clip or order"),
    ({"zero_factor": 5.0}, "cannot zero, clip or order"),
    ({"row_clip": 2.0}, "cannot zero, clip or order"),
    ({"weight_cap": 3.0}, "cannot zero, clip or order"),
    ({"ring_bits": 11}, "ring-bits"),
    ({"broadcast_rows": "bandit", "secure_rows": 0.5}, "already chooses the round's rows"),
])
def test_what_cannot_compose_with_secure_aggregation_fails_before_any_work(change, reason):
    with pytest.raises(ConfigError, match=reason):
        Config.of(secure_aggregation=True, **change)


class _Padding:
    """The in-process clients, the first reply to `target` carrying `extra` records beside its payload."""

    def __init__(self, inner, target, extra):
        self.inner, self.target, self.extra, self.padded = inner, target, extra, None

    def exchange(self, message_type, messages):
        from prunus.common.payload import Content
        from prunus.server.transport import Reply

        replies = self.inner.exchange(message_type, messages)
        if message_type == self.target:
            first = replies[0]
            replies[0] = Reply(first.partition, first.node, Content({**first.content, **self.extra}))
            self.padded = first.partition
        return replies


@pytest.mark.parametrize("target", ["query.secagg_keys", "query.secagg_shares", "train.secure", "query.secagg_unmask"])
def test_a_secure_reply_carrying_too_much_beside_its_payload_is_rejected_and_the_round_goes_on(target):
    """The limits on what a reply carries beside its payload hold for every exchange."""
    from prunus.common.models import model_spec
    from prunus.common.payload import MetricMap
    from prunus.server.federation import Federation

    cfg = Config.of(**{**SETTINGS, "rounds": 1, "clients_per_round": 8})
    inner = InProcessTransport(cfg)
    spec = model_spec(cfg.model, inner.split.n_items)
    params = {name: np.zeros(shape, np.float32) for name, shape in spec.shapes.items()}
    federation = Federation(cfg, list(range(40)), params, spec, lambda p, r=0: {}, Ledger())
    transport = _Padding(inner, target, {"metrics": MetricMap({f"m{i}": 1.0 for i in range(100)})})
    federation.train(1, transport)
    kind = {"train.secure": "train"}.get(target, target.replace("query.secagg_", "secagg-"))
    statuses = {(r.kind, r.partition): r.status for r in federation.ledger.replies}
    assert statuses[(kind, transport.padded)] == "rejected"
    assert federation.ledger.round(1).replies >= 3 and not federation.ledger.round(1).metrics.get("secure-abandoned")


def test_the_robust_defaults_resolve_to_off_under_secure_aggregation():
    """The server sees no single reply under secure aggregation: the reply
    defences, on by default, are off there (and the run's config says so),
    while a plain run of the same settings has them."""
    secure, plain = Config.of(secure_aggregation=True), Config.of()
    assert all(getattr(secure.federation, name) == 0 for name in REPLY_DEFENCES)
    assert secure.to_dict()["zero-factor"] == 0.0 and from_mapping(secure.to_dict()) == secure  # round trip
    assert all(getattr(plain.federation, name) == getattr(FederationConfig(), name) for name in REPLY_DEFENCES)
    assert plain.federation.zero_factor > 0 and plain.federation.row_clip > 0
