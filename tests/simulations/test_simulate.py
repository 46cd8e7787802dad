"""Where a simulation's Ray comes from: a cluster named by config or RAY_ADDRESS, else a fresh local one."""

from prunus.common.config import Config, load
from prunus.simulations.simulate import backend_config, run_simulate


def test_without_a_cluster_ray_starts_a_fresh_local_one(monkeypatch):
    """Never `ray.init()` bare: it would join a cluster left recorded in /tmp/ray."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    config = backend_config(Config.of(client_num_cpus=2, client_num_gpus=0.25))
    assert config["init_args"] == {"address": "local", "log_to_driver": False}
    assert config["client_resources"] == {"num_cpus": 2, "num_gpus": 0.25, "max_restarts": 3, "max_task_retries": 3}


def test_a_dead_client_actor_is_restarted_and_its_message_retried_as_configured():
    resources = backend_config(Config.of(client_actor_restarts=0))["client_resources"]
    assert resources["max_restarts"] == 0 and resources["max_task_retries"] == 0


def test_the_cluster_comes_from_the_config_or_from_ray_address(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    assert backend_config(Config())["init_args"] == {"address": "10.0.0.5:6379", "log_to_driver": False}
    assert backend_config(Config.of(ray_address="auto"), verbose=True)["init_args"] == {"address": "auto", "log_to_driver": True}


def test_a_run_into_a_used_folder_leaves_none_of_the_old_runs_files(tmp_path):
    for name in ("clients.csv", "model.npz", "curve.png", "summary.json"):
        (tmp_path / name).write_text("an earlier run's")
    (tmp_path / "notes.txt").write_text("the user's")
    settings = ["synthetic-users=30", "synthetic-items=40", "eval-negatives=9", "dim=4", "rounds=1",
                "clients-per-round=5", "engine=inprocess", f"out={tmp_path}"]  # fmt: skip
    run_simulate(load(None, settings))
    for name in ("clients.csv", "model.npz", "curve.png", "summary.json"):
        assert (tmp_path / name).read_bytes() != b"an earlier run's"
    assert (tmp_path / "notes.txt").read_text() == "the user's"
