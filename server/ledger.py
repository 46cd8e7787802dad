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

    @property
    def uplink_bytes(self) -> int:
        return sum(r.uplink_bytes for r in self.rounds.values())

    @property
    def downlink_bytes(self) -> int:
        return sum(r.downlink_bytes for r in self.rounds.values())

    def rows(self) -> list[dict[str, float | int]]:
        return [self.rounds[k].row() for k in sorted(self.rounds)]
