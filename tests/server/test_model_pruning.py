import numpy as np

from prunus.common.config import Config
from prunus.server.model_pruning import ModelPruner, sparsity_at
from prunus.server.model_store import load_model, save_model

PRUNABLE = ["item_embedding.weight"]  # as the model declares: tables and weight matrices, not biases


def _pruner(sparsity: float, start: int = 1, end: int = 1, prunable=PRUNABLE) -> ModelPruner:
    """A pruner at `sparsity` from round `end` + 1 (the ramp is 0 at `start`)."""
    settings = Config.of(model_sparsity=sparsity, model_prune_start=start, model_prune_end=end).compression
    return ModelPruner(settings, list(prunable))


def test_cubic_schedule_ramps_from_start_to_end():
    settings = Config.of(model_sparsity=0.8, model_prune_start=3, model_prune_end=7).compression
    values = [sparsity_at(settings, r) for r in range(1, 10)]
    assert values[:2] == [0.0, 0.0] and values[2] == 0.0
    assert all(a <= b for a, b in zip(values, values[1:]))
    assert values[6] == values[8] == 0.8
    assert sparsity_at(Config().compression, 5) == 0.0


def test_magnitude_pruning_keeps_the_largest_entries_and_spares_biases():
    rng = np.random.default_rng(0)
    params = {"item_embedding.weight": rng.normal(size=(20, 5)).astype(np.float32),
              "item_bias.weight": rng.normal(size=(20, 1)).astype(np.float32)}  # fmt: skip
    pruned = _pruner(0.75).prune(params, 2)
    table = pruned["item_embedding.weight"]
    assert np.count_nonzero(table) == 25
    kept = np.abs(params["item_embedding.weight"])[table != 0]
    dropped = np.abs(params["item_embedding.weight"])[table == 0]
    assert kept.min() >= dropped.max()
    np.testing.assert_array_equal(table[table != 0], params["item_embedding.weight"][table != 0])
    np.testing.assert_array_equal(pruned["item_bias.weight"], params["item_bias.weight"])


def test_only_the_declared_tensors_are_pruned():
    rng = np.random.default_rng(2)
    params = {"a": rng.normal(size=(10, 4)).astype(np.float32), "b": rng.normal(size=(10, 4)).astype(np.float32)}
    pruned = _pruner(0.5, prunable=["b"]).prune(params, 5)
    np.testing.assert_array_equal(pruned["a"], params["a"])
    assert np.count_nonzero(pruned["b"]) == 20


def test_pruning_follows_the_schedule_round_by_round():
    rng = np.random.default_rng(3)
    params = {"item_embedding.weight": rng.normal(size=(50, 4)).astype(np.float32)}
    pruner = _pruner(0.8, start=2, end=4)
    nonzeros = [np.count_nonzero(pruner.prune(params, r)["item_embedding.weight"]) for r in range(1, 7)]
    assert nonzeros[:2] == [200, 200]  # before model-prune-start, and at it (the ramp starts at 0)
    assert nonzeros[3:] == [40, 40, 40]  # at and after model-prune-end: 80% pruned
    assert nonzeros[1] > nonzeros[2] > nonzeros[3]
    assert _pruner(0.0).prune(params, 5) is params  # off: untouched


def test_saved_model_is_sparse_and_loads_back_exactly(tmp_path):
    rng = np.random.default_rng(1)
    dense = {"item_embedding.weight": rng.normal(size=(300, 16)).astype(np.float32),
             "item_bias.weight": rng.normal(size=(300, 1)).astype(np.float32)}  # fmt: skip
    params = _pruner(0.9).prune(dense, 2)
    info = save_model(tmp_path, params, PRUNABLE)
    assert abs(info["sparsity"] - 0.9) < 1e-3
    assert info["file_bytes"] < 0.3 * info["dense_fp32_bytes"]
    assert info["nonzeros"] == sum(np.count_nonzero(v) for v in params.values())
    back = load_model(tmp_path / info["file"])
    assert set(back) == set(params)
    for name, value in params.items():
        np.testing.assert_array_equal(back[name], value)


def test_saved_sparsity_is_that_of_the_declared_tensors(tmp_path):
    params = {"item_embedding.weight": np.zeros((10, 2), np.float32), "item_bias.weight": np.ones((10, 1), np.float32)}
    params["item_embedding.weight"][:5] = 1.0
    assert save_model(tmp_path, params, ["item_embedding.weight"])["sparsity"] == 0.5
    assert save_model(tmp_path, params, [])["sparsity"] == 0.0
