"""A search's space, read from Hydra's override grammar into Optuna's distributions.

``hydra.sweeper.params`` and the command's own sweep overrides say it the way Hydra's
documentation does::

    optimizer.lr: tag(log, interval(0.001, 0.5))     # a float, log-uniform
    model.dropout: interval(0.0, 0.5)                # a float, uniform
    trainer.max_epochs: tag(int, interval(2, 10))    # an integer
    model.hidden_sizes: choice("[64]", "[128]")      # one of these
    data.batch_size: range(32, 257, 32)              # 32, 64, ..., 256

The command line's sweeps join them (``optimizer.lr=interval(0.01,0.3)``, ``seed=1,2`` as a
choice); a plain value (in params or on the command line) is passed to every trial as it is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
)

from denselab.errors import SearchError


@dataclass
class SearchSpace:
    """What each trial varies (Optuna's distributions, by override key) and what it passes
    on unchanged (whole overrides)."""

    distributions: dict[str, BaseDistribution]
    fixed: list[str] = field(default_factory=list)

    def overrides(self, values: Mapping[str, Any]) -> list[str]:
        """A trial's job: the fixed overrides and one per value the trial drew."""
        return [*self.fixed, *(f"{key}={override_text(v)}" for key, v in values.items())]

    def fingerprint(self) -> str:
        """The space as a study keeps it, to tell a study of another space."""
        return json.dumps(
            {key: json.loads(distribution_to_json(d)) for key, d in self.distributions.items()},
            sort_keys=True,
        )

    def grid(self) -> dict[str, list[Any]]:
        """Every value of every key, for the grid sampler; refused for a continuous one."""
        grid = {}
        for key, dist in self.distributions.items():
            if isinstance(dist, CategoricalDistribution):
                grid[key] = list(dist.choices)
            elif isinstance(dist, IntDistribution) and not dist.log:
                grid[key] = list(range(dist.low, dist.high + 1, dist.step))
            else:
                raise SearchError(
                    f"hydra.sweeper.sampler=grid needs a list of values for every key, and "
                    f"{key} is an interval; give it as choice(...) or range(...), or use "
                    "sampler=tpe or random."
                )
        return grid


def search_space(params: Optional[Mapping[str, Any]], arguments: Sequence[str]) -> SearchSpace:
    """The space of ``hydra.sweeper.params`` and the command's overrides (``arguments``,
    which win where both name a key). Raises SearchError for a value that does not parse,
    a range that is empty, or a space with nothing to search."""
    parser = OverridesParser.create()
    lines = [f"{key}={_param_text(value)}" for key, value in (params or {}).items()]
    given: dict[str, Override] = {}
    for line in [*lines, *arguments]:
        override = _parse(parser, line)
        given[override.get_key_element()] = override
    space = SearchSpace({})
    for key, override in given.items():
        if override.is_sweep_override():
            space.distributions[key.lstrip("+~")] = distribution(override)
        else:
            text = override.get_value_element_as_str()
            space.fixed.append(override.input_line or f"{key}={text}")
    if not space.distributions:
        raise SearchError(
            "The search space is empty: give hydra.sweeper.params (or hparams_search=mlp), or "
            "a setting to search on the command line, e.g. 'optimizer.lr=interval(0.001,0.3)'."
        )
    return space


def _param_text(value: Any) -> str:
    # A number in YAML (lr: 0.1) arrives as a number: it is a fixed value.
    return value if isinstance(value, str) else override_text(value)


def _parse(parser: OverridesParser, line: str) -> Override:
    try:
        (override,) = parser.parse_overrides([line])
    except HydraException as err:
        raise SearchError(f"The search space's '{line}' does not parse: {err}") from None
    return override


def distribution(override: Override) -> BaseDistribution:
    """The Optuna distribution of one sweep override."""
    key, sweep = override.get_key_element(), override.value()
    tags = set(getattr(sweep, "tags", set()))
    if override.is_interval_sweep():
        low, high = sweep.start, sweep.end
        if not low < high:
            raise SearchError(
                f"{key}=interval({low:g}, {high:g}) is empty: its low end must be below its "
                "high end."
            )
        if "log" in tags and low <= 0:
            raise SearchError(
                f"{key}: a log interval must start above 0, not at {low:g}; use "
                f"interval({low:g}, {high:g}) without log, or a positive low end."
            )
        if "int" in tags:
            return IntDistribution(int(low), int(high), log="log" in tags)
        return FloatDistribution(low, high, log="log" in tags)
    values = list(override.sweep_iterator())
    if not values:
        raise SearchError(f"{override.input_line} gives no values to search.")
    if override.is_range_sweep() and all(isinstance(v, int) for v in values) and len(values) > 1:
        return IntDistribution(values[0], values[-1], step=values[1] - values[0])
    return CategoricalDistribution([_choice_value(v) for v in values])


def _choice_value(value: Any) -> Any:
    # Optuna keeps a choice as None, bool, int, float or str: a list or dict is kept as the
    # override text that Hydra reads back into it.
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return override_text(value)


def override_text(value: Any) -> str:
    """A value as an override's right-hand side says it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return value
    return Override._get_value_element_as_str(value)
