import numpy as np

from prunus.common.config import Config
from prunus.server.model_pruning import prune_model, sparsity_at
from prunus.server.model_store import load_model, save_model


def test_cubic_schedule_ramps_from_start_to_end():
    cfg = Config.of(model_sparsity=0.8, model_prune_start=3, model_prune_end=7)
    values = [sparsity_at(cfg, r) for r in range(1, 10)]
    assert values[:2] == [0.0, 0.0] and values[2] == 0.0
    assert all(a <= b for a, b in zip(values, values[1:]))
    assert values[6] == values[8] == 0.8
    assert sparsity_at(Config(), 5) == 0.0


def test_magnitude_pruning_keeps_the_largest_entries_and_spares_biases():
    rng = np.random.default_rng(0)
    params = {"item_embedding.weight": rng.normal(size=(20, 5)).astype(np.float32),
              "item_bias.weight": rng.normal(size=(20, 1)).astype(np.float32)}  # fmt: skip
    pruned = prune_model(params, 0.75)
    table = pruned["item_embedding.weight"]
    assert np.count_nonzero(table) == 25
    kept = np.abs(params["item_embedding.weight"])[table != 0]
    dropped = np.abs(params["item_embedding.weight"])[table == 0]
    assert kept.min() >= dropped.max()
    np.testing.assert_array_equal(pruned["item_bias.weight"], params["item_bias.weight"])


def test_saved_model_is_sparse_and_loads_back_exactly(tmp_path):
    rng = np.random.default_rng(1)
    params = prune_model({"item_embedding.weight": rng.normal(size=(300, 16)).astype(np.float32),
                          "item_bias.weight": rng.normal(size=(300, 1)).astype(np.float32)}, 0.9)  # fmt: skip
    info = save_model(tmp_path, params)
    assert abs(info["sparsity"] - 0.9) < 1e-3
    assert info["file_bytes"] < 0.3 * info["dense_fp32_bytes"]
    back = load_model(tmp_path / info["file"])
    for name, value in params.items():
        np.testing.assert_array_equal(back[name], value)
