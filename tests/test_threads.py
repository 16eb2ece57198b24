"""The threads setting: typed, checked, and by default the faster count for the network."""

from __future__ import annotations

import pytest
import torch
from hydra.errors import ConfigCompositionException

from denselab.config import validate_config
from denselab.errors import ConfigError
from denselab.train import train
from denselab.training.threads import (
    MANY_THREADS_FROM_MACS,
    apply_threads,
    auto_threads,
    cpu_threads,
    resolve_threads,
    step_macs,
)

COURSE = [784, 128, 10]


@pytest.fixture
def restore_torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_step_macs_counts_every_layer_over_the_batch():
    assert step_macs(COURSE, 32) == 32 * (784 * 128 + 128 * 10)
    assert step_macs([64, 10], 1) == 640


def test_small_networks_get_one_thread_large_ones_every_cpu():
    assert auto_threads(COURSE, 32, cpus=2) == 1  # the course's network: 2 gain nothing
    assert auto_threads(COURSE, 128, cpus=2) == 2  # 13 million a step: 2 are ~18 % faster
    assert auto_threads([12288, 1024, 1024, 17], 128, cpus=2) == 2
    assert auto_threads([12288, 1024, 1024, 17], 128, cpus=1) == 1
    below = MANY_THREADS_FROM_MACS // 100 - 1  # a batch of 100 just under the bar, then on it
    assert auto_threads([below, 1], 100, cpus=8) == 1
    assert auto_threads([MANY_THREADS_FROM_MACS // 100, 1], 100, cpus=8) == 8


def test_cpu_threads_follows_omp_num_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cpu_threads() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "not a number")
    assert cpu_threads() >= 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert 1 <= cpu_threads()


def test_a_given_setting_wins_over_the_rule(restore_torch_threads):
    assert resolve_threads(3, COURSE, 32) == 3
    assert apply_threads(2, COURSE, 32) == 2 and torch.get_num_threads() == 2
    assert apply_threads(None, COURSE, 32) == 1 and torch.get_num_threads() == 1


def test_threads_is_typed_and_checked(compose_cfg):
    assert compose_cfg([]).threads is None
    assert compose_cfg(["threads=4"]).threads == 4
    with pytest.raises(ConfigCompositionException):
        compose_cfg(["threads=many"])
    with pytest.raises(ConfigError, match="threads must be a positive number"):
        validate_config(compose_cfg(["threads=0"]))


def test_a_run_trains_the_course_network_on_one_thread(
    compose_cfg, fixture_overrides, tmp_path, restore_torch_threads
):
    torch.set_num_threads(2)
    cfg = compose_cfg([*fixture_overrides, "trainer.max_epochs=1", "callbacks=none"])
    train(cfg, tmp_path / "out")
    assert torch.get_num_threads() == 1
