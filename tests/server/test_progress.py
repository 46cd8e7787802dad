"""The per-round console line (`server.progress.RoundProgress`, not live)."""

from prunus.server.ledger import RoundLog
from prunus.server.progress import RoundProgress


def _line(capsys, **fields) -> str:
    progress = RoundProgress(rounds=3, live=False)
    entry = RoundLog(round=1)
    for name, value in fields.items():
        setattr(entry, name, value)
    progress.update(entry)
    return capsys.readouterr().out


def test_a_plain_round_shows_its_loss_and_no_protocol(capsys):
    line = _line(capsys, clients=4, replies=4, uplink_bytes=2_000_000, downlink_bytes=1_000_000, train_loss=0.25)
    assert "loss 0.2500" in line and "total     3.00 MB" in line and "protocol" not in line


def test_a_secure_round_shows_its_protocol_bytes_and_no_loss_it_never_learned(capsys):
    line = _line(capsys, clients=4, replies=4, uplink_bytes=1_000_000, protocol_bytes=500_000)
    assert "protocol   0.50" in line and "total     1.50 MB" in line
    assert "loss   n/a" in line and "nan" not in line


def test_defended_replies_are_on_the_line(capsys):
    line = _line(capsys, clients=5, replies=4, failures=1, zeroed=2, clipped=1)
    assert "1 failed" in line and "2 zeroed" in line and "1 clipped" in line
