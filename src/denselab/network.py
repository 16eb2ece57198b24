"""The dense network itself, a plain ``torch.nn.Sequential``: what training builds inside the
LightningModule (:mod:`denselab.model`) and what a trained classifier rebuilds to load its
weights (:mod:`denselab.classifier`), without importing Lightning (seconds at start-up).
"""

from __future__ import annotations

from typing import Sequence

from torch import nn

from denselab.constants import ACTIVATIONS


def build_mlp(
    in_features: int,
    hidden_sizes: Sequence[int],
    num_classes: int,
    activation: str = "relu",
    dropout: float = 0.0,
    batch_norm: bool = False,
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
