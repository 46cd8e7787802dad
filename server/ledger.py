"""The communication ledger: exact bytes of what travels, per round and direction.

Bytes are counted from the serialised payloads (`common.params.wire_bytes`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field



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
    uplink_nnz: int = 0
    downlink_nnz: int = 0
    train_loss: float = float("nan")
    seconds: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)

    def row(self) -> dict[str, float | int]:
        values = asdict(self)
        return {**{k: v for k, v in values.items() if k != "metrics"}, **self.metrics}


class Ledger:
    """Accumulates the per-round logs of a run."""

    def __init__(self) -> None:
        self.rounds: dict[int, RoundLog] = {}

    def round(self, server_round: int) -> RoundLog:
        return self.rounds.setdefault(server_round, RoundLog(server_round))

    def total(self, column: str) -> int:
        return sum(getattr(r, column) for r in self.rounds.values())

    def comm_summary(self) -> dict[str, float]:
        """Totals and compression ratios for summary.json."""
        up, down = self.total("uplink_bytes"), self.total("downlink_bytes")
        dense_up, dense_down = self.total("dense_uplink_bytes"), self.total("dense_downlink_bytes")
        return {
            "uplink_bytes": up,
            "downlink_bytes": down,
            "dense_uplink_bytes": dense_up,
            "dense_downlink_bytes": dense_down,
            "uplink_ratio": dense_up / up if up else float("nan"),
            "downlink_ratio": dense_down / down if down else float("nan"),
            "uplink_nnz": self.total("uplink_nnz"),
            "downlink_nnz": self.total("downlink_nnz"),
        }

    def rows(self) -> list[dict[str, float | int]]:
        return [self.rounds[k].row() for k in sorted(self.rounds)]
