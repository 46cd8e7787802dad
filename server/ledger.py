"""The communication ledger: exact bytes of what travels, per round and direction.

Bytes are counted from the serialised payloads (`common.params.wire_bytes`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field, fields


@dataclass
class RoundLog:
    """One round's line in `rounds.csv`."""

    round: int
    clients: int = 0
    replies: int = 0
    failures: int = 0
    rejected: int = 0
    uplink_bytes: int = 0
    downlink_bytes: int = 0
    dense_uplink_bytes: int = 0
    dense_downlink_bytes: int = 0
    request_bytes: int = 0  # row queries and the clients' row requests (partial broadcasts)
    protocol_bytes: int = 0  # secure aggregation's exchanges, both directions (keys, shares, unmasking)
    uplink_nnz: int = 0
    downlink_nnz: int = 0
    zeroed: int = 0  # replies left out: norm above zero-factor x the median of the other replies'
    row_clipped: int = 0  # replies with a row scaled down to its trust region (row-clip)
    clipped: int = 0  # replies scaled down to their norm bound (clip-norm, clip-quantile)
    weight_capped: int = 0  # replies whose num-examples counted as weight-cap x the others' median
    refused: int = 0  # 1 when the round's step was refused (model kept)
    train_loss: float = float("nan")
    seconds: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)

    def row(self) -> dict[str, float | int]:
        values = asdict(self)
        return {**{k: v for k, v in values.items() if k != "metrics"}, **self.metrics}


@dataclass
class ReplyLog:
    """One client reply in `clients.csv`: who computed it, where, and what it cost.

    `ray_node` is the Ray node that ran the client actor (empty outside Ray), so a
    run on a cluster shows how its work spread across machines; `cuda_device`
    and `cuda_peak_bytes` say where a client on CUDA computed (its claim: the
    device and the most memory the message's work held there; empty and 0 on
    the CPU), so a GPU run shows that its tensors were on the device.
    """

    round: int
    kind: str  # "train", "evaluate" or "rows" (a row request)
    partition: int
    node: int
    host: str
    ray_node: str
    status: str  # "accepted", "rejected" or "failed"
    uplink_bytes: int = 0
    uplink_nnz: int = 0
    # what the server's defences did to an accepted reply ("zeroed", or what
    # scaled it down: "row-clipped", "clipped", "weight-capped", joined by "+")
    defence: str = ""
    reason: str = ""  # why: a defence's figures, a rejection's or a failure's first line
    cuda_device: str = ""
    cuda_peak_bytes: int = 0


REPLY_COLUMNS = [f.name for f in fields(ReplyLog)]
MAX_CELL = 128  # a host name or Ray node id is far shorter
MAX_REASON = 240  # the first line of an error, or a defence's figures


def safe_cell(value: object, limit: int = MAX_CELL) -> str:
    """What a client says of itself, fit for clients.csv: printable, at most
    `limit` characters, and never read as a formula by a spreadsheet."""
    text = "".join(c for c in str(value)[:limit] if c.isprintable())
    return "'" + text if text.startswith(("=", "+", "-", "@")) else text


class Ledger:
    """Accumulates the per-round logs and the per-reply logs of a run."""

    def __init__(self) -> None:
        self.rounds: dict[int, RoundLog] = {}
        self.replies: list[ReplyLog] = []

    def round(self, server_round: int) -> RoundLog:
        return self.rounds.setdefault(server_round, RoundLog(server_round))

    def total(self, column: str) -> int:
        return sum(getattr(r, column) for r in self.rounds.values())

    def comm_summary(self) -> dict[str, float]:
        """Totals and compression ratios for summary.json."""
        up, down = self.total("uplink_bytes"), self.total("downlink_bytes")
        dense_up, dense_down = self.total("dense_uplink_bytes"), self.total("dense_downlink_bytes")
        requests, protocol = self.total("request_bytes"), self.total("protocol_bytes")
        total = up + down + requests + protocol
        return {
            "total_bytes": total,
            "dense_total_bytes": dense_up + dense_down,
            "total_ratio": (dense_up + dense_down) / total if total else float("nan"),
            "request_bytes": requests,
            "protocol_bytes": protocol,
            "uplink_bytes": up,
            "downlink_bytes": down,
            "dense_uplink_bytes": dense_up,
            "dense_downlink_bytes": dense_down,
            "uplink_ratio": dense_up / up if up else float("nan"),
            "downlink_ratio": dense_down / down if down else float("nan"),
            "uplink_nnz": self.total("uplink_nnz"),
            "downlink_nnz": self.total("downlink_nnz"),
        }

    def privacy_summary(self) -> dict[str, float]:
        """Each leakage figure (`leak-*`) averaged over the rounds that measured it."""
        values: dict[str, list[float]] = {}
        for entry in self.rounds.values():
            for key, value in entry.metrics.items():
                if key.startswith("leak-"):
                    values.setdefault(key, []).append(value)
        return {key: sum(v) / len(v) for key, v in sorted(values.items())}

    def rows(self) -> list[dict[str, float | int]]:
        return [self.rounds[k].row() for k in sorted(self.rounds)]

    def reply_rows(self) -> list[dict[str, str | int]]:
        """Replies in (round, kind, partition) order, whatever order they arrived in."""
        ordered = sorted(self.replies, key=lambda r: (r.round, r.kind, r.partition, r.node))
        return [asdict(r) for r in ordered]

    def placement(self) -> dict[str, dict[str, int]]:
        """Replies computed per Ray node and per host (for summary.json)."""
        return {
            "ray_nodes": dict(sorted(Counter(r.ray_node for r in self.replies if r.ray_node).items())),
            "hosts": dict(sorted(Counter(r.host for r in self.replies if r.host).items())),
        }
