"""The command line's overrides (``model.hidden_sizes=[64]``, ``seed=1,2``, ``data=digits``),
read once, with Hydra's own grammar: which settings a command sets, to what, and which it
sweeps."""

from __future__ import annotations

from typing import Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override


def parse(overrides: Sequence[str]) -> list[Override]:
    return OverridesParser.create().parse_overrides(list(overrides))


def override_keys(overrides: Sequence[str], keep_resume: bool = False) -> list[str]:
    """The config keys (or groups) the overrides set, as dotted paths, in their order
    (without ``resume`` unless ``keep_resume``)."""
    return [
        o.key_or_group.replace("/", ".")
        for o in parse(overrides)
        if keep_resume or o.key_or_group != "resume"
    ]


def override_values(overrides: Sequence[str]) -> dict[str, str]:
    """Each key's value as the override says it (``optimizer.lr`` -> ``0.1``)."""
    return {o.key_or_group: o.get_value_element_as_str() for o in parse(overrides)}


def swept(overrides: Sequence[str]) -> dict[str, str]:
    """The keys a sweep varies, with how the command says it (``seed`` -> ``seed=1,2``)."""
    return {
        o.key_or_group: o.input_line or o.key_or_group
        for o in parse(overrides)
        if o.is_sweep_override()
    }


def command_line(argv: Sequence[str]) -> list[str]:
    """The overrides among a command's arguments, as Hydra's own argument parser reads them
    (``--config-name X``, ``-m`` and the like set aside); none if it cannot read them, as
    Hydra then says why itself."""
    from hydra._internal.utils import get_args_parser

    try:
        return list(get_args_parser().parse_args(list(argv)).overrides)
    except SystemExit:
        return []


def set_keys(overrides: Sequence[str]) -> list[str]:
    """The keys that overrides change without ``+``, ``++`` or ``~``: keys the config must
    already have (``model.hidden_sizes=[64]``, ``data=digits``)."""
    return [
        o.key_or_group
        for o in parse(overrides)
        if not (o.is_add() or o.is_force_add() or o.is_delete()) and "/" not in o.key_or_group
    ]
