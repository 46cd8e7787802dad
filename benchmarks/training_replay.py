"""What a server learns by replaying a client's training draws (docs/privacy.md).

An MF client's batch order and sampled negatives come from (run seed, round,
partition) and its example count (`common.mf_closed_form.local_update_mf`),
all of which the server knows. The server replays that generator and names
as the client's items the rows its update touched that were not drawn as
negatives. With a whole-model broadcast (a requested pool is secret, so the
replay does not reach negatives drawn from it), for every `--every`-th
client's first reply in round `--round`:

    python benchmarks/training_replay.py simulations/configs/ml100k-dense.toml \
        --out benchmarks/results/training_replay.json

writes the precision and recall of the replay's guess, and of `membership`
(every touched row), averaged over the clients.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from prunus.client import handlers
from prunus.client.handlers import ClientData
from prunus.common.compression import DOWNLINK, UPLINK, BroadcastContext
from prunus.common.config import Config, load
from prunus.common.datasets import load_split, partitions
from prunus.common.mf_closed_form import closed_form
from prunus.common.models import build_model
from prunus.common.payload import ConfigMap, Content
from prunus.common.update import densify


def broadcast(cfg: Config, params: dict[str, np.ndarray], server_round: int) -> Content:
    """The round's whole-model training message, the same for every client."""
    downlink = DOWNLINK.get(cfg.compression.downlink_codec)(cfg.compression)
    arrays = downlink.encode(params, BroadcastContext(server_round, 0))
    return Content({"arrays": arrays, "config": ConfigMap({"server-round": server_round})})


def touched_rows(cfg: Config, client: ClientData, message: Content, shapes: dict[str, tuple[int, ...]]) -> set[int]:
    """The item rows a client's reply to `message` moves, as the server decodes it."""
    reply = handlers.train(cfg, message, Content(), client)
    update = densify(UPLINK.get(cfg.compression.prune_method)(cfg.compression).decode(reply["arrays"], shapes))
    return set(np.flatnonzero(update["item_embedding.weight"].any(axis=1)).tolist())


def replayed_negatives(cfg: Config, n_items: int, server_round: int, partition: int, examples: int) -> set[int]:
    """The rows the client drew as negatives, from what the server knows."""
    t, k = cfg.training, cfg.training.train_negatives
    rng = np.random.default_rng([cfg.runtime.seed, server_round, partition, 0])
    if t.user_refit_epochs:  # the user vectors' refit draws first
        rng.integers(0, n_items, (t.user_refit_epochs, examples, k))
    drawn: set[int] = set()
    for _ in range(t.local_epochs):
        rng.permutation(examples)
        drawn |= set(rng.integers(0, n_items, (examples, k)).ravel().tolist())
    return drawn


def attack(cfg: Config, every: int, server_round: int) -> dict[str, float | int]:
    """Replay and membership, scored against each sampled client's true items."""
    if not closed_form(cfg) or cfg.compression.broadcast_rows != "all" or cfg.compression.prune_method != "none":
        raise SystemExit("the replay is written for dense MF on the closed-form path with a whole-model broadcast")
    split, parts = load_split(cfg), partitions(cfg)
    model = build_model(cfg.model.model, 1, split.n_items, cfg.model.dim, cfg.model.mlp_widths, seed=0)
    params = {name: value.numpy() for name, value in model.shared_state().items()}
    message, shapes = broadcast(cfg, params, server_round), {name: value.shape for name, value in params.items()}
    scores = []
    for partition in range(0, len(parts), every):
        client = ClientData.of(partition, split, np.asarray(parts[partition]), torch.device("cpu"))
        items, touched = set(client.data.items.tolist()), touched_rows(cfg, client, message, shapes)
        guess = touched - replayed_negatives(cfg, split.n_items, server_round, partition, len(client.data.items))
        scores.append((len(items & guess) / max(len(guess), 1), len(items & guess) / len(items),
                       len(items & touched) / len(touched)))
    mean = np.mean(scores, axis=0)
    return {"clients": len(scores), "round": server_round, "replay_precision": float(mean[0]),
            "replay_recall": float(mean[1]), "membership_precision": float(mean[2])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config")
    parser.add_argument("--every", type=int, default=23, help="attack every N-th client")
    parser.add_argument("--round", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = {"config": args.config, **attack(load(args.config, []), args.every, args.round)}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
