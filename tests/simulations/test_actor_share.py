"""Runs sharing one Ray cluster each create their share of the client actors."""

from flwr.simulation.ray_transport import ray_actor

from prunus.common import flower_compat


def test_a_run_creates_its_share_of_the_actors_and_at_least_one(monkeypatch):
    flower_compat.enable_actor_share(1)  # records Flower's own sizing
    monkeypatch.setattr(ray_actor, "_prunus_original_pool_size_from_resources", lambda resources: 8)  # 8 actors fit the cluster
    monkeypatch.setattr(ray_actor, "pool_size_from_resources", ray_actor.pool_size_from_resources)
    sizes = {}
    for share in (3, 8, 16, 1):
        flower_compat.enable_actor_share(share)
        sizes[share] = ray_actor.pool_size_from_resources({"num_cpus": 1})
    assert sizes == {3: 2, 8: 1, 16: 1, 1: 8}
    assert ray_actor.pool_size_from_resources is ray_actor._prunus_original_pool_size_from_resources  # a share of 1 is Flower's own
