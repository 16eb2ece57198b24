"""denselab's Optuna sweeper, where Hydra looks for plugins: ``-m hydra/sweeper=optuna``.

Hydra imports every module under ``hydra_plugins`` for every command, ``--help`` included,
so this one stays light: the settings' schema, and a class that hands the search to
:mod:`denselab.sweeps.search` once a search really runs.
"""

# No `from __future__ import annotations`: Hydra loads this module outside sys.modules,
# where dataclasses cannot resolve string annotations.
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.denselab_optuna.optuna_sweeper.OptunaSweeper"
    # What the search optimises: val/acc_best (what denselab-train returns), val/acc or
    # val/loss (the last epoch's), params_total. Two make a multi-objective search.
    objectives: List[str] = field(default_factory=lambda: ["val/acc_best"])
    # maximize or minimize, one per objective; null: what each objective asks (an accuracy
    # is maximised, a loss or a size minimised). The other way round is refused.
    direction: Any = None
    n_trials: int = 20
    # Trials asked for at a time: what a parallel launcher runs side by side.
    n_jobs: int = 1
    # tpe, random, grid (choice and range values only), cmaes (one objective), nsgaii.
    sampler: str = "tpe"
    # The sampler's seed; the run's seed by default, so that one command asks the same trials.
    seed: Optional[int] = "${seed}"  # type: ignore[assignment]
    # none, median (stop a trial whose val/acc is below the median of earlier trials at the
    # same epoch) or hyperband. A pruned trial's run still ends FINISHED, from its best epoch.
    pruner: str = "none"
    # median: trials that finish before any is pruned, and epochs each trial runs before it
    # may be (0, Optuna's default: a trial may stop after its first epoch).
    pruner_startup_trials: int = 3
    pruner_warmup_epochs: int = 0
    # Where the study lives; null: optuna.db beside the sqlite tracking store (mlruns/).
    # A database URL (sqlite:///..., postgresql+psycopg://...) or a journal file (*.log).
    storage: Optional[str] = None
    # null: named for the sweep, so that the same command is the same study and continues it.
    study_name: Optional[str] = None
    # The search space, in Hydra's override grammar: interval(...), tag(log, interval(...)),
    # choice(...), range(...); a plain value is passed to every trial as it is.
    params: Optional[Dict[str, Any]] = None


class OptunaSweeper(Sweeper):
    """A search with Optuna: trials asked from a study in durable storage, run as the
    sweep's jobs by any launcher, pruned through that storage, told back as COMPLETE,
    PRUNED or FAIL. See :mod:`denselab.sweeps.search`."""

    def __init__(self, **settings: Any) -> None:
        # The settings are read from the composed config in setup(), in one place with the
        # checks that run before the sweep's parent run is made.
        self.search: Any = None

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        from denselab.sweeps.search import Search

        self.search = Search(hydra_context, task_function, config)

    def sweep(self, arguments: List[str]) -> Any:
        return self.search.run(arguments)


ConfigStore.instance().store(
    group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="denselab"
)
