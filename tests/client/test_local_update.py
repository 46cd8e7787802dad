import numpy as np
import torch

from prunus.client.local_update import local_data, local_update
from prunus.common.config import Config
from prunus.common.datasets import load_split, partitions
from prunus.common.models import build_model

CFG = Config.of(synthetic_users=40, synthetic_items=30, eval_negatives=9, train_negatives=2, dim=4, local_epochs=2, user_refit_epochs=2)
CPU = torch.device("cpu")


def _global():
    split = load_split(CFG)
    model = build_model(CFG.model.model, 1, split.n_items, CFG.model.dim, seed=0)
    return split, {k: v.numpy() for k, v in model.shared_state().items()}


def _update(partition: int, private=None, server_round: int = 1):
    split, params = _global()
    data = local_data(split, np.asarray(partitions(CFG)[partition]))
    return data, local_update(CFG, data, split.n_items, params, private, server_round, partition, CPU)


def test_update_holds_only_shared_parameters():
    _, result = _update(3)
    assert set(result.delta) == {"item_embedding.weight", "item_bias.weight"}
    assert set(result.private) == {"user_embedding.weight"}
    assert result.private["user_embedding.weight"].shape == (1, CFG.model.dim)


def test_rows_of_items_the_client_never_used_stay_zero():
    """L2 only on touched rows and sparse SGD: an item neither trained on nor
    sampled as a negative gets an exactly-zero update (row sparsity)."""
    data, result = _update(5)
    touched = np.flatnonzero(np.abs(result.delta["item_embedding.weight"]).sum(1))
    assert set(data.items.tolist()) <= set(touched.tolist())
    assert len(touched) < CFG.data.synthetic_items


def test_update_is_deterministic_in_seed_round_and_partition():
    _, a = _update(2, server_round=4)
    _, b = _update(2, server_round=4)
    _, c = _update(2, server_round=5)
    np.testing.assert_array_equal(a.delta["item_embedding.weight"], b.delta["item_embedding.weight"])
    assert not np.array_equal(a.delta["item_embedding.weight"], c.delta["item_embedding.weight"])


def test_private_state_carries_over():
    _, first = _update(1)
    _, second = _update(1, private=first.private, server_round=2)
    assert not np.array_equal(first.private["user_embedding.weight"], second.private["user_embedding.weight"])


def test_a_pruned_model_keeps_its_mask_but_biases_still_learn():
    cfg = CFG.replace(model_sparsity=0.5)
    split, params = _global()
    params["item_embedding.weight"][::2] = 0.0  # the server's pruned entries
    data = local_data(split, np.asarray(partitions(cfg)[4]))
    result = local_update(cfg, data, split.n_items, params, None, 1, 4, CPU)
    assert not result.delta["item_embedding.weight"][::2].any()
    assert result.delta["item_embedding.weight"][1::2].any()
    assert result.delta["item_bias.weight"].any()  # zero-initialised, yet not masked


def test_neumf_update_carries_item_tables_and_dense_layers_but_no_user_tables():
    cfg = CFG.replace(model="neumf", mlp_layers="8,4")
    split = load_split(cfg)
    model = build_model("neumf", 1, split.n_items, cfg.model.dim, cfg.model.mlp_widths, seed=0)
    params = {k: v.numpy() for k, v in model.shared_state().items()}
    data = local_data(split, np.asarray(partitions(cfg)[2]))
    result = local_update(cfg, data, split.n_items, params, None, 1, 2, CPU)
    assert set(result.delta) == set(params)
    assert {"item_gmf.weight", "item_mlp.weight", "output.weight"} <= set(result.delta)
    assert set(result.private) == {"user_gmf.weight", "user_mlp.weight"}
    assert np.abs(result.delta["output.weight"]).sum() > 0
