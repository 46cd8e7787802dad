"""The parts of docker/deploy_test.py that need no container engine: the run
config it hands `flwr run`, and the comparison of two runs' outputs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from flwr.common.config import parse_config_args
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "docker"))

from deploy.federation import run_config_text  # noqa: E402
from deploy.runs import COUNTS, app_defaults, compare, last_round, rounds_logged  # noqa: E402

REPO = Path(__file__).resolve().parents[2]

keys = st.from_regex(r"[a-z][a-z0-9-]{0,12}", fullmatch=True)
values = st.one_of(
    st.booleans(), st.integers(-10**6, 10**6), st.floats(-1e6, 1e6, allow_nan=False).filter(lambda x: x != int(x)),
    st.text(st.characters(codec="ascii", exclude_characters='"\\', min_codepoint=32), max_size=20),
)  # fmt: skip


@settings(deadline=None)
@given(st.dictionaries(keys, values, min_size=1, max_size=6))
def test_flower_reads_back_the_run_config_it_is_given(config):
    assert parse_config_args([run_config_text(config)]) == config


def test_the_deployment_test_runs_valid_configs(tmp_path):
    """What deploy_test.py hands `flwr run` (over the app's defaults) and `prunus simulate`
    (a data-dir that exists here in place of the containers' /data)."""
    from deploy_test import FEDERATION, RAY

    from prunus.common.config import from_run_config, load

    cfg = from_run_config(app_defaults(REPO / "pyproject.toml") | FEDERATION | {"data-dir": str(tmp_path)})
    assert (cfg.compression.prune_method, cfg.compression.value_codec, cfg.compression.broadcast_rows) == (
        "topk", "int8", "requested") and cfg.compression.error_feedback
    assert load(None, [*RAY, f"data-dir={tmp_path}"]).runtime.checkpoint_every == 1


def _run(folder: Path, uplink: list[int], hr: list[float], model: float) -> Path:
    folder.mkdir()
    n = len(uplink)
    table = {c: [3] * n for c in COUNTS} | {"round": list(range(n)), "uplink_bytes": uplink, "hr@10": hr}
    pd.DataFrame(table).to_csv(folder / "rounds.csv", index=False)
    np.savez(folder / "model.npz", w=np.full(3, model))
    comm = {"uplink_bytes": sum(uplink)}
    (folder / "summary.json").write_text(json.dumps({"metrics": {"hr@10": hr[-1]}, "comm": comm}))
    return folder


def test_runs_that_agree_from_round_one_compare_equal_and_discovery_is_apart(tmp_path):
    deployed = _run(tmp_path / "a", [70, 10, 11], [0.1, 0.2, 0.3], 1.0)
    reference = _run(tmp_path / "b", [0, 10, 11], [0.1, 0.2, 0.3], 1.0)
    same = compare(deployed, reference)
    assert same["same_model"] and not same["differ"] and same["same_metrics"]
    assert same["discovery_bytes"] == 70 + 3 + 3  # round 0: uplink, downlink and request bytes
    assert same["per_round"]["uplink_bytes"] == [10, 11]


def test_a_difference_in_bytes_metrics_or_model_is_named(tmp_path):
    reference = _run(tmp_path / "ref", [0, 10, 11], [0.1, 0.2, 0.3], 1.0)
    same = compare(_run(tmp_path / "bytes", [0, 10, 12], [0.1, 0.2, 0.3], 1.0), reference)
    assert same["differ"] == ["uplink_bytes"] and same["same_model"]
    same = compare(_run(tmp_path / "metric", [0, 10, 11], [0.1, 0.2, 0.31], 2.0), reference)
    assert same["differ"] == ["hr@10"] and not same["same_model"] and not same["same_metrics"]
    assert compare(_run(tmp_path / "short", [0, 10], [0.1, 0.2], 1.0), reference)["differ"] == ["rounds"]


@pytest.mark.parametrize("text, expected", [(None, -1), ("", -1), ("round,x\n", -1), ("round,x\n0,1\n2,1\n", 2)])
def test_last_round_reads_a_rounds_file_in_any_state(tmp_path, text, expected):
    if text is not None:
        (tmp_path / "rounds.csv").write_text(text)
    assert last_round(tmp_path) == expected


def test_the_rounds_a_resumed_run_ran_are_read_from_its_progress_lines(capsys):
    """What a driver prints after resuming from round 1's checkpoint (RoundProgress's
    plain lines, among Ray's warnings and the final table): rounds 2..4, no other."""
    from prunus.server.ledger import RoundLog
    from prunus.server.progress import RoundProgress

    print("2026-12-06 19:25:35,862\tWARNING services.py:2213 -- the object store is using /tmp/ray")
    progress = RoundProgress(rounds=4, live=False)
    for r in (2, 3, 4):
        progress.update(RoundLog(round=r, clients=943, replies=943 - r, failures=r))
    print("rounds                       4\nclient replies failed        9")
    assert rounds_logged(capsys.readouterr().out) == [2, 3, 4]
