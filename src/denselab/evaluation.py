"""What the trained model scores and predicts after training: plain torch, no Trainer."""

from __future__ import annotations

import pandas as pd
import torch

from denselab.data.base import ImageDataModule
from denselab.model import MLPClassifier


def accuracy_by_split(model: MLPClassifier, datamodule: ImageDataModule) -> pd.DataFrame:
    """The course's table: accuracy and loss of the model on each split."""
    rows = []
    for name, split in datamodule.splits.items():
        loss, acc = model.evaluate(split.x, split.y, batch_size=datamodule.eval_batch_size)
        rows.append({"split": name, "images": len(split), "accuracy": acc, "loss": loss})
    return pd.DataFrame(rows)


def restore_weights(model: MLPClassifier, checkpoint_path: str) -> None:
    """Load a checkpoint's weights into ``model``, as ``trainer.test(ckpt_path=...)`` does."""
    if checkpoint_path:
        # weights_only=False: the file is this run's own checkpoint, not one from elsewhere
        state = torch.load(checkpoint_path, map_location=model.device, weights_only=False)
        model.load_state_dict(state["state_dict"])


def predict_unlabeled(model: MLPClassifier, datamodule: ImageDataModule) -> pd.DataFrame:
    """Each image with a hidden label: its predicted class (label and name), probability."""
    unlabeled = datamodule.unlabeled
    probs = model.predict_logits(unlabeled.x, datamodule.eval_batch_size).softmax(dim=1).cpu()
    probability, predicted = probs.max(dim=1)
    return pd.DataFrame(
        {
            "obs_id": unlabeled.obs_ids,
            "predicted_label": [datamodule.class_labels[k] for k in predicted.tolist()],
            "predicted_class": [datamodule.class_names[k] for k in predicted.tolist()],
            "probability": probability.numpy(),
        }
    )
