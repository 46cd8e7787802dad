"""Partition files: each SuperNode's users, nothing more, checked against the run's config."""

import numpy as np
import pytest

from prunus.common.config import Config
from prunus.common.data import DatasetError
from prunus.common.datasets import load_split, partitions
from prunus.common.partition_files import load_partition_file, write_partition_files

CFG = Config.of(synthetic_users=40, synthetic_items=30, eval_negatives=9, partition="iid", num_silos=3)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    out = tmp_path_factory.mktemp("parts")
    return out, write_partition_files(CFG, out)


def test_each_file_holds_exactly_its_partition(files):
    out, manifest = files
    split = load_split(CFG)
    assert manifest["num_partitions"] == 3 and sum(f["users"] for f in manifest["files"]) == 40
    for partition_id, users in enumerate(partitions(CFG)):
        local = load_partition_file(str(out / f"partition-{partition_id}.npz"), CFG, partition_id)
        assert local.n_users == len(users) and local.n_items == split.n_items
        for row, user in enumerate(users):
            np.testing.assert_array_equal(local.user_items(row), split.user_items(user))
        np.testing.assert_array_equal(local.test_items, split.test_items[users])
        np.testing.assert_array_equal(local.test_negatives, split.test_negatives[users])


def test_a_file_of_another_partition_is_refused(files):
    out, _ = files
    with pytest.raises(DatasetError, match="holds partition 1, but this node is partition 2"):
        load_partition_file(str(out / "partition-1.npz"), CFG, 2)


def test_a_run_config_that_disagrees_with_the_file_is_refused_naming_the_key(files):
    out, _ = files
    other = CFG.replace(eval_split="validation")
    with pytest.raises(DatasetError, match="eval-split='test' but the run has eval-split='validation'"):
        load_partition_file(str(out / "partition-0.npz"), other, 0)


def test_a_corrupt_file_names_itself(tmp_path):
    bad = tmp_path / "partition-0.npz"
    bad.write_bytes(b"not a zip archive")
    with pytest.raises(DatasetError, match="partition-0.npz: not a readable partition file"):
        load_partition_file(str(bad), CFG, 0)
    np.savez(bad, users=np.arange(3))
    with pytest.raises(DatasetError, match="missing"):
        load_partition_file(str(bad), CFG, 0)
