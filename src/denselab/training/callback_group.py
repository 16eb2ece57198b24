"""Several Lightning callbacks that act only around epochs and the fit, as one callback.

Lightning calls each of its hooks on every callback in the Trainer, whether the callback
overrides the hook or not, and six of them at every training step (batch start and end,
before and after backward, before the optimizer step, before zero_grad): for the six figure
callbacks of a default run, a tenth of the course network's step (``bench/callbacks.py``
prints what they cost apart and joined). A :class:`CallbackGroup` stands for its members: it
answers exactly the hooks some member overrides, calling those members in their order, and
costs one callback's time on every other hook.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import pytorch_lightning as pl

# Every hook Lightning may call on a callback, but the state ones, which the group answers
# itself (its state is its members', by their state keys).
STATE_HOOKS = ("state_dict", "load_state_dict")
HOOKS = tuple(
    name
    for name, value in vars(pl.Callback).items()
    if callable(value) and not name.startswith("_") and name not in STATE_HOOKS
)


def overrides(callback: pl.Callback, hook: str) -> bool:
    return getattr(type(callback), hook) is not getattr(pl.Callback, hook)


def _call_each(hook: str, members: Sequence[pl.Callback], *args: Any, **kwargs: Any) -> None:
    for member in members:
        getattr(member, hook)(*args, **kwargs)


class CallbackGroup(pl.Callback):
    """Callbacks as one: each hook some member overrides calls those members, in order."""

    def __init__(self, members: Sequence[pl.Callback]):
        self.members = list(members)
        # Read by Lightning at every hook it calls: made once.
        self._state_key = "CallbackGroup[" + ",".join(m.state_key for m in self.members) + "]"
        for hook in HOOKS:
            takers = [m for m in self.members if overrides(m, hook)]
            if takers:
                # An instance attribute: what Lightning's getattr(callback, hook) finds first.
                setattr(self, hook, functools.partial(_call_each, hook, takers))

    @property
    def state_key(self) -> str:
        return self._state_key

    def state_dict(self) -> dict[str, Any]:
        states = {m.state_key: m.state_dict() for m in self.members}
        return {key: state for key, state in states.items() if state}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for member in self.members:
            if member.state_key in state_dict:
                member.load_state_dict(state_dict[member.state_key])


def joined_by_kind(callbacks: Sequence[pl.Callback], kind: type) -> list[pl.Callback]:
    """``callbacks`` with those of ``kind`` joined in one :class:`CallbackGroup` where there
    are two or more, in the first one's place. Every other callback stays as it is: Lightning
    treats some kinds apart (checkpoints, early stopping, progress bars)."""
    members = [c for c in callbacks if isinstance(c, kind)]
    if len(members) < 2:
        return list(callbacks)
    first = callbacks.index(members[0])
    rest = [c for c in callbacks if not isinstance(c, kind)]
    before = [c for c in callbacks[:first] if not isinstance(c, kind)]
    return [*before, CallbackGroup(members), *rest[len(before) :]]
