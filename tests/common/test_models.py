import pytest
import torch

from prunus.common.models import MODELS, Role, Table, build_model


@pytest.mark.parametrize("name", ["mf", "neumf"])
def test_shared_and_private_split_covers_all_parameters(name):
    model = build_model(name, 5, 7, 4, (8, 4), seed=1)
    shared, private = set(model.shared_names()), set(model.private_names())
    assert shared and private and not shared & private
    assert shared | private == {n for n, _ in model.named_parameters()}
    assert all(n.startswith("user") for n in private)
    assert not any(n.startswith("user") for n in shared)


@pytest.mark.parametrize("name", MODELS.names())
def test_seeded_build_is_deterministic_and_scores_pairs(name):
    a, b = build_model(name, 5, 7, 4, (8, 4), seed=3), build_model(name, 5, 7, 4, (8, 4), seed=3)
    users, items = torch.tensor([0, 4]), torch.tensor([6, 1])
    assert torch.equal(a(users, items), b(users, items))
    assert a(users, items).shape == (2,)


def test_load_shared_leaves_private_untouched():
    a, b = build_model("mf", 3, 4, 2, seed=1), build_model("mf", 3, 4, 2, seed=2)
    users_before = b.private_state()
    b.load_shared(a.shared_state())
    assert all(torch.equal(a.shared_state()[k], v) for k, v in b.shared_state().items())
    assert all(torch.equal(users_before[k], v) for k, v in b.private_state().items())


def test_unknown_model_is_rejected():
    with pytest.raises(ValueError, match="unknown model"):
        build_model("svd", 1, 1, 1)


@pytest.mark.parametrize("name", ["mf", "neumf"])
def test_regularisation_covers_exactly_the_touched_rows(name):
    model = build_model(name, 3, 5, 4, (8, 4), seed=0)
    users, items = torch.tensor([1]), torch.tensor([2])
    rows = model.embedding_rows(users, items)
    assert torch.allclose(model.regularised_rows(users, items, 1), sum(r.abs().sum(-1) for r in rows))
    assert torch.allclose(model.regularised_rows(users, items, 2), sum((r * r).sum(-1) for r in rows))
    model.regularised_rows(users, items, 1).sum().backward()
    table = model.item_embedding.weight if name == "mf" else model.item_gmf.weight
    touched = table.grad.abs().sum(1) > 0
    assert touched.tolist() == [False, False, True, False, False]


# ------------------------------------------------------- declared tables
@pytest.mark.parametrize("name", MODELS.names())
def test_every_parameter_is_declared_and_the_name_lists_derive_from_the_tables(name):
    n_users, n_items = 5, 7
    model = build_model(name, n_users, n_items, 4, (8, 4), seed=1)
    tables, params = model.tables(), dict(model.named_parameters())
    assert set(tables) == set(params)
    assert all(isinstance(t, Table) and isinstance(t.role, Role) for t in tables.values())
    assert all(t.private == (t.role is Role.USER) for t in tables.values())
    order = list(params)  # the lists keep the parameters' order
    assert model.shared_names() == [n for n in order if not tables[n].private]
    assert model.private_names() == [n for n in order if tables[n].private]
    assert model.prunable_names() == [n for n in model.shared_names() if tables[n].prunable]
    assert not any(tables[n].prunable for n in model.private_names())
    assert model.n_items == n_items
    for n, table in tables.items():  # a table's rows are what its role says
        if table.role is Role.USER:
            assert params[n].shape[0] == n_users
        if table.role is Role.ITEM:
            assert params[n].shape[0] == n_items
        if table.role is Role.BIAS:
            assert not table.prunable


def test_mf_tables():
    tables = build_model("mf", 3, 4, 2).tables()
    assert {n: (t.role, t.prunable) for n, t in tables.items()} == {
        "user_embedding.weight": (Role.USER, False),
        "item_embedding.weight": (Role.ITEM, True),
        "item_bias.weight": (Role.ITEM, False),
    }


def test_neumf_dense_layers_are_prunable_and_their_biases_are_not():
    model = build_model("neumf", 3, 4, 2, (8, 4, 2), seed=0)
    tables = model.tables()
    assert {n for n, t in tables.items() if t.role is Role.USER} == {"user_gmf.weight", "user_mlp.weight"}
    assert {n for n, t in tables.items() if t.role is Role.ITEM} == {"item_gmf.weight", "item_mlp.weight"}
    dense = {n for n, t in tables.items() if t.role is Role.DENSE}
    biases = {n for n, t in tables.items() if t.role is Role.BIAS}
    assert dense == {"mlp.0.weight", "mlp.2.weight", "output.weight"}
    assert biases == {"mlp.0.bias", "mlp.2.bias", "output.bias"}
    assert all(tables[n].prunable for n in dense) and not any(tables[n].prunable for n in biases)
    assert set(model.prunable_names()) == {"item_gmf.weight", "item_mlp.weight"} | dense
    assert set(model.shared_names()) == set(model.prunable_names()) | biases


def test_models_registry_builds_each_name():
    assert {"mf", "neumf"} <= set(MODELS.names())
    for name in MODELS.names():
        assert isinstance(build_model(name, 2, 3, 2, (4, 2)), MODELS.get(name))
