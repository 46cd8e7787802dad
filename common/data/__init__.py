"""Loading, splitting, generating and partitioning recommender interaction data."""

from prunus.common.data.errors import DatasetError
from prunus.common.data.interactions import Interactions
from prunus.common.data.loaders import (
    load_ml1m,
    load_ml100k,
    load_ncf,
    load_ncf_item_map,
    load_raw_ids,
    load_table,
    load_titles,
)
from prunus.common.data.partition import partition_users, user_groups_by_popularity
from prunus.common.data.split import SplitData, leave_one_out, sample_negatives, to_implicit
from prunus.common.data.synthetic import generate_synthetic, planted_factors

__all__ = [
    "DatasetError",
    "Interactions",
    "SplitData",
    "generate_synthetic",
    "leave_one_out",
    "load_ml100k",
    "load_ml1m",
    "load_ncf",
    "load_ncf_item_map",
    "load_raw_ids",
    "load_table",
    "load_titles",
    "partition_users",
    "planted_factors",
    "sample_negatives",
    "to_implicit",
    "user_groups_by_popularity",
]
