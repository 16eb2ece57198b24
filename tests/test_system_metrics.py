"""MLflow's system metrics in every run: CPU and memory series sampled beside training, none
when switched off, and a resumed run's series going on from where it stopped."""

from __future__ import annotations

from mlflow import MlflowClient

from denselab.train import train

CPU = "system/cpu_utilization_percentage"
MEMORY = "system/system_memory_usage_megabytes"


def settings(store_uri: str) -> list[str]:
    return [
        "data=digits",
        f"tracking.uri={store_uri}",
        "trainer.enable_progress_bar=false",
        "callbacks=none",
        "tracking.log_model=false",
        "tracking.log_checkpoint=false",
        "tracking.system_metrics_interval=0.2",
    ]


def history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_a_run_records_cpu_and_memory_and_a_resumed_run_continues_the_series(
    compose_cfg, tmp_path, store_uri
):
    first = train(compose_cfg([*settings(store_uri), "trainer.max_epochs=2"]), tmp_path / "a")
    client = MlflowClient(store_uri)
    cpu, memory = history(client, first.run_id, CPU), history(client, first.run_id, MEMORY)
    assert len(cpu) >= 2 and [s for s, _ in cpu] == list(range(len(cpu)))
    assert all(0 <= v <= 100 for _, v in cpu)
    assert memory and all(v > 0 for _, v in memory)  # megabytes in use, never none

    client.set_terminated(first.run_id, "KILLED")  # as a stopped run is left
    overrides = [f"resume={first.run_id}", f"tracking.uri={store_uri}", "trainer.max_epochs=3"]
    train(compose_cfg([*settings(store_uri), *overrides]), tmp_path / "b", overrides)
    after = history(client, first.run_id, CPU)
    assert after[: len(cpu)] == cpu  # the first process's points, kept
    assert [s for s, _ in after] == list(range(len(after))) and len(after) > len(cpu)


def test_system_metrics_false_records_none(compose_cfg, tmp_path, store_uri):
    off = ["trainer.max_epochs=1", "tracking.system_metrics=false"]
    cfg = compose_cfg([*settings(store_uri), *off])
    result = train(cfg, tmp_path / "out")
    metrics = MlflowClient(store_uri).get_run(result.run_id).data.metrics
    assert "val/acc" in metrics and not any(key.startswith("system/") for key in metrics)
