import numpy as np

from prunus.client.compression import encode_update, residual_from_record, residual_to_record
from prunus.common.codec import unpack_update
from prunus.common.config import Config
from prunus.common.params import from_record
from prunus.common.pruning import densify, expand


def _delta(seed: int = 0):
    rng = np.random.default_rng(seed)
    items = rng.normal(size=(50, 4)).astype(np.float32) * (rng.random((50, 1)) < 0.3)
    return {"item_embedding.weight": items, "item_bias.weight": rng.normal(size=(50, 1)).astype(np.float32)}


def test_dense_baseline_sends_float32_arrays():
    encoded = encode_update(Config(), _delta(), None, 1, 0)
    sent = from_record(encoded.record)
    np.testing.assert_array_equal(sent["item_embedding.weight"], _delta()["item_embedding.weight"])
    assert encoded.residual == {}


def test_topk_sends_what_it_kept_and_keeps_the_rest_as_residual():
    cfg = Config.of(prune_method="topk", density=0.1, value_codec="fp32")
    delta = _delta()
    encoded = encode_update(cfg, delta, None, 1, 0)
    sent = densify(unpack_update(encoded.record))
    residual = expand(encoded.residual)
    lr = cfg.local_lr_at(1)
    for name, value in delta.items():
        np.testing.assert_allclose(sent[name] + lr * residual.get(name, 0), value, rtol=1e-6, atol=1e-6)
    assert encoded.nnz == sum(int(np.ceil(0.1 * v.size)) for v in delta.values())


def test_residual_is_added_to_the_next_update_at_the_current_learning_rate():
    cfg = Config.of(prune_method="topk", density=0.05, rounds=10, local_lr=4.0, local_lr_final=1.0)
    first = encode_update(cfg, _delta(1), None, 1, 3)
    second = encode_update(cfg, _delta(2), first.residual, 5, 3)
    lr1, lr5 = cfg.local_lr_at(1), cfg.local_lr_at(5)
    sent1 = densify(unpack_update(first.record))
    for name in sent1:  # stored per unit of learning rate
        np.testing.assert_allclose(sent1[name] + lr1 * expand(first.residual)[name], _delta(1)[name], atol=1e-5)
    sent = densify(unpack_update(second.record))
    corrected = {n: _delta(2)[n] + lr5 * expand(first.residual)[n] for n in sent}
    for name in sent:
        np.testing.assert_allclose(sent[name] + lr5 * expand(second.residual)[name], corrected[name], atol=1e-5)


def test_without_error_feedback_nothing_is_kept():
    cfg = Config.of(prune_method="topk", density=0.05, error_feedback=False)
    encoded = encode_update(cfg, _delta(), None, 1, 0)
    assert all(len(idx) == 0 for idx, _, _ in encoded.residual.values())


def test_residual_survives_the_state_record():
    cfg = Config.of(prune_method="randomk", density=0.2, value_codec="int8")
    encoded = encode_update(cfg, _delta(), None, 1, 0)
    back = residual_from_record(residual_to_record(encoded.residual))
    for name, (idx, val, shape) in encoded.residual.items():
        np.testing.assert_array_equal(back[name][0], idx)
        np.testing.assert_array_equal(back[name][1], val)
        assert back[name][2] == shape
