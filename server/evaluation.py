"""Central evaluation of the global model on held-out users.

The global model has no user vectors (they stay on clients), so each user's
vector is folded in from that user's training interactions with the shared
parameters fixed; the figure then measures the shared parameters alone.

With `eval-as-decoded` (by default when the broadcast is lossy) the model
scored is the one clients decode: the downlink's encode then decode of the
whole model, as a whole-model broadcast of that round carries it. Its metrics
are the headline (`hr@k`), the server's float model's follow with "-server".
A model holding NaN or an infinity is never scored: `NonFiniteModel`.
"""

from __future__ import annotations

import torch

from prunus.common.compression import DOWNLINK, BroadcastContext, make
from prunus.common.config import Config
from prunus.common.data import SplitData
from prunus.common.evaluation import ranking_metrics
from prunus.common.mf_closed_form import BIAS, ITEMS, USERS, closed_form, fold_in_all
from prunus.common.models import Recommender, build_model
from prunus.common.params import Params, check_finite
from prunus.common.training import TrainSettings, client_settings, fold_in, seeded_generator

EVAL_STREAM = 0xE7A1  # keeps evaluation's random stream apart from training's
CHUNK_PAIRS = 50_000  # training pairs per fold-in batch: a batch's activations stay in cache


class CentralEvaluator:
    """Scores a set of shared parameters: fold in users, then rank held-out items."""

    def __init__(self, cfg: Config, split: SplitData, device: torch.device | None = None) -> None:
        self.cfg, self.split = cfg, split
        self.device = device or torch.device("cpu")
        self.users = torch.as_tensor(split.train_users, device=self.device)
        self.items = torch.as_tensor(split.train_items, device=self.device)
        self.downlink = make(DOWNLINK, cfg.compression.downlink_codec, cfg) if self.decodes(cfg) else None

    @staticmethod
    def decodes(cfg: Config) -> bool:
        """Whether `cfg` scores the model as clients decode it (`eval-as-decoded`)."""
        wanted = cfg.evaluation.eval_as_decoded
        return wanted == "on" or (wanted == "auto" and make(DOWNLINK, cfg.compression.downlink_codec, cfg).lossy)

    def __call__(self, shared: Params, server_round: int = 0) -> dict[str, float]:
        """The model's metrics; as clients decode its broadcast of `server_round`
        when evaluating as decoded (then the float model's too, "-server")."""
        check_finite(shared, "the model to evaluate")
        if self.downlink is None:
            return self.score(shared)
        return self.score(self.as_decoded(shared, server_round)) | {
            f"{name}-server": value for name, value in self.score(shared).items() if name != "eval-users"}

    def as_decoded(self, shared: Params, server_round: int) -> Params:
        """What a client decodes of the whole-model broadcast of `shared` in `server_round`."""
        ctx = BroadcastContext(server_round, self.cfg.runtime.seed)
        return self.downlink.decode(self.downlink.encode(shared, ctx), {k: v.shape for k, v in shared.items()})

    def score(self, shared: Params) -> dict[str, float]:
        """The metrics of these shared parameters as they are."""
        cfg, split = self.cfg, self.split
        model = build_model(cfg.model.model, split.n_users, split.n_items, cfg.model.dim, cfg.model.mlp_widths, seed=cfg.runtime.seed)
        model = model.to(self.device)
        model.load_shared({k: torch.as_tensor(v) for k, v in shared.items()})
        settings, epochs, lr = client_settings(cfg), cfg.evaluation.fold_in_epochs, cfg.training.user_lr
        if closed_form(cfg):  # MF: the same fold-in in numpy (common/mf_closed_form.py), several times faster
            users = fold_in_all(shared[ITEMS], shared[BIAS], split.train_users, split.train_items, split.n_users,
                                settings, epochs, lr, cfg.runtime.seed)
            model.load_private({USERS: torch.as_tensor(users, device=self.device)})
        else:
            fold_in_by_chunks(model, self.users, self.items, settings, epochs, lr, cfg.runtime.seed)
        return ranking_metrics(model, split, k=cfg.evaluation.top_k, full_ranking=cfg.evaluation.full_ranking)


def fold_in_by_chunks(model: Recommender, users: torch.Tensor, items: torch.Tensor, settings: TrainSettings,
                      steps: int, lr: float, seed: int) -> None:
    """Every user's private parameters folded in, a chunk of whole users at a
    time (`users` sorted). Users are independent in `fold_in`, so chunks change
    only which negatives are drawn; NeuMF's full batch of ML-1M (5M pairs with
    their negatives) ran a step about 4x slower than the same pairs in chunks."""
    n_users = int(users[-1]) + 1 if len(users) else 0
    per_chunk = max(1, n_users * CHUNK_PAIRS // max(len(users), 1))
    bounds = torch.searchsorted(users, torch.arange(0, n_users + per_chunk, per_chunk, device=users.device))
    for start, (low, high) in enumerate(zip(bounds[:-1].tolist(), bounds[1:].tolist())):
        if low < high:
            fold_in(model, users[low:high], items[low:high], settings, steps, lr,
                    seeded_generator(seed, EVAL_STREAM, start))
