"""Runs sharing one Ray cluster each create their share of the client actors."""

from flwr.simulation.ray_transport import ray_actor

from simulations import actor_share


def test_a_run_creates_its_share_of_the_actors_and_at_least_one(monkeypatch):
    monkeypatch.setattr(actor_share, "_ORIGINAL", lambda resources: 8)  # 8 actors fit the cluster
    monkeypatch.setattr(ray_actor, "pool_size_from_resources", ray_actor.pool_size_from_resources)
    sizes = {}
    for share in (3, 8, 16, 1):
        actor_share.enable(share)
        sizes[share] = ray_actor.pool_size_from_resources({"num_cpus": 1})
    assert sizes == {3: 2, 8: 1, 16: 1, 1: 8}
    assert ray_actor.pool_size_from_resources is actor_share._ORIGINAL  # a share of 1 is Flower's own sizing
