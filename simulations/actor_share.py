"""Client actors for runs that share one Ray cluster.

Flower 1.41 sizes a simulation's actor pool to every CPU (and GPU) of the
cluster it attaches to. Two simulations on one cluster therefore each ask for
all of it; Ray starts some actors of each and leaves the rest pending, and a
round whose messages went to a pending actor waits for the other simulation to
end, which waits in turn: seen here as a sweep with `--jobs 3` on one 2-CPU
cluster whose points all ran into their timeout. With `ray-share = N`, a run
creates 1/N of the actors that fit (at least one), so N runs fit side by side.
"""

from __future__ import annotations

from flwr.simulation.ray_transport import ray_actor

_ORIGINAL = ray_actor.pool_size_from_resources


def enable(share: int) -> None:
    """Size the actor pools this process creates to 1/`share` of the cluster."""

    def pool_size(client_resources: dict[str, int | float]) -> int:
        return max(1, _ORIGINAL(client_resources) // share)

    ray_actor.pool_size_from_resources = pool_size if share > 1 else _ORIGINAL
