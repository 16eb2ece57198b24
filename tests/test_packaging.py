"""The wheel carries conf/: an installed denselab composes its config from anywhere."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

# Builds a wheel and installs it into a fresh venv: minutes, not seconds.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def run(*args, cwd=None) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result


def test_wheel_installed_elsewhere_finds_its_config(tmp_path):
    dist = tmp_path / "dist"
    run(
        sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(REPO)
    )
    (wheel,) = dist.glob("denselab-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    sources = {
        f"denselab/{p.relative_to(REPO / 'src' / 'denselab')}"
        for p in (REPO / "src" / "denselab").rglob("*.py")
    }
    configs = {
        f"denselab/conf/{p.relative_to(REPO / 'conf')}" for p in (REPO / "conf").rglob("*.yaml")
    }
    plugins = {
        f"hydra_plugins/{p.relative_to(REPO / 'src' / 'hydra_plugins')}"
        for p in (REPO / "src" / "hydra_plugins").rglob("*.py")
    }
    assert plugins and "hydra_plugins/__init__.py" not in plugins  # a namespace package
    assert sources | configs | plugins <= shipped, "add new packages to pyproject's packages"

    # A fresh venv holding only the wheel; its dependencies come from this environment's
    # site-packages (a plain path entry: this environment's editable hook is not loaded).
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", str(venv))
    python = venv / "bin" / "python"
    purelib = run(str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))")
    (Path(purelib.stdout.strip()) / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        str(python),
        "install",
        "--no-deps",
        "--no-index",
        str(wheel),
    )

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    located = run(str(python), "-c", "import denselab; print(denselab.__file__)", cwd=elsewhere)
    assert located.stdout.startswith(str(venv))
    shown = run(
        str(venv / "bin" / "denselab-train"), "--cfg", "job", "data=fashion_mnist", cwd=elsewhere
    )
    assert "FashionMNISTDataModule" in shown.stdout and "torch.optim.SGD" in shown.stdout
    # Hydra finds the Optuna sweeper the wheel ships in its plugins' namespace.
    sweeper = run(
        str(venv / "bin" / "denselab-train"), "--cfg", "hydra", "hydra/sweeper=optuna",
        cwd=elsewhere,
    )
    assert "hydra_plugins.denselab_optuna.optuna_sweeper.OptunaSweeper" in sweeper.stdout
    assert list(elsewhere.iterdir()) == []


def test_the_search_extra_brings_current_optuna_and_a_consistent_environment():
    from importlib.metadata import requires, version

    assert int(version("optuna").split(".")[0]) >= 4
    extra = [r for r in requires("denselab") if 'extra == "optuna"' in r]
    assert any(r.startswith("optuna") for r in extra) and not any("<3" in r for r in extra)
    checked = subprocess.run(
        [sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=120
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
