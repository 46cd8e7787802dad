"""Use a trained model: `prunus recommend` and `prunus evaluate` on a run folder.

A run folder holds the final global model (`model.npz`, shared parameters
only) and `summary.json`, whose "config" is the run's resolved config. The
model has no user vectors, so a user's vector is folded in from items the
user names, exactly as central evaluation folds in every user.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from prunus.common.config import Config, ConfigError, from_mapping
from prunus.common.data import SplitData
from prunus.common.datasets import item_titles, load_split, raw_ids
from prunus.common.models import Recommender, build_model, model_spec
from prunus.common.params import Params
from prunus.common.training import client_settings, fold_in, seeded_generator
from prunus.server.evaluation import EVAL_STREAM, CentralEvaluator
from prunus.server.model_store import MODEL_FILE, ModelFileError, load_model

SUMMARY_FILE = "summary.json"
SHOWN_GIVEN = 10  # given items listed before "... and N more"


class RunError(Exception):
    """A run folder or a request that cannot be served; the message says why."""


@dataclass(frozen=True)
class Run:
    """A finished run: its folder, summary, config, data split and model."""

    path: Path
    summary: dict
    cfg: Config
    split: SplitData
    params: Params


def open_run(path: Path) -> Run:
    """Read a run folder and check that its model fits the data its config names."""
    summary_file, model_file = path / SUMMARY_FILE, path / MODEL_FILE
    if not path.is_dir():
        raise RunError(f"{path}: no such run folder")
    if not summary_file.is_file():
        raise RunError(f"{path}: no {SUMMARY_FILE}; is it the --out folder of a finished run?")
    if not model_file.is_file():
        raise RunError(f"{path}: no {MODEL_FILE} (federated runs save one; centralized runs and older runs do not)")
    try:
        summary = json.loads(summary_file.read_text())
        values = summary["config"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise RunError(f"{summary_file}: not a run summary with a 'config' ({err})") from None
    try:
        cfg = from_mapping(values, source=str(summary_file))
    except ConfigError as err:
        if "data-dir" in str(err) and not Path(str(values.get("data-dir", ""))).is_absolute():
            raise ConfigError(f"{err} in {Path.cwd()}; run from the folder the run was started in") from None
        raise
    split = load_split(cfg)
    try:
        params = load_model(model_file)
    except ModelFileError as err:
        raise RunError(str(err)) from None
    check_model(cfg, split, params, model_file)
    return Run(path, summary, cfg, split, params)


def check_model(cfg: Config, split: SplitData, params: Params, where: Path) -> None:
    """RunError unless `params` are the shared tensors, with the shapes, that
    the config's model on the config's data has."""
    expected = model_spec(cfg.model, split.n_items).shapes
    found = {name: tuple(value.shape) for name, value in params.items()}
    if found == expected:
        return
    wrong = [f"{n} {found.get(n, 'missing')} (expected {expected.get(n, 'none')})"
             for n in sorted(expected.keys() | found.keys()) if found.get(n) != expected.get(n)]  # fmt: skip
    raise RunError(
        f"{where}: the model does not match the data of its config ({cfg.data.dataset}, "
        f"{split.n_items} items, {cfg.model.model} dim {cfg.model.dim}): " + "; ".join(wrong)
    )


def _empty_model(cfg: Config, n_items: int) -> Recommender:
    """The run's model for one user, initialised as the run initialised it."""
    m = cfg.model
    return build_model(m.model, 1, n_items, m.dim, m.mlp_widths, seed=cfg.runtime.seed)


# --- evaluate -----------------------------------------------------------------


def evaluate_run(run: Run) -> dict[str, float]:
    """Central evaluation of the saved model on the run's split, as the server ran
    it (as its last round's broadcast decodes, where the run evaluated so)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return CentralEvaluator(run.cfg, run.split, device)(run.params, run.cfg.federation.rounds)


def format_evaluation(run: Run, metrics: dict[str, float]) -> str:
    """Each metric next to the run's final figure in summary.json."""
    saved = run.summary.get("metrics", {})
    lines = [f"{run.path}: {run.cfg.model.model} on {run.cfg.data.dataset} ({run.cfg.data.eval_split} split), "
             f"{int(metrics.get('eval-users', 0))} users evaluated"]  # fmt: skip
    for key, value in metrics.items():
        if key == "eval-users":
            continue
        if key not in saved:
            note = "not in summary.json"
        elif value == saved[key]:
            note = "= summary.json"
        else:
            note = f"summary.json has {saved[key]:.6f} (differs by {value - saved[key]:+.2e})"
        lines.append(f"{key:<14} {value:.6f}   {note}")
    return "\n".join(lines)


# --- recommend ----------------------------------------------------------------


def fold_in_user(run: Run, items: np.ndarray) -> Recommender:
    """A model holding one user vector folded in from `items` (item indices),
    with the run's settings and seed, as `CentralEvaluator` folds in users."""
    cfg = run.cfg
    model = _empty_model(cfg, run.split.n_items)
    model.load_shared({name: torch.as_tensor(value) for name, value in run.params.items()})
    generator = seeded_generator(cfg.runtime.seed, EVAL_STREAM)
    users = torch.zeros(len(items), dtype=torch.int64)
    fold_in(model, users, torch.as_tensor(items, dtype=torch.int64), client_settings(cfg),
            cfg.evaluation.fold_in_epochs, cfg.training.user_lr, generator)  # fmt: skip
    return model


def top_items(model: Recommender, exclude: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The `n` best-scored item indices for the model's user 0 (ties: lower index
    first), `exclude` left out; and their scores."""
    model.eval()
    with torch.no_grad():
        items = torch.arange(model.n_items)
        scores = model(torch.zeros_like(items), items).numpy().astype(np.float64)
    scores[exclude] = -np.inf
    order = np.argsort(-scores, kind="stable")[: min(n, model.n_items - len(exclude))]
    return order, scores[order]


def check_request(items: str | None, user: str | None) -> None:
    """RunError unless exactly one of --items and --user is given."""
    if (items is None) == (user is None):
        raise RunError("give either --items ID,ID,... or --user ID (one of them, not both)")


def parse_items(text: str, ids: np.ndarray, kind: str = "item ids") -> np.ndarray:
    """Item indices of a comma-separated list of the data set's own item ids, in
    the list's order (repeats dropped)."""
    index = {_key(raw): i for i, raw in enumerate(ids)}
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise RunError(f"--items: expected a comma-separated list of item ids, got {text!r}")
    unknown = [name for name in names if _key(name) not in index]
    if unknown:
        raise RunError(f"unknown item id(s) {', '.join(unknown)}: not among the {len(ids)} items "
                       f"of the run's data ({kind})")  # fmt: skip
    return np.array(list(dict.fromkeys(index[_key(name)] for name in names)), dtype=np.int64)


def user_index(user: str, ids: np.ndarray) -> int:
    """Index of a user given by the data set's own id."""
    index = {_key(raw): u for u, raw in enumerate(ids)}
    if _key(user) not in index:
        raise RunError(f"unknown user id {user}: not among the {len(ids)} users of the run's data")
    return index[_key(user)]


def _key(raw: object) -> str:
    """One spelling per id: integers without sign or leading zeros, else the text."""
    text = str(raw).strip()
    return str(int(text)) if text.lstrip("-").isdigit() else text


def recommend(run: Run, items: str | None, user: str | None, n: int, titles_file: str | None = None) -> str:
    """The printed answer of `prunus recommend`: the given items, then the top `n` others."""
    check_request(items, user)
    user_ids, item_ids = raw_ids(run.cfg)
    kind = _id_kind(run.cfg, item_ids)
    if user is not None:
        u = user_index(user, user_ids)
        given, held_out = run.split.user_items(u), int(run.split.test_items[u])
        if not len(given):
            raise RunError(f"user {user} has no training items")
    else:
        given, held_out = parse_items(items, item_ids, kind), -1
    chosen, scores = top_items(fold_in_user(run, np.sort(given)), given, n)  # the order given does not matter
    source = f"user {user}'s {len(given)} training items" if user is not None else f"{len(given)} items"
    header = f"{run.path}: {run.cfg.model.model} on {run.cfg.data.dataset}; item ids: {kind}"
    titles = item_titles(run.cfg, titles_file)
    return "\n".join([header, *_table(source, given, chosen, scores, held_out, item_ids, titles)])


def _table(source: str, given: np.ndarray, chosen: np.ndarray, scores: np.ndarray, held_out: int,
           item_ids: np.ndarray, titles: dict[str, str]) -> list[str]:  # fmt: skip
    """The given items (the first few), then rank, score, item id and title of each recommendation."""

    def label(i: int) -> str:
        return f"{str(item_ids[i]):>8}  {titles.get(_key(item_ids[i]), '')}".rstrip()

    more = [f"... and {len(given) - SHOWN_GIVEN} more"] if len(given) > SHOWN_GIVEN else []
    if titles:
        lines = [f"user vector folded in from {source}:", *(f"{'':15}{label(i)}" for i in given[:SHOWN_GIVEN]),
                 *(f"{'':15}{line}" for line in more)]  # fmt: skip
    else:
        shown = [str(item_ids[i]) for i in given[:SHOWN_GIVEN]] + more
        lines = [f"user vector folded in from {source}: " + ", ".join(shown)]
    lines.append(f"top {len(chosen)} (given items excluded):")
    lines.append(f"{'rank':>4}  {'score':>7}  {'item':>8}" + ("  title" if titles else ""))
    for rank, (i, score) in enumerate(zip(chosen, scores), start=1):
        mark = "  <- the user's held-out test item" if i == held_out else ""
        lines.append(f"{rank:>4}  {score:7.3f}  {label(i)}{mark}")
    return lines


def _id_kind(cfg: Config, item_ids: np.ndarray) -> str:
    """What the item ids the user gives and sees are."""
    if cfg.data.dataset in ("ml-100k", "ml-1m"):
        return "MovieLens movie ids"
    if cfg.data.dataset == "ncf-ml-1m":
        indices = np.array_equal(item_ids, np.arange(len(item_ids)))
        return "NCF item ids, no item_map.tsv" if indices else "MovieLens MovieIDs, via item_map.tsv"
    return "the table's item values" if cfg.data.dataset == "csv" else "item indices"
