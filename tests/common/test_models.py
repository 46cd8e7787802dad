import pytest
import torch

from prunus.common.models import build_model


@pytest.mark.parametrize("name", ["mf", "neumf"])
def test_shared_and_private_split_covers_all_parameters(name):
    model = build_model(name, 5, 7, 4, (8, 4), seed=1)
    shared, private = set(model.shared_names()), set(model.private_names())
    assert shared and private and not shared & private
    assert shared | private == {n for n, _ in model.named_parameters()}
    assert all(n.startswith("user") for n in private)
    assert not any(n.startswith("user") for n in shared)


@pytest.mark.parametrize("name", ["mf", "neumf"])
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
