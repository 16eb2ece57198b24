"""Reading a run's checkpoint files: tensors and plain data only, and the run they belong to.

Without Lightning (seconds to import): resume, denselab-predict and denselab.load read
checkpoints before, or without, any training.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Optional

import torch

from denselab.errors import CheckpointError, first_line

LAST = "last.ckpt"
# Where the per-epoch copy of last.ckpt lives in the run's artifacts.
RESUME_ARTIFACT_DIR = "resume"
# The checkpoint's own section: the run id it was written for, torch's RNG state.
STATE_KEY = "denselab"


def checkpoint_run_id(path: Path) -> Optional[str]:
    """The run id a checkpoint was written for (None for checkpoints from elsewhere)."""
    state = load_checkpoint(path)
    return (state.get(STATE_KEY) or {}).get("run_id")


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict:
    """A Lightning checkpoint, read with ``torch.load(weights_only=True)``: tensors and plain
    data only, so a checkpoint from elsewhere cannot run code. A denselab checkpoint needs
    nothing beyond torch's own allow-list (hyper-parameters are plain lists and strings, the
    callbacks' state plain dicts); one that holds other objects is refused."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"The checkpoint {path} does not exist; check the path.")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path} holds objects other than tensors and plain data ({_unsafe_part(err)}), "
            "and denselab loads checkpoints only with torch.load(weights_only=True); load it "
            "only if you trust it, and save its state_dict alone."
        ) from None
    except (RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint ({first_line(err)}); check the path."
        ) from None


def _unsafe_part(err: Exception) -> str:
    # torch names the refused global in a line such as "Unsupported global: GLOBAL os.system"
    for line in str(err).splitlines():
        if "Unsupported global" in line or "Unsupported operand" in line:
            return line.strip().rstrip(".")
    return first_line(err)
