"""The server's defences against single replies, in order, and what each did to which reply.

A round's accepted replies pass, before they are aggregated (`server.robust`
has each part):

1. zeroing (`zero-factor`): a reply whose norm is far above the median of
   the other replies' norms is left out. It judges the replies as they were
   sent: clipped first, a x1e6 reply would look like an honest one and stay;
2. the trust region per row (`row-clip`, `row-clip-ratio`): each reply's
   update of a row is scaled down to the room the model's row gives it;
3. norm clipping (`clip-norm`, `clip-quantile`);
4. capped weights (`weight-cap`), where the aggregator weighs replies by
   num-examples (`aggregator = "mean"` without `row-averaging`).

What they bound together is stated in docs/robustness.md. Each defended reply
gets a `Note` (clients.csv's `defence` and `reason` columns), each round the
counts (rounds.csv, the progress line, the final table).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prunus.common.config import FederationConfig
from prunus.common.params import Params
from prunus.common.update import Update
from prunus.server.robust import (
    capped_weights,
    clip_bounds,
    clip_rows,
    others_quantile,
    outliers,
    row_bounds,
    scaled,
    update_norm,
)


@dataclass(frozen=True)
class Note:
    """What the defences did to one reply, and why."""

    defence: str  # "zeroed", or what scaled it down: "row-clipped", "clipped", "weight-capped", joined by "+"
    reason: str


@dataclass
class Defended:
    """A round's replies after the defences: those kept (indices into the
    round's replies), their updates and weights as aggregated, and a note for
    each reply a defence touched."""

    kept: list[int]
    updates: list[Update]
    weights: list[float]
    notes: dict[int, Note] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # replies per defence: zeroed, row_clipped, ...


def defend(updates: list[Update], weights: list[float], params: Params, settings: FederationConfig) -> Defended:
    """The round's replies (`updates`, with their num-examples `weights`)
    through the defences `settings` turn on; `params` is the model they update."""
    f = settings
    done: dict[int, list[tuple[str, str]]] = {}  # reply index -> (defence, why), in order

    def note(i: int, defence: str, why: str) -> None:
        done.setdefault(i, []).append((defence, why))

    norms = [update_norm(u) for u in updates]
    zeroed = set(outliers(norms, f.zero_factor))
    kept = [i for i in range(len(updates)) if i not in zeroed]
    reference = others_quantile(norms, 0.5)
    for i in sorted(zeroed):
        note(i, "zeroed", f"norm {norms[i]:.3g} > {f.zero_factor:g} x {reference[i]:.3g}, the median of the round's "
                          "other replies' norms")
    updates, weights = [updates[i] for i in kept], [weights[i] for i in kept]
    counts = {"zeroed": len(zeroed), "row_clipped": 0, "clipped": 0, "weight_capped": 0}

    if f.row_clip > 0:
        bounds = row_bounds(params, f.row_clip_ratio, f.row_clip)
        for k, i in enumerate(kept):
            updates[k], rows, worst = clip_rows(updates[k], bounds)
            if rows:
                counts["row_clipped"] += 1
                note(i, "row-clipped", f"{rows} row{'s' * (rows > 1)} above the trust region (up to {worst:.3g} x "
                                       "the bound), scaled down to it")
    if f.clip_norm > 0 or f.clip_quantile > 0:
        now = [update_norm(u) for u in updates]
        for k, (norm, bound) in enumerate(zip(now, clip_bounds(now, f.clip_norm, f.clip_quantile))):
            if norm > bound:
                updates[k] = scaled(updates[k], float(bound) / norm)
                counts["clipped"] += 1
                note(kept[k], "clipped", f"norm {norm:.3g} scaled down to {bound:.3g}")
    if f.weight_cap > 0 and f.aggregator == "mean" and not f.row_averaging:  # where num-examples weighs
        capped = capped_weights(weights, f.weight_cap)
        for k, (w, c) in enumerate(zip(weights, capped)):
            if c < w:
                counts["weight_capped"] += 1
                note(kept[k], "weight-capped", f"num-examples {w:g} counted as {c:g} ({f.weight_cap:g} x the other "
                                               "replies' median)")
        weights = capped
    notes = {i: Note("+".join(d for d, _ in acts), "; ".join(r for _, r in acts)) for i, acts in done.items()}
    return Defended(kept, updates, weights, notes, counts)

