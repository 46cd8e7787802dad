import numpy as np
import torch

from prunus.common.data import SplitData
from prunus.common.evaluation import ranking_metrics
from prunus.common.models import Recommender


class TableModel(Recommender):
    """Scores come from a fixed (user x item) table: hand-checkable ranks."""

    def __init__(self, scores: np.ndarray) -> None:
        super().__init__()
        self.scores = torch.nn.Parameter(torch.as_tensor(scores, dtype=torch.float32))

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.scores[users, items]


def _split(test_items, negatives, n_items=6):
    n_users = len(test_items)
    return SplitData(
        n_users=n_users,
        n_items=n_items,
        train_users=np.arange(n_users, dtype=np.int64),
        train_items=np.full(n_users, n_items - 1, dtype=np.int64),
        test_items=np.asarray(test_items, dtype=np.int64),
        test_negatives=np.asarray(negatives, dtype=np.int64),
    )


def test_sampled_metrics_match_hand_computed_ranks():
    scores = np.array([[0.9, 0.1, 0.2, 0.3, 0.0, 0.0], [0.1, 0.5, 0.9, 0.8, 0.0, 0.0]])
    split = _split([0, 1], [[1, 2, 3], [2, 3, 0]])
    metrics = ranking_metrics(TableModel(scores), split, k=2)
    # user 0: rank 0 (hit, gain 1); user 1: rank 2 (miss at k=2)
    assert metrics["hr@2"] == 0.5
    assert np.isclose(metrics["ndcg@2"], 0.5)


def test_a_negative_equal_to_the_held_out_item_is_not_a_competitor():
    scores = np.array([[0.5, 0.1, 0.2, 0.0, 0.0, 0.0]])
    split = _split([0], [[0, 1, 2]])  # the held-out item listed among its negatives
    assert ranking_metrics(TableModel(scores), split, k=1)["hr@1"] == 1.0


def test_users_without_held_out_item_are_skipped_and_full_ranking_excludes_train_items():
    scores = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.9], [0.9, 0.1, 0.2, 0.3, 0.4, 0.5]])
    split = _split([2, -1], [[0, 1, 3], [-1, -1, -1]])
    metrics = ranking_metrics(TableModel(scores), split, k=3, full_ranking=True)
    assert metrics["eval-users"] == 1
    # sampled: item 2 (0.3) beats 0 and 1, loses to 3 -> rank 1
    assert metrics["hr@3"] == 1.0
    # full: item 5 is a train item (excluded); 3 and 4 outrank it -> rank 2
    assert metrics["full-hr@3"] == 1.0 and np.isclose(metrics["full-ndcg@3"], 1 / np.log2(4))
