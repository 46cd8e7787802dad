"""Every registered defence: same tensors out, only the rows the client was
sent may move, a function of (update, client secret, seed, round, partition);
and what each one promises (decoys that move like real items; clipping and
calibrated noise; nothing the server can draw again without the secret)."""

from __future__ import annotations

import numpy as np
import pytest

from prunus.common.compression import DEFENCES, RoundContext, make
from prunus.common.config import Config
from prunus.common.privacy import noise_multiplier

TABLES = ("item_embedding.weight", "item_bias.weight")
POSITIVES = np.array([2, 5, 9, 11])


def _delta() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    delta = {"item_embedding.weight": np.zeros((60, 4), np.float32), "item_bias.weight": np.zeros((60, 1), np.float32),
             "mlp.0.bias": rng.normal(size=3).astype(np.float32)}
    for name in TABLES:
        delta[name][POSITIVES] = 0.1 + rng.random((4, delta[name].shape[1])).astype(np.float32)
        delta[name][[20, 21, 22]] = -0.05  # sampled negatives
    return delta


def _defence(name: str, **settings):
    return make(DEFENCES, name, Config.of(defence=name, **settings))


@pytest.mark.parametrize("name", DEFENCES.names())
@pytest.mark.parametrize("sent", [None, np.arange(0, 40)])
def test_a_defence_keeps_the_tensors_and_moves_only_rows_sent(name, sent):
    rows = None if sent is None else dict.fromkeys(TABLES, sent)
    ctx = RoundContext(server_round=3, partition_id=1, seed=0, rows=rows)
    before = _delta()
    out = _defence(name).apply(_delta(), POSITIVES, TABLES, ctx)
    again = _defence(name).apply(_delta(), POSITIVES, TABLES, ctx)
    assert {k: (v.shape, v.dtype) for k, v in out.items()} == {k: (v.shape, v.dtype) for k, v in before.items()}
    assert all(np.array_equal(out[k], again[k]) for k in out)
    if sent is not None:
        for name_ in TABLES:
            assert not out[name_][40:].any()


def test_fill_adds_decoys_that_move_like_the_real_items():
    out = _defence("fill", fill_rate=2.0).apply(_delta(), POSITIVES, TABLES, RoundContext(1, 0, 0))
    moved = np.flatnonzero(out["item_embedding.weight"].any(1))
    decoys = np.setdiff1d(moved, np.r_[POSITIVES, 20, 21, 22])
    assert len(decoys) == 8
    real = np.linalg.norm(_delta()["item_embedding.weight"][POSITIVES], axis=1)
    fake = np.linalg.norm(out["item_embedding.weight"][decoys], axis=1)
    assert 0.5 * real.min() <= fake.min() and fake.max() <= 1.5 * real.max()
    assert (out["item_embedding.weight"][decoys] > 0).all()  # the direction of a real item's update


def test_without_spread_a_decoy_is_a_real_items_update_exactly():
    delta = _delta()
    out = _defence("fill", fill_rate=1.0, fill_spread=0.0).apply(_delta(), POSITIVES, TABLES, RoundContext(1, 0, 0))
    decoys = np.setdiff1d(np.flatnonzero(out["item_embedding.weight"].any(1)), np.r_[POSITIVES, 20, 21, 22])
    real = {tuple(row) for row in delta["item_embedding.weight"][POSITIVES]}
    assert len(decoys) == 4 and all(tuple(row) in real for row in out["item_embedding.weight"][decoys])


def test_ldp_clips_the_update_and_adds_noise_of_its_calibrated_scale():
    defence = _defence("ldp", ldp_clip=0.5, ldp_epsilon=4.0, ldp_delta=1e-5)
    delta = {"w": np.full((200, 50), 1.0, np.float32)}
    out = defence.apply(delta, POSITIVES, ("w",), RoundContext(1, 0, 0))
    noise = out["w"] - delta["w"] * (0.5 / np.linalg.norm(delta["w"]))
    sigma = noise_multiplier(4.0, 1e-5)
    assert noise.std() == pytest.approx(sigma * 2 * 0.5, rel=0.02)


def test_plausible_decoys_are_the_best_scored_rows_the_client_did_not_touch():
    scores = np.arange(60, dtype=np.float64)  # item 59 scores highest
    out = _defence("fill", fill_rate=1.0, fill_choice="plausible").apply(_delta(), POSITIVES, TABLES,
                                                                           RoundContext(1, 0, 0), scores)  # fmt: skip
    moved = set(np.flatnonzero(out["item_embedding.weight"].any(1)))
    assert moved - {2, 5, 9, 11, 20, 21, 22} == {56, 57, 58, 59}


@pytest.mark.parametrize("name", ["fill", "ldp"])
def test_what_a_defence_adds_is_drawn_from_the_clients_secret(name):
    """The server knows (seed, round, partition); drawn from those alone, the
    decoys or the noise would be the server's to draw again and take out."""
    def added(secret: int) -> np.ndarray:
        ctx = RoundContext(server_round=3, partition_id=1, seed=0, secret=secret)
        return _defence(name).apply(_delta(), POSITIVES, TABLES, ctx)["item_embedding.weight"] - _delta()[TABLES[0]]

    client = added(secret=2**100 + 7)
    np.testing.assert_array_equal(client, added(secret=2**100 + 7))
    assert not np.allclose(client, added(secret=0))  # the server's best try: every public seed, no secret


def test_only_fill_with_fill_repay_owes_what_it_adds():
    assert _defence("fill", fill_repay=True, prune_method="topk-global").repays
    assert not _defence("fill").repays and not _defence("ldp").repays and not _defence("none").repays
