"""The run configuration: one typed, validated record of every setting.

Read from a flat TOML file and `--set key=value` overrides (CLI), or from
Flower's run config (`flwr run`); validated before any work starts so that a
typo or a bad value fails at once, naming the key.

The shared sections are declared here; a method with settings of its own
(`rank` of the `lowrank` uplink, `fill-*` of the `fill` defence) declares
them in its own module, as an `Options` section on its class, and the config
collects those from the registries (`method_sections`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

PARTITIONS = ("user", "iid", "dirichlet")
# the server's plug-ins live in `server/` (which common may not import): their
# names are listed here, and tests check each list against its registry
SERVER_OPTIMIZERS = ("fedavg", "fedavgm", "fedadam")  # server.optimizers.SERVER_OPTIMIZERS
AGGREGATORS = ("mean", "median", "trimmed-mean")  # server.aggregators.AGGREGATORS
EVAL_SPLITS = ("test", "validation")


class ConfigError(ValueError):
    """A bad configuration key or value; the message names the key."""


def _choice(*options: str) -> dict[str, Any]:
    return {"choices": options}


def _lazy_choice(registry: str) -> dict[str, Any]:
    """Choices read from a registry when a value is checked (see `_registry_names`)."""
    return {"registry": registry}


def _positive() -> dict[str, Any]:
    return {"min": 0, "exclusive": True}


def _non_negative() -> dict[str, Any]:
    return {"min": 0, "exclusive": False}


def _section(cls):
    """A frozen dataclass whose fields are checked against their metadata (then
    by the class's own `__post_init__`, if it has one, for checks across them)."""
    own = cls.__dict__.get("__post_init__")

    def __post_init__(self: Any) -> None:
        for f in fields(self):
            _check_value(f, getattr(self, f.name))
        if own is not None:
            own(self)

    cls.__post_init__ = __post_init__
    return dataclass(frozen=True)(cls)


# how a method's module declares its own section (see `method_sections`)
section, choice, positive, non_negative = _section, _choice, _positive, _non_negative


@_section
class DataConfig:
    """What data, how it is split and how it is cut into partitions (clients)."""

    dataset: str = field(default="synthetic", metadata=_lazy_choice("datasets"))
    data_dir: str = ""
    min_rating: float = field(default=0.0, metadata=_non_negative())
    synthetic_users: int = field(default=300, metadata=_positive())
    synthetic_items: int = field(default=200, metadata=_positive())
    synthetic_interactions: float = field(default=25.0, metadata=_positive())
    eval_split: str = field(default="test", metadata=_choice(*EVAL_SPLITS))
    eval_negatives: int = field(default=99, metadata=_positive())
    partition: str = field(default="user", metadata=_choice(*PARTITIONS))
    num_silos: int = field(default=10, metadata=_positive())
    dirichlet_alpha: float = field(default=0.5, metadata=_positive())


@_section
class ModelConfig:
    """Which recommender and its sizes."""

    model: str = field(default="mf", metadata=_lazy_choice("models"))
    dim: int = field(default=128, metadata=_positive())
    mlp_layers: str = "64,32,16"

    @property
    def mlp_widths(self) -> tuple[int, ...]:
        return tuple(int(w) for w in self.mlp_layers.split(","))


@_section
class TrainingConfig:
    """A client's local training (and the fold-in of user vectors)."""

    loss: str = field(default="bce", metadata=_choice("bce", "bpr"))
    train_negatives: int = field(default=8, metadata=_positive())
    local_epochs: int = field(default=2, metadata=_positive())
    local_lr: float = field(default=5.0, metadata=_positive())
    # cosine decay of the local learning rate to this value at the last round
    # (0 = constant local-lr)
    local_lr_final: float = field(default=0.5, metadata=_non_negative())
    local_optimizer: str = field(default="sgd", metadata=_choice("sgd", "adam"))
    batch_size: int = field(default=256, metadata=_positive())
    l2: float = field(default=0.0, metadata=_non_negative())
    # L1 on the embedding rows a client's batch touches (sparser updates and models)
    l1: float = field(default=0.0, metadata=_non_negative())
    user_refit_epochs: int = field(default=5, metadata=_non_negative())
    user_lr: float = field(default=0.1, metadata=_positive())
    # "auto": MF with SGD runs its closed form (common/mf_closed_form.py); "torch":
    # the PyTorch reference path for every model
    local_trainer: str = field(default="auto", metadata=_choice("auto", "torch"))


@_section
class CompressionConfig:
    """What travels: the uplink method, its codecs, the downlink, model pruning.

    Method and codec choices come from their registries
    (`prunus.common.compression`), so a new method is a new module only; a
    method's own settings are in its own section (`method_sections`).
    """

    prune_method: str = field(default="none", metadata=_lazy_choice("uplink"))
    density: float = field(default=1.0, metadata=_positive())
    density_warmup_rounds: int = field(default=0, metadata=_non_negative())
    error_feedback: bool = True
    value_codec: str = field(default="fp32", metadata=_lazy_choice("values"))
    index_codec: str = field(default="auto", metadata=_lazy_choice("indices"))
    downlink_codec: str = field(default="fp32", metadata=_lazy_choice("downlink"))
    # how the int4 and int2 broadcasts round: "stochastic" (noise seeded by
    # the round: unbiased) or "nearest" (at most half a step off: 3x less
    # squared error; int8 always rounds to the nearest step)
    downlink_rounding: str = field(default="stochastic", metadata=_choice("stochastic", "nearest"))
    # a lossless stage on the int8/int4/int2 row blocks: "deflate" Huffman-codes
    # each block (zlib; 4-bit codes of a trained model carry about 3.5 bits)
    downlink_entropy: str = field(default="none", metadata=_choice("none", "deflate"))
    # which item rows a message carries: "all"; "requested" (each client asks
    # for its positives, a pool its negatives come from, and padding); or
    # "bandit" (the server picks a share of rows by Thompson sampling)
    broadcast_rows: str = field(default="all", metadata=_lazy_choice("rows"))
    # what a client does to its update so its reply reveals less: "none",
    # "fill" (decoy rows), "ldp" (clip + Gaussian noise)
    defence: str = field(default="none", metadata=_lazy_choice("defence"))
    # gradual magnitude pruning of the global model (0 = off)
    model_sparsity: float = field(default=0.0, metadata=_non_negative())
    model_prune_start: int = field(default=1, metadata=_positive())
    model_prune_end: int = field(default=10, metadata=_positive())


@_section
class FederationConfig:
    """The server's side of training: rounds, sampling, aggregation, optimiser."""

    rounds: int = field(default=20, metadata=_positive())
    clients_per_round: int = field(default=50, metadata=_positive())
    server_optimizer: str = field(default="fedavg", metadata=_choice(*SERVER_OPTIMIZERS))
    server_lr: float = field(default=1.0, metadata=_positive())
    server_momentum: float = field(default=0.9, metadata=_non_negative())
    server_beta2: float = field(default=0.99, metadata=_positive())
    server_eps: float = field(default=1e-3, metadata=_positive())
    row_averaging: bool = True
    # robust by default: what one reply can do to any model entry is bounded
    # in every round (server/defences.py; the bound: docs/robustness.md).
    # Each reference a reply is judged against is a statistic of the round's
    # *other* replies, so no reply can move its own. Under secure aggregation
    # the server sees no single reply: these defences at their defaults resolve
    # to off there (`ring-clip` bounds each client), any other value is refused.
    # The aggregation: "mean" (FedAvg, per row with row-averaging), or per row
    # over the clients that touched it the coordinate-wise "median" or
    # "trimmed-mean" (trim-fraction off each end)
    aggregator: str = field(default="mean", metadata=_choice(*AGGREGATORS))
    trim_fraction: float = field(default=0.1, metadata=_non_negative())
    # adaptive zeroing: leave out a reply whose norm exceeds this many times the
    # median of the round's other replies' norms (0 = off)
    zero_factor: float = field(default=10.0, metadata=_non_negative())
    # the trust region per row: each reply's update of a row of any tensor is
    # scaled down to max(row-clip-ratio x the model row's norm, row-clip x
    # sqrt(row width)) (row-clip = 0: off). row-clip is per entry, in the
    # model's units: honest ML-100K replies (MF, local-lr 5) reach 3.5 on a
    # bias; at 4, 1 to 3 of a run's 5,000 honest replies had a row clipped, at 2
    # one in 20 (validation split)
    row_clip: float = field(default=4.0, metadata=_non_negative())
    row_clip_ratio: float = field(default=1.0, metadata=_non_negative())
    # per-reply norm clipping: a fixed bound, and a quantile of the round's
    # other replies' norms (0 = off); the smaller applies. The 0.9 quantile
    # costs the clean ML-100K run nothing and holds sign-flipped x5 replies
    # (under the zeroing factor) to 0.010 below it, 0.027 without
    clip_norm: float = field(default=0.0, metadata=_non_negative())
    clip_quantile: float = field(default=0.9, metadata=_non_negative())
    # where replies are weighed by num-examples (aggregator "mean" without
    # row-averaging), one counts at most this many times the median of the
    # round's other replies' (0 = as reported)
    weight_cap: float = field(default=10.0, metadata=_non_negative())
    federated_eval_clients: int = field(default=0, metadata=_non_negative())
    # seconds the server waits for an exchange's replies; a client that has not
    # replied by then counts as failed and the round goes on without it
    round_timeout: float = field(default=3600.0, metadata=_positive())


@_section
class EvaluationConfig:
    """Central evaluation of the global model."""

    eval_every: int = field(default=5, metadata=_positive())
    top_k: int = field(default=10, metadata=_positive())
    full_ranking: bool = False
    fold_in_epochs: int = field(default=10, metadata=_positive())
    # replies per round an honest-but-curious server's attacks are run on, and
    # clients whose replies it links over the run (server/leakage.py; 0 =
    # off; secure aggregation: on masked inputs and the round's sum): leak-*
    # columns in rounds.csv, `privacy` in summary.json
    leakage_sample: int = field(default=0, metadata=_non_negative())
    # score the model as clients decode the broadcast (the downlink's encode
    # then decode of the whole model): "on", "off", or "auto" (on when the
    # downlink is lossy). When on, hr@k is the decoded model's and hr@k-server
    # (every metric with "-server") the server's float model's
    eval_as_decoded: str = field(default="auto", metadata=_choice("auto", "on", "off"))


@_section
class SecureConfig:
    """Secure aggregation (common/secagg/): the server learns only each round's sum."""

    secure_aggregation: bool = False
    # neighbours each client masks with (0: 3 x ceil(log2(clients per round)), at
    # least 16, every other client in a smaller round): enough that a fifth of a
    # round dropping leaves each survivor `threshold` of them with overwhelming odds
    secure_degree: int = field(default=0, metadata=_non_negative())
    # shares that recover a secret, as a share of a client's neighbours: a larger
    # share resists more colluding neighbours, a smaller one more dropouts
    secure_threshold: float = field(default=0.5, metadata=_positive())
    # the ring: 2^ring-bits (12 to 56; an element travels in ring-bits bits),
    # each update entry clipped to [-ring-clip, ring-clip] (what bounds any one
    # client's push on a coordinate: see docs/privacy.md for what it holds). 3.0 chosen on
    # ML-100K's validation split (dense MF, local-lr 5): HR@10 as without
    # secure aggregation, where 1.0 lost 0.008 and 0.2 0.030
    ring_bits: int = field(default=32, metadata=_positive())
    ring_clip: float = field(default=3.0, metadata=_positive())
    # share of each item table's rows a secure round carries, drawn from (seed,
    # round) and the same for all its clients (1: every row); what a client does
    # not send waits in its error-feedback residual (with error-feedback = true)
    secure_rows: float = field(default=1.0, metadata=_positive())

    def degree(self, clients: int) -> int:
        wanted = self.secure_degree or max(16, 3 * math.ceil(math.log2(max(clients, 2))))
        return min(wanted + wanted % 2, clients - 1)

    def threshold(self, clients: int) -> int:
        degree = self.degree(clients)
        return min(degree + 1, max(2, int(self.secure_threshold * degree) + 1))


# what the server does to single replies (server/defences.py): nothing it can
# do under secure aggregation, where their defaults resolve to off
REPLY_DEFENCES = ("zero_factor", "row_clip", "clip_norm", "clip_quantile", "weight_cap")


def without_default_defences(settings: FederationConfig) -> FederationConfig:
    """`settings` with each reply defence left at its default turned off (0):
    what a securely aggregated round does (one set otherwise stays, to be refused)."""
    defaults = FederationConfig()
    off = {name: 0.0 for name in REPLY_DEFENCES if getattr(settings, name) == getattr(defaults, name)}
    return dataclasses.replace(settings, **off) if off else settings


# what secure aggregation composes with: uplinks whose every client encodes
# into the same coordinates (each has `coordinates(seed, round)`: every entry,
# the round's random positions, the round's low-rank projection), and
# broadcasts that do not ask clients for rows (the whole model, or the rows
# the server chose for the round, the same for all its clients)
SECURE_UPLINKS = ("none", "randomk", "lowrank")
SECURE_BROADCASTS = ("all", "bandit")


@_section
class CentralizedConfig:
    """The centralized reference (`prunus centralized`).

    Defaults tuned on ML-1M's validation split (see docs/results/ml1m.md).
    """

    centralized_epochs: int = field(default=20, metadata=_positive())
    centralized_lr: float = field(default=0.005, metadata=_positive())
    centralized_batch_size: int = field(default=4096, metadata=_positive())
    # L2 on the rows a batch touches, per positive (centralized averages the
    # batch loss; clients sum it, so their `l2` is on another scale)
    centralized_l2: float = field(default=0.003, metadata=_non_negative())


@_section
class RuntimeConfig:
    """Where and how the run executes: seed, resources, Ray, engine, outputs."""

    seed: int = 0
    # "flower": Flower's Simulation Engine (Ray actors); "inprocess": the same
    # rounds, clients and byte counts in one process, no Flower or Ray (tuning)
    engine: str = field(default="flower", metadata=_choice("flower", "inprocess"))
    client_num_cpus: float = field(default=1.0, metadata=_positive())
    client_num_gpus: float = field(default=0.0, metadata=_non_negative())
    ray_address: str = ""
    # a client actor whose Ray worker dies (OOM killer, crash) is restarted and
    # its message retried this many times before the reply counts as failed
    client_actor_restarts: int = field(default=3, metadata=_non_negative())
    # runs sharing one Ray cluster (a sweep's --jobs): each creates 1/N of the
    # client actors that fit, so that none waits on actors another one holds
    ray_share: int = field(default=1, metadata=_positive())
    # Flower compatibility patches (common/flower_compat.py), each switchable
    # to measure it: poll only nodes with a message; send the ClientApp to Ray
    # once per run instead of with every message; take the node-to-partition
    # map from the engine instead of asking every node; wake the in-memory
    # Grid on each reply instead of polling for replies; messages in flight per
    # client actor (1: Flower's own; more keeps an actor busy while the driver
    # handles its reply, but a message queued behind a hung client waits with it)
    fast_dispatch: bool = True
    fast_submit: bool = True
    fast_discovery: bool = True
    reply_wait: bool = True
    actor_pipeline: int = field(default=1, metadata=_positive())
    # messages sent to a client actor in one Ray call (1: one call per message,
    # Flower's own). A message batched (or pipelined) behind a hung client
    # would wait with it, so with hanging clients (fault-kind = "hang") both
    # are 1 whatever they say here
    client_batch: int = field(default=16, metadata=_positive())

    @property
    def messages_wait_for_hung_clients(self) -> bool:
        """Whether some clients hang on purpose (then nothing may queue behind one)."""
        return self.fault_rate > 0 and self.fault_kind == "hang"
    # fault injection (client/faults.py), for robustness experiments: the share
    # of sampled training clients that misbehave each round, and how
    fault_rate: float = field(default=0.0, metadata=_non_negative())
    fault_kind: str = field(default="scale", metadata=_choice("crash", "hang", "die", "garbage", "scale",
                                                               "sign-flip", "random", "huge-bias"))
    fault_scale: float = field(default=100.0, metadata=_positive())
    # write RUN_DIR/checkpoint.npz every this many rounds (0 = never); a killed
    # run continues with `prunus simulate --resume RUN_DIR`
    checkpoint_every: int = field(default=0, metadata=_non_negative())
    # under `flwr run` (Deployment Engine): continue the run in `out` from its
    # checkpoint instead of starting afresh (`prunus simulate` has --resume)
    resume: bool = False
    out: str = "runs/latest"
    # where a simulation keeps its clients' state ("": RUN_DIR/client-state):
    # a top-k client writes its error-feedback residual every round (about
    # 900 KB on ML-1M at d=64), so a RAM-backed folder such as /dev/shm
    # spares the disk (client.state_store); each run takes its own subfolder
    client_state_dir: str = ""
    # how a simulation keeps its clients' state (client.state_store): "files",
    # one file per version (what a checkpointed run needs to resume);
    # "mapped", two versions per client in shared memory, copied in and out
    # without the kernel; "auto": mapped for a run on this machine without
    # checkpoints whose state fits in memory, else files
    client_state_store: str = field(default="auto", metadata=_choice("auto", "files", "mapped"))


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "training": TrainingConfig,
    "compression": CompressionConfig,
    "federation": FederationConfig,
    "evaluation": EvaluationConfig,
    "centralized": CentralizedConfig,
    "runtime": RuntimeConfig,
    "secure": SecureConfig,
}


def method_sections() -> dict[str, type]:
    """The sections methods declare for their own settings, by name: the
    method's class's `Options` (a `section`), named for the key that picks the
    method and the method (`defence.fill`). Read from the registries when
    asked (they import this module), so a method registered later counts."""
    from prunus.common import compression

    return {name: options for registry in compression.REGISTRIES.values()
            for name, options in registry.sections().items()}  # fmt: skip


def all_sections() -> dict[str, type]:
    """Every section by name, the methods' right after `compression` (the
    order of `Config.to_dict`: a method's keys after the key that picks it)."""
    ordered: dict[str, type] = {}
    for name, cls in SECTIONS.items():
        ordered[name] = cls
        if name == "compression":
            ordered |= method_sections()
    return ordered


def owned_by(section: str) -> str:
    """What an error about a key of `section` adds: the method it belongs to
    (` (a setting of defence = "fill")`); nothing for a shared section."""
    kind, dot, name = section.partition(".")
    return f' (a setting of {kind} = "{name}")' if dot else ""


@dataclass(frozen=True)
class MethodSections:
    """The methods' own sections (`method_sections`), by name; each holds its
    defaults until a key of it is set, whichever method is picked."""

    sections: tuple[tuple[str, Any], ...] = field(
        default_factory=lambda: tuple((name, cls()) for name, cls in method_sections().items()))

    def __getitem__(self, name: str) -> Any:
        return dict(self.sections)[name]

    def get(self, name: str) -> Any | None:
        return dict(self.sections).get(name)

    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.sections)

    def replace(self, name: str, **changes: Any) -> MethodSections:
        """A copy with section `name`'s fields changed (validated; an error names the method)."""
        try:
            changed = dataclasses.replace(self[name], **changes)
        except ConfigError as err:
            raise ConfigError(f"{err}{owned_by(name)}") from None
        return MethodSections(tuple((n, changed if n == name else s) for n, s in self.sections))


@dataclass(frozen=True)
class Config:
    """Every setting of a run, by concern: each component is given its section.

    The user-facing surface stays flat: TOML files, `--set` and Flower's run
    config use dashed keys (`local-lr`), each of which belongs to exactly one
    section (`training.local_lr`).
    """

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    compression: CompressionConfig = field(default_factory=CompressionConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    centralized: CentralizedConfig = field(default_factory=CentralizedConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    secure: SecureConfig = field(default_factory=SecureConfig)
    # the methods' own sections (`method_sections`): `cfg.methods["defence.fill"]`
    methods: MethodSections = field(default_factory=MethodSections)

    def __post_init__(self) -> None:
        _check_layers(self.model.mlp_layers)
        c, d = self.compression, self.data
        if c.density > 1:
            raise ConfigError(f"density: must be in (0, 1], got {c.density!r}")
        if c.model_sparsity >= 1:
            raise ConfigError(f"model-sparsity: must be in [0, 1), got {c.model_sparsity!r}")
        if self.federation.trim_fraction >= 0.5:
            raise ConfigError(f"trim-fraction: must be in [0, 0.5), got {self.federation.trim_fraction!r}")
        for _, options in self.methods.sections:  # a method's checks against the shared sections
            if hasattr(options, "check"):
                options.check(self)
        if self.runtime.fault_rate > 1:
            raise ConfigError(f"fault-rate: must be in [0, 1], got {self.runtime.fault_rate!r}")

        if self.federation.clip_quantile > 1:
            raise ConfigError(f"clip-quantile: must be in [0, 1], got {self.federation.clip_quantile!r}")
        if c.downlink_entropy != "none" and not _sends_row_blocks(c.downlink_codec):
            raise ConfigError(f"downlink-entropy: {c.downlink_entropy!r} codes row blocks; downlink-codec "
                              f"{c.downlink_codec!r} sends none (use int8, int4 or int2, or downlink-entropy = \"none\")")
        if c.model_prune_end < c.model_prune_start:
            raise ConfigError("model-prune-end: must not come before model-prune-start")
        if d.dataset not in ("synthetic",) and not d.data_dir:
            raise ConfigError(f"data-dir: dataset {d.dataset!r} needs a data-dir")
        if d.data_dir and not Path(d.data_dir).exists():
            raise ConfigError(f"data-dir: {d.data_dir!r} does not exist")
        state_dir = self.runtime.client_state_dir
        if state_dir and not Path(state_dir).is_dir():
            raise ConfigError(f"client-state-dir: {state_dir!r} is not an existing folder")
        if self.secure.secure_aggregation:  # the reply defences' defaults resolve to off (the server sees no reply)
            object.__setattr__(self, "federation", without_default_defences(self.federation))
        self._check_secure()
        if self.runtime.client_state_store == "mapped" and self.runtime.checkpoint_every:
            raise ConfigError("client-state-store: \"mapped\" keeps two versions of a client's state, not the one "
                              "a resume from a checkpoint needs; with checkpoint-every use \"files\" (or \"auto\")")

    def _check_secure(self) -> None:
        """Secure aggregation refuses, before any work, what cannot compose with it."""
        s, c, f = self.secure, self.compression, self.federation
        if not s.secure_aggregation:
            return
        if not 12 <= s.ring_bits <= 56:
            raise ConfigError(f"ring-bits: must be from 12 to 56, got {s.ring_bits!r}")
        if s.secure_threshold > 1:
            raise ConfigError(f"secure-threshold: must be in (0, 1], got {s.secure_threshold!r}")
        if s.secure_rows > 1:
            raise ConfigError(f"secure-rows: must be in (0, 1], got {s.secure_rows!r}")
        if c.prune_method not in SECURE_UPLINKS:
            raise ConfigError(f"secure-aggregation: prune-method {c.prune_method!r} encodes each client into its "
                              f"own coordinates, which a secure sum cannot add; use one of {', '.join(SECURE_UPLINKS)}")
        basis = self.methods["prune-method.lowrank"].rank_basis
        if c.prune_method == "lowrank" and basis.startswith("client"):
            raise ConfigError(f"secure-aggregation: rank-basis \"{basis}\" gives each client its own factor, which a "
                              "secure sum cannot add; use \"random\" or \"model\"")
        if c.broadcast_rows not in SECURE_BROADCASTS:
            raise ConfigError(f"secure-aggregation: broadcast-rows {c.broadcast_rows!r} would tell the server each "
                              f"client's rows; use one of {', '.join(SECURE_BROADCASTS)}")
        if s.secure_rows < 1 and c.broadcast_rows != "all":
            raise ConfigError(f"secure-rows: broadcast-rows {c.broadcast_rows!r} already chooses the round's rows; "
                              "keep secure-rows = 1 with it")
        if c.defence != "none":
            raise ConfigError("secure-aggregation: the server sees no single reply, so defence must be \"none\"")
        if f.aggregator != "mean" or any(getattr(f, name) for name in REPLY_DEFENCES):
            raise ConfigError("secure-aggregation: the server cannot zero, clip or order single replies "
                              "(aggregator = \"mean\"; zero-factor, row-clip, clip-norm, clip-quantile and "
                              "weight-cap at their defaults, which resolve to off); ring-clip bounds each "
                              "client's push instead")

    @classmethod
    def of(cls, **changes: Any) -> Config:
        """A Config from flat field names over the defaults: `Config.of(rounds=2, dim=8)`."""
        return cls().replace(**changes)

    def section(self, name: str) -> Any:
        """A section by name: a shared one (`training`) or a method's (`defence.fill`)."""
        return getattr(self, name) if name in SECTIONS else self.methods[name]

    # --- conversions -----------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Flat dict with dashed keys (the form of TOML files and run configs)."""
        return {key: getattr(self.section(section), f.name) for key, (section, f) in _flat().items()}

    def local_lr_at(self, server_round: int) -> float:
        """The round's local learning rate (cosine from local-lr to local-lr-final)."""
        t, rounds = self.training, self.federation.rounds
        if not t.local_lr_final or rounds <= 1:
            return t.local_lr
        progress = min(max(server_round - 1, 0) / (rounds - 1), 1.0)
        return t.local_lr_final + 0.5 * (t.local_lr - t.local_lr_final) * (1 + math.cos(math.pi * progress))

    def replace(self, **changes: Any) -> Config:
        """A copy with flat fields changed (`rounds=3`, not `federation=...`)."""
        flat = _flat()
        by_section: dict[str, dict[str, Any]] = {}
        for name, value in changes.items():
            key = key_of(name)
            if key not in flat:
                raise ConfigError(f"unknown config key {key!r}")
            section, f = flat[key]
            by_section.setdefault(section, {})[f.name] = _coerce(f, value)
        methods = self.methods
        for section in [s for s in by_section if s not in SECTIONS]:
            methods = methods.replace(section, **by_section.pop(section))
        sections = {s: dataclasses.replace(getattr(self, s), **v) for s, v in by_section.items()}
        return dataclasses.replace(self, **sections, methods=methods)


def key_of(name: str) -> str:
    return name.replace("_", "-")


def _flat() -> dict[str, tuple[str, dataclasses.Field]]:
    """Every dashed key -> its section's name and field, in `to_dict`'s order."""
    return _flat_of(tuple(all_sections().items()))


@functools.lru_cache(maxsize=8)
def _flat_of(sections: tuple[tuple[str, type], ...]) -> dict[str, tuple[str, dataclasses.Field]]:
    return {key_of(f.name): (section, f) for section, cls in sections for f in fields(cls)}


def keys() -> tuple[str, ...]:
    """Every config key, in `to_dict`'s order (a method's as its registry has it now)."""
    return tuple(_flat())


def section_of(key: str) -> str:
    """The section a dashed key belongs to (`local-lr` -> `training`, `rank` -> `prune-method.lowrank`)."""
    return _flat()[key][0]


def _sends_row_blocks(downlink: str) -> bool:
    """Whether downlink method `downlink` sends per-row quantised blocks (imported lazily, as below)."""
    from prunus.common.compression import DOWNLINK
    from prunus.common.compression.broadcast import RowBlockBroadcast

    return issubclass(DOWNLINK.get(downlink), RowBlockBroadcast)


def _registry_names(registry: str) -> tuple[str, ...]:
    """Names registered for a config choice; imported here, lazily, because the
    registries' modules import this one."""
    if registry == "models":
        from prunus.common.models import MODELS

        return MODELS.names()
    if registry == "datasets":
        from prunus.common.datasets import DATASETS

        return DATASETS.names()
    from prunus.common import compression

    return compression.REGISTRIES[registry].names()


def _check_value(f: dataclasses.Field, value: Any) -> None:
    key = key_of(f.name)
    expected = _type_of(f)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
        raise ConfigError(f"{key}: expected {expected.__name__}, got {value!r}")
    meta = f.metadata
    choices = _registry_names(meta["registry"]) if "registry" in meta else meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(choices)}")
    if "min" in meta:
        too_small = value <= meta["min"] if meta["exclusive"] else value < meta["min"]
        if too_small:
            bound = "> 0" if meta["exclusive"] else ">= 0"
            raise ConfigError(f"{key}: must be {bound}, got {value!r}")


def _check_layers(spec: str) -> None:
    try:
        widths = [int(w) for w in spec.split(",")]
    except ValueError:
        raise ConfigError(f"mlp-layers: expected comma-separated integers, got {spec!r}") from None
    if len(widths) < 2 or min(widths) <= 0 or widths[0] % 2:
        raise ConfigError(f"mlp-layers: need >= 2 positive widths, the first even; got {spec!r}")


def _type_of(f: dataclasses.Field) -> type:
    name = f.type if isinstance(f.type, str) else f.type.__name__  # (a module without postponed annotations)
    return {"str": str, "int": int, "float": float, "bool": bool}[name]


def _coerce(f: dataclasses.Field, value: Any) -> Any:
    """Convert a float-typed key's int value (TOML `lr = 1`) and keep the rest."""
    if _type_of(f) is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def parse_value(key: str, text: str) -> Any:
    """Parse a `--set key=value` string by the key's declared type."""
    flat = _flat()
    if key not in flat:
        raise ConfigError(f"unknown config key {key!r}")
    section, f = flat[key]
    kind = _type_of(f)
    try:
        if kind is bool:
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return text.lower() in ("true", "1", "yes")
        return kind(text)
    except ValueError:
        raise ConfigError(f"{key}: expected {kind.__name__}, got {text!r}{owned_by(section)}") from None


def from_mapping(values: dict[str, Any], base: Config | None = None, source: str = "config") -> Config:
    """Build a Config from dashed keys over `base`; unknown keys are errors."""
    flat = _flat()
    for key in values:
        if key not in flat:
            raise ConfigError(f"unknown config key {key!r} in {source}")
    return (base or Config()).replace(**values)


def load(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a TOML file (flat keys) and apply `key=value` overrides, in order.

    A file may start from another with `base = "other.toml"` (relative to
    the file): its keys are read first, then this file's replace them.
    """
    values = _read_toml(Path(path)) if path is not None else {}
    return from_mapping(values | parse_overrides(overrides or []), source=str(path) if path else "overrides")


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """`key=value` items (the CLI's --set) as typed values, in order."""
    values: dict[str, Any] = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key = key.strip()
        values[key] = parse_value(key, text.strip())
    return values


def read_toml_file(path: Path, kind: str = "config file") -> dict[str, Any]:
    """A TOML file's tables; a missing or unparsable file is a ConfigError naming it."""
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{kind} {str(path)!r} not found") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{kind} {str(path)!r}: {err}") from None


def _read_toml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    if path.resolve() in seen:
        raise ConfigError(f"config file {str(path)!r}: 'base' chain loops back to itself")
    values = read_toml_file(path)
    for key, value in values.items():
        if isinstance(value, dict):
            raise ConfigError(f"{key}: tables are not supported; use flat keys in {path}")
    base = values.pop("base", None)
    if base is None:
        return values
    if not isinstance(base, str):
        raise ConfigError(f"base: expected a file name in {path}, got {base!r}")
    return {**_read_toml(path.parent / base, (*seen, path.resolve())), **values}


def from_run_config(run_config: dict[str, Any]) -> Config:
    """Config from Flower's run config (pyproject defaults + `--run-config`)."""
    return from_mapping(dict(run_config), source="run config")
