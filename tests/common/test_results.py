"""The final table and the progress line say what the server's defences did."""

from prunus.common.results import format_table
from prunus.server.ledger import RoundLog
from prunus.server.progress import RoundProgress


def test_the_final_table_names_zeroed_clipped_and_refused_where_there_were_any():
    summary = {"kind": "federated", "rounds": 3, "metrics": {"hr@10": 0.5}, "comm": {}, "failures": 0,
               "rejected": 0, "zeroed": 4, "row-clipped": 2, "clipped": 0, "weight-capped": 0, "refused": 1,
               "wall_seconds": 1.0}
    table = format_table(summary)
    rows = {name.strip(): value.strip() for name, value in
            (line.rsplit("  ", 1) for line in table.splitlines() if "  " in line)}
    assert rows["client replies zeroed"] == "4" and rows["rounds whose step was refused"] == "1"
    assert rows["client replies row-clipped"] == "2"
    assert "client replies clipped" not in table and "weight-capped" not in table


def test_the_progress_line_shows_the_defences_of_the_round(capsys, monkeypatch):
    monkeypatch.setattr("sys.stdout.isatty", lambda: False)
    progress = RoundProgress(2)
    progress.update(RoundLog(1, clients=10, replies=10, zeroed=2, clipped=3, row_clipped=4, weight_capped=1))
    progress.close()
    line = capsys.readouterr().out
    assert "2 zeroed" in line and "3 clipped" in line and "4 row-clipped" in line and "1 weight-capped" in line
    assert "rejected" not in line


def test_the_live_progress_line_shows_them_too(capsys):
    progress = RoundProgress(2, live=True)
    progress.update(RoundLog(1, clients=10, replies=10, zeroed=2, row_clipped=1))
    progress.close()
    line = capsys.readouterr().out
    assert "2 zeroed" in line and "1 row-clipped" in line
