"""The code a run ran on, beyond its commit: the uncommitted changes of the checkout denselab
runs from (``code/uncommitted.patch``), and the versions of Python and of the packages it
runs on (``code/versions.txt``), logged to every run. Without them a run made from a
working copy with local edits could not be told apart from one made from the commit."""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Optional

# denselab's own code: in a checkout, inside its git work tree.
CODE_DIR = Path(__file__).resolve().parents[1]
PATCH = "code/uncommitted.patch"
VERSIONS = "code/versions.txt"
PACKAGES = (
    "denselab", "torch", "pytorch-lightning", "lightning-utilities", "torchmetrics", "mlflow",
    "hydra-core", "omegaconf", "numpy", "pandas", "scikit-learn", "scipy", "matplotlib",
    "pillow", "pooch", "psutil",
)


def installed_versions() -> str:
    """``python 3.11.7``, the platform, then one ``name==version`` per package."""
    lines = [f"python {platform.python_version()} ({sys.executable})", platform.platform()]
    for name in PACKAGES:
        try:
            lines.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            lines.append(f"{name}: not installed")
    return "\n".join(lines) + "\n"


def _git(directory: Path, *args: str) -> Optional[str]:
    try:
        out = subprocess.run(
            ["git", *args], cwd=directory, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def uncommitted_changes(directory: Optional[Path] = None) -> Optional[str]:
    """The checkout's changes against its commit, as a patch (``git apply`` takes it back),
    with its untracked files named at the top; None where ``directory`` (default: denselab's
    own code) is no checkout or the checkout is clean."""
    directory = directory or CODE_DIR
    commit = _git(directory, "rev-parse", "HEAD")
    root = _git(directory, "rev-parse", "--show-toplevel")
    if commit is None or root is None:
        return None
    top = Path(root.strip())  # the whole checkout, not only denselab's folder of it
    patch = _git(top, "diff", "HEAD", "--binary") or ""
    untracked = (_git(top, "ls-files", "--others", "--exclude-standard") or "").splitlines()
    if not patch and not untracked:
        return None
    header = [f"# uncommitted changes of {top} against {commit.strip()}"]
    header += [f"# untracked, not in this patch: {name}" for name in untracked]
    return "\n".join(header) + "\n" + patch


def log_code_state(run) -> Optional[str]:
    """Log the package versions, and the uncommitted changes where there are any, to
    ``run`` (a RunLogger); returns the description's line about them, or None."""
    run.text(installed_versions(), VERSIONS)
    patch = uncommitted_changes()
    if patch is None:
        return None
    run.text(patch, PATCH)
    run.tag("code_uncommitted", "true")
    return f"**Code**: uncommitted changes to the commit, in `{PATCH}`"
