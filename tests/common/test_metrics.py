import math

import numpy as np

from prunus.common.metrics import hit_rate, ndcg, rank_of_positive


def test_rank_counts_negatives_scoring_at_least_the_positive():
    pos = np.array([0.9, 0.5, 0.1])
    neg = np.array([[0.1, 0.2, 0.3], [0.6, 0.5, 0.4], [0.2, 0.3, 0.4]])
    assert rank_of_positive(pos, neg).tolist() == [0, 2, 3]  # the tie counts against


def test_hit_rate_and_ndcg_hand_computed():
    ranks = np.array([0, 2, 9, 10, 50])
    assert hit_rate(ranks, 10) == 3 / 5
    expected = (1 / math.log2(2) + 1 / math.log2(4) + 1 / math.log2(11)) / 5
    assert math.isclose(ndcg(ranks, 10), expected)
    assert hit_rate(ranks, 1) == 1 / 5


def test_constant_model_is_not_perfect():
    ranks = rank_of_positive(np.zeros(4), np.zeros((4, 99)))
    assert hit_rate(ranks, 10) == 0.0
