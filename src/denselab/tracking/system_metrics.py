"""MLflow's system metrics for a run (``system/cpu_utilization_percentage``,
``system/system_memory_usage_megabytes``, disk, network, and the GPU's utilisation and memory
where ``nvidia-ml-py`` finds one), sampled on a thread beside training.

Lightning's MLflow logger does not start MLflow's monitor, and ``mlflow.start_run`` only does
for runs it starts itself; denselab starts it for the run it creates or continues, on rank
zero. A resumed run continues its series from the step after its last one.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator

from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

# MLflow's own notices ("Started monitoring system metrics.", "Skip logging GPU metrics")
# say nothing a user acts on, on every run.
_MLFLOW_LOGGER = "mlflow.system_metrics"


class RunMonitor(SystemMetricsMonitor):
    """MLflow's monitor, keeping the samples of its last, unfinished interval: MLflow drops
    them when stopped, so a run shorter than one interval would have no point at all."""

    def finish(self) -> None:
        super().finish()
        if any(monitor.metrics for monitor in self.monitors):
            self.publish_metrics(self.aggregate_metrics())
            self.mlflow_logger.flush()


@contextlib.contextmanager
def system_metrics(
    run_id: str, tracking_uri: str, interval: float, resumed: bool
) -> Iterator[None]:
    """Samples the machine every ``interval`` seconds while the block runs, logging one point
    per interval to the run, which must stay RUNNING until the block ends."""
    quiet = logging.getLogger(_MLFLOW_LOGGER)
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    monitor = RunMonitor(
        run_id, sampling_interval=interval, resume_logging=resumed, tracking_uri=tracking_uri
    )
    monitor.start()
    try:
        yield
    finally:
        try:
            monitor.finish()
        finally:
            quiet.setLevel(level)
