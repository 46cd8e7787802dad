import torch

from prunus.common.models import build_model
from prunus.common.training import TrainSettings, fold_in, seeded_generator, train

SETTINGS = TrainSettings(loss="bce", num_negatives=2, epochs=1, lr=0.05, batch_size=64, optimizer="adam")


def _data():
    users = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    items = torch.tensor([1, 2, 3, 4, 5, 1, 6, 7, 8])
    return users, items


def test_training_lowers_the_loss():
    users, items = _data()
    model = build_model("mf", 3, 10, 4, seed=0)
    settings = TrainSettings(**{**SETTINGS.__dict__, "epochs": 1})
    first = train(model, users, items, settings, seeded_generator(0))
    later = [train(model, users, items, settings, seeded_generator(0, i)) for i in range(30)][-1]
    assert later < first


def test_same_seed_same_model():
    users, items = _data()
    a, b = build_model("mf", 3, 10, 4, seed=0), build_model("mf", 3, 10, 4, seed=0)
    train(a, users, items, SETTINGS, seeded_generator(7))
    train(b, users, items, SETTINGS, seeded_generator(7))
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))


def test_fold_in_changes_only_private_parameters():
    users, items = _data()
    model = build_model("mf", 3, 10, 4, seed=0)
    shared_before, private_before = model.shared_state(), model.private_state()
    fold_in(model, users, items, SETTINGS, steps=5, lr=0.1, generator=seeded_generator(1))
    assert all(torch.equal(shared_before[k], v) for k, v in model.shared_state().items())
    assert not all(torch.equal(private_before[k], v) for k, v in model.private_state().items())
    assert all(p.requires_grad for p in model.parameters())


def test_fold_in_gives_each_user_the_path_it_would_take_alone():
    """Batched fold-in over all users equals folding in one user by itself
    (up to the negatives drawn): with negatives switched off via BPR on a
    single positive pair, both see identical data."""
    settings = TrainSettings(loss="bpr", num_negatives=1, epochs=1, lr=0.1, batch_size=64)
    full = build_model("mf", 2, 3, 4, seed=0)
    alone = build_model("mf", 1, 3, 4, seed=0)
    alone.load_shared(full.shared_state())
    with torch.no_grad():
        alone.user_embedding.weight.copy_(full.user_embedding.weight[1:2])
    # item count 3, user 1 trains on item 0; fixed generator state per call
    fold_in(full, torch.tensor([1]), torch.tensor([0]), settings, 3, 0.1, seeded_generator(5))
    fold_in(alone, torch.tensor([0]), torch.tensor([0]), settings, 3, 0.1, seeded_generator(5))
    assert torch.allclose(full.user_embedding.weight[1], alone.user_embedding.weight[0])


def test_l1_drives_embedding_entries_toward_zero():
    users, items = _data()
    plain, sparse = build_model("mf", 3, 10, 4, seed=0), build_model("mf", 3, 10, 4, seed=0)
    base = TrainSettings(loss="bce", num_negatives=2, epochs=20, lr=0.05, batch_size=64, optimizer="adam")
    train(plain, users, items, base, seeded_generator(0))
    train(sparse, users, items, TrainSettings(**{**base.__dict__, "l1": 0.5}), seeded_generator(0))
    assert sparse.item_embedding.weight.abs().sum() < 0.8 * plain.item_embedding.weight.abs().sum()
