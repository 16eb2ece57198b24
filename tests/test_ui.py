"""The run as a person sees it: MLflow's UI in a real browser, and the server's REST API.

Runs docs/pictures.py (what `make pictures` runs for the README) on a short digits run: it
starts `mlflow ui`, checks through the REST API that the run's figures and tables are
listed, and, in headless Chromium with a fresh profile and nothing clicked, opens the
address the run printed: the experiment shows its runs table (without the address's
?workflowType=machine_learning it shows MLflow 3's GenAI dashboard, and this fails), the run
its result's first line; then screenshots the run's Overview, metric charts and a figure in
its artifacts, each only once the page shows it. The first layer's weight card must show a
non-blank image in its visible area (pixels of the screenshot), and a sweep's two jobs must
be nested under its parent in the runs table.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import unavailable
from PIL import Image

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[1] / "docs" / "pictures.py"
PICTURES = (
    "confusion_matrix_test",
    "first_layer_weights",
    "typical_examples",
    "training_curves",
    "ui_overview",
    "ui_metrics",
    "ui_artifacts",
    "ui_weights",
)


def chromium_or_skip() -> None:
    if not shutil.which("chromium"):
        unavailable("Debian's chromium is not installed", "apt-get install chromium")


def test_the_ui_shows_the_run_in_a_real_browser(tmp_path):
    chromium_or_skip()
    out = tmp_path / "pictures"
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--out",
            str(out),
            "--sweep",
            "seed=1,2",
            "data=digits",
            "trainer.max_epochs=2",
            "trainer.enable_progress_bar=false",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "REST API lists" in result.stdout
    assert "nests the sweep's 2 jobs under 'pictures sweep seed=1,2'" in result.stdout
    assert "The weights card shows its image" in result.stdout
    for name in PICTURES:
        path = out / f"{name}.png"
        assert path.stat().st_size < 150_000, name
        pixels = np.asarray(Image.open(path).convert("RGB"))
        assert pixels.shape[0] >= 300 and pixels.var() > 100, (name, pixels.shape)
