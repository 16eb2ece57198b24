"""Names shared by the config, the model, the data and the figures, written once.

This module imports nothing heavy (no torch, no Lightning), so the config can check a run
against it before any of those load.
"""

from __future__ import annotations

# The splits a dataset may have, in the order tables list them.
SPLITS = ("train", "val", "test")

# Activation name in the config -> the torch.nn class that implements it.
ACTIVATIONS = {"relu": "ReLU", "tanh": "Tanh", "sigmoid": "Sigmoid", "gelu": "GELU"}

# cross_entropy: on logits; mse: squared error of softmax outputs against one-hot targets.
LOSSES = ("cross_entropy", "mse")

# The per-epoch metrics the training curves draw, train against validation.
CURVE_METRICS = ("train/loss", "val/loss", "train/acc", "val/acc")
