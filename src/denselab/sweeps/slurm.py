"""Runs on a SLURM cluster: what a sweep needs before it submits, and which job a run is.

``hydra/launcher=slurm`` (or ``slurm_gpu``, conf/hydra/launcher/) sends each job of a sweep to
SLURM through Hydra's submitit launcher. :class:`CheckSlurmLauncher` refuses, in one sentence,
a sweep that sbatch would refuse later with a traceback; :func:`scheduler_tags` records on
each run the SLURM job that ran it and where that job's logs are.

Imported by Hydra before any job and by denselab.tracking.runs: no torch, Lightning or MLflow here.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from typing import Any, Callable, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from denselab.errors import ConfigError, DenselabError, first_line

log = logging.getLogger(__name__)

SLURM_LAUNCHER = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
# denselab's presets, whose partition has no default. Hydra cannot mark it `???` there: a
# `???` merged over the plugin's default (None) leaves the None. The plugin's own
# submitit_slurm keeps SLURM's meaning of no partition: the cluster's default one.
PRESETS = ("slurm", "slurm_gpu")
# sinfo asks slurmctld; one that does not answer within this is as good as down.
SINFO_TIMEOUT_S = 20



class CheckSlurmLauncher(Callback):
    """Refuse a SLURM sweep that cannot be submitted: no sbatch here, no partition given to
    a preset that needs one, or a partition the cluster does not have.

    Registered first in conf/config.yaml, so that nothing (a store, a sweep's parent run) is
    made for a sweep that never starts.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            check_slurm_launcher(config)
        except DenselabError as err:
            log.error(str(err))
            sys.exit(1)


def slurm_partitions() -> list[str]:
    """The partitions ``sinfo`` lists (the default one without its ``*``)."""
    try:
        out = subprocess.run(
            ["sinfo", "--noheader", "--format=%R"],
            capture_output=True,
            text=True,
            timeout=SINFO_TIMEOUT_S,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ConfigError(
            f"SLURM does not answer here (sinfo: {first_line(err)}); start the sweep where "
            "`sinfo` works (the cluster's login node), or drop hydra/launcher to run the jobs here."
        ) from None
    if out.returncode != 0:
        # sinfo's last line says what it gave up on; the lines before, where it looked.
        said = (out.stderr.strip() or f"exit {out.returncode}").splitlines()[-1]
        said = said.removeprefix("sinfo: ").removeprefix("fatal: ").removeprefix("error: ")
        raise ConfigError(
            f"SLURM does not answer here (sinfo: {said}); start the sweep where `sinfo` works "
            "(the cluster's login node), or drop hydra/launcher to run the jobs here."
        )
    return sorted(set(out.stdout.split()))


def check_slurm_launcher(
    config: DictConfig,
    which: Callable[[str], Optional[str]] = shutil.which,
    partitions: Callable[[], list[str]] = slurm_partitions,
) -> None:
    """Raise ConfigError, in one sentence with its fix, for a SLURM launcher that cannot
    submit; nothing for any other launcher."""
    launcher = config.hydra.launcher
    if launcher.get("_target_") != SLURM_LAUNCHER:
        return
    choice = config.hydra.runtime.choices.get("hydra/launcher", "submitit_slurm")
    partition = None if OmegaConf.is_missing(launcher, "partition") else launcher.partition
    if not partition and choice in PRESETS:
        raise ConfigError(
            f"hydra/launcher={choice} needs the SLURM partition to run the jobs in; add "
            "hydra.launcher.partition=<name> (`sinfo` lists them)."
        )
    if which("sbatch") is None:
        raise ConfigError(
            f"hydra/launcher={choice} submits every job with sbatch, which is not installed "
            "here; start the sweep on a machine of the cluster (a login node), or drop "
            "hydra/launcher to run the jobs on this machine."
        )
    known = partitions()  # also: whether SLURM answers at all
    unknown = [p for p in str(partition or "").split(",") if p and p not in known]
    if unknown:
        raise ConfigError(
            f"hydra.launcher.partition={partition}: this cluster has no partition "
            f"{unknown[0]!r}; use one of {', '.join(known) or 'none (sinfo lists none)'}."
        )


