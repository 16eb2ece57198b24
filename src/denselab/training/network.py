"""The dense network itself, a plain ``torch.nn.Sequential``: what training builds inside the
LightningModule (:mod:`denselab.training.module`) and what a trained classifier rebuilds to load its
weights (:mod:`denselab.serving.classifier`), without importing Lightning (seconds at start-up).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Mapping, Sequence

from torch import nn

from denselab.config import ACTIVATIONS, ModelSchema, default_of


def build_mlp(
    in_features: int,
    hidden_sizes: Sequence[int],
    num_classes: int,
    activation: str = default_of(ModelSchema, "activation"),
    dropout: float = default_of(ModelSchema, "dropout"),
    batch_norm: bool = default_of(ModelSchema, "batch_norm"),
) -> nn.Sequential:
    """Linear layers of ``hidden_sizes`` widths, each followed by [BatchNorm], activation
    and [Dropout], then a Linear layer to class logits. Input: flattened images."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for size in hidden_sizes:
        layers.append(nn.Linear(width, size))
        if batch_norm:
            layers.append(nn.BatchNorm1d(size))
        layers.append(getattr(nn, ACTIVATIONS[activation])())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = size
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class Architecture:
    """What builds the network: the model group's settings (defaults from
    :class:`denselab.config.ModelSchema`) and the data's shape. The LightningModule builds its
    network from one, and a trained classifier rebuilds it from the hyper-parameters saved."""

    input_shape: tuple[int, ...]
    num_classes: int
    hidden_sizes: tuple[int, ...] = tuple(default_of(ModelSchema, "hidden_sizes"))
    activation: str = default_of(ModelSchema, "activation")
    dropout: float = default_of(ModelSchema, "dropout")
    batch_norm: bool = default_of(ModelSchema, "batch_norm")

    def __post_init__(self) -> None:
        # From a checkpoint's or a JSON file's lists: the same plain types, whatever came in.
        object.__setattr__(self, "input_shape", tuple(int(s) for s in self.input_shape))
        object.__setattr__(self, "hidden_sizes", tuple(int(s) for s in self.hidden_sizes))
        object.__setattr__(self, "num_classes", int(self.num_classes))

    @classmethod
    def from_hparams(cls, hparams: Mapping[str, Any]) -> "Architecture":
        """From a module's saved hyper-parameters; keys it lacks take the defaults."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in hparams.items() if k in names})

    def build(self) -> nn.Sequential:
        return build_mlp(
            math.prod(self.input_shape),
            self.hidden_sizes,
            self.num_classes,
            self.activation,
            self.dropout,
            self.batch_norm,
        )
