"""Images read once from a memory-mapped .npy, and data too big for memory refused early."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import no_runs
from helpers import run_cli, write_image_table

from denselab.data import npy
from denselab.data.flowers import FlowersDataModule
from denselab.data.image_table import ImageTableDataModule
from denselab.data.memory import RUN_RESERVE_BYTES, available_bytes, check_fits
from denselab.errors import DataError
from denselab.train import train


@pytest.mark.parametrize("order", ["C", "F"])
def test_gather_rows_copies_each_group_in_the_order_given(tmp_path, monkeypatch, order):
    images = np.random.default_rng(0).integers(0, 256, (101, 5, 6, 3), dtype=np.uint8)
    path = tmp_path / "images.npy"
    np.save(path, np.asfortranarray(images) if order == "F" else images)
    monkeypatch.setattr(npy, "CHUNK_BYTES", 7 * 90)  # 7 rows a chunk: many chunks
    groups = {"a": np.array([100, 3, 50, 0, 7]), "b": np.arange(8, 40), "none": np.array([], int)}
    header = npy.read_header(path)
    assert header.shape == images.shape and header.fortran_order == (order == "F")
    out = npy.gather_rows(path, header, groups, np.dtype(np.uint8))
    for name, rows in groups.items():
        assert out[name].flags.c_contiguous and out[name].flags.writeable
        assert np.array_equal(out[name], images[rows]), name


def test_gather_rows_converts_float64_to_float32(tmp_path):
    images = np.random.default_rng(1).random((10, 4, 4))
    np.save(tmp_path / "f.npy", images)
    header = npy.read_header(tmp_path / "f.npy")
    out = npy.gather_rows(tmp_path / "f.npy", header, {"all": np.arange(10)}, np.dtype("f4"))
    assert out["all"].dtype == np.float32 and np.allclose(out["all"], images)


def test_truncated_array_is_one_clear_sentence(tmp_path):
    path = tmp_path / "images.npy"
    np.save(path, np.zeros((50, 8, 8), np.uint8))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"header promises 3,200 .* truncated"):
        npy.gather_rows(path, npy.read_header(path), {"a": np.arange(50)}, np.dtype(np.uint8))


def test_check_fits_counts_the_run_reserve_and_names_the_numbers():
    check_fits(10**9, "x", "fix", available=10**9 + RUN_RESERVE_BYTES)
    with pytest.raises(DataError) as err:
        check_fits(50 * 10**9, "images.npy (9 images)", "use fewer images", available=8 * 10**9)
    message = str(err.value)
    assert "images.npy (9 images) needs 50.0 GB" in message and "only 8.0 GB" in message
    assert message.endswith("use fewer images.") and "\n" not in message
    assert available_bytes() > 0  # this machine reports what it has free


def huge_image_table(folder, rows: int = 400):
    """metadata.csv of ``rows`` rows, and an images.npy whose header claims 20 million RGB
    images of 256x256 (3.9 TB) but that holds only the header: more than any machine has."""
    write_image_table(folder, n_train=rows - 160)
    images = folder / "images.npy"
    header = {"descr": "|u1", "fortran_order": False, "shape": (20_000_000, 256, 256, 3)}
    with open(images, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
    return folder / "metadata.csv", images


def test_image_table_too_big_for_memory_is_refused_from_its_header(tmp_path):
    csv, images = huge_image_table(tmp_path / "table")
    dm = ImageTableDataModule(csv=str(csv), images=str(images), dir="unused")
    with pytest.raises(DataError) as err:
        dm.setup()
    message = str(err.value)
    assert message.startswith(f"{images} (20,000,000 images of 256x256x3, held as uint8) needs")
    assert "3932.2 GB of memory" in message and "is available; use fewer images" in message
    assert "\n" not in message


def test_too_big_for_memory_is_refused_before_any_run(compose_cfg, store_uri, tmp_path):
    csv, images = huge_image_table(tmp_path / "table")
    cfg = compose_cfg(["data=image_table", f"data.dir={csv.parent}", f"tracking.uri={store_uri}"])
    with pytest.raises(DataError, match="needs 3932.2 GB of memory"):
        train(cfg, tmp_path / "out")
    no_runs(store_uri)


@pytest.mark.slow
def test_too_big_for_memory_exits_non_zero_with_the_sentence(tmp_path):
    csv, _ = huge_image_table(tmp_path / "table")
    store = tmp_path / "mlruns" / "mlflow.db"
    result = run_cli(
        ["data=image_table", f"data.dir={csv.parent}", f"tracking.uri=sqlite:///{store}"],
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "needs 3932.2 GB of memory" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    no_runs(f"sqlite:///{store}")


def test_flowers_image_size_too_big_for_memory_is_refused_before_any_download(tmp_path):
    dm = FlowersDataModule(image_size=200_000, dir=str(tmp_path / "flowers"), mirrors=[])
    with pytest.raises(DataError, match=r"data.image_size=200000 .* choose a smaller"):
        dm.prepare_data()
    assert not (tmp_path / "flowers").exists()
