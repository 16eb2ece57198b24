"""Oxford Flowers-17 from fixture files in the real layout: download, decode, cache, splits."""

from __future__ import annotations

import json
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from conftest import only_run
from helpers import (
    FLOWERS_COLOURS,
    add_bytes,
    flowers_mode,
    flowers_split_ids,
    md5,
    run_cli,
    serve,
    write_flowers,
)
from PIL import Image
from scipy.io import savemat

from denselab.data import images as image_decoding
from denselab.data.cache import save_cache
from denselab.data.flowers import FlowersDataModule
from denselab.errors import DataError

FILES = ("17flowers.tgz", "datasplits.mat")


@pytest.fixture(scope="session")
def flowers_src(tmp_path_factory) -> Path:
    """17flowers.tgz (1,360 small JPEGs, RGB, grayscale and CMYK) and datasplits.mat."""
    return write_flowers(tmp_path_factory.mktemp("flowers"), short_side=40)


@pytest.fixture(scope="session")
def prepared_src(flowers_src, tmp_path_factory) -> Path:
    """The fixture files and their decoded 32x32 cache, as after a first run."""
    folder = tmp_path_factory.mktemp("prepared") / "flowers17"
    shutil.copytree(flowers_src, folder)
    loaded(folder)
    assert (folder / "flowers17_32.npz").is_file()
    return folder


@pytest.fixture
def data_dir(prepared_src, tmp_path) -> Path:
    """A data dir holding both files and the 32x32 cache (copied with their times, so the
    cache stays valid): tests that do not decode need not pay for it."""
    return Path(shutil.copytree(prepared_src, tmp_path / "flowers17"))


@pytest.fixture
def decode_calls(monkeypatch) -> list[Path]:
    """Every photo decoded from now on, in the order asked."""
    calls: list[Path] = []
    decode = image_decoding.decode_image

    def counting(path: Path, size: int) -> np.ndarray:
        calls.append(path)
        return decode(path, size)

    monkeypatch.setattr(image_decoding, "decode_image", counting)
    return calls


def loaded(folder: Path, **kwargs) -> FlowersDataModule:
    dm = FlowersDataModule(dir=str(folder), **{"image_size": 32, **kwargs})
    dm.prepare_data()
    dm.setup()
    return dm


# -- download --------------------------------------------------------------------------


def test_downloads_both_files_and_prepares_the_splits(
    flowers_src, tmp_path, monkeypatch, decode_calls
):
    # The real MD5s belong to the real files: give the module the fixture's.
    monkeypatch.setattr(FlowersDataModule, "resources", {n: md5(flowers_src / n) for n in FILES})
    target = tmp_path / "flowers17"
    with serve(flowers_src) as url:
        dm = loaded(target, mirrors=[url])

    assert len(decode_calls) == 1360
    assert [p.name for p in decode_calls[:2]] == ["image_0001.jpg", "image_0002.jpg"]

    # the photos were extracted in a temporary folder, decoded, cached, and cleaned up
    assert sorted(p.name for p in target.iterdir()) == sorted([*FILES, "flowers17_32.npz"])
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 680, "val": 340, "test": 340}
    assert dm.input_shape == (32, 32, 3) and dm.num_classes == 17
    assert dm.class_names[0] == "Daffodil" and dm.class_names[16] == "Pansy"
    assert "flowers17: train 680, val 340, test 340 images of 32x32x3" in dm.describe()


def test_wrong_checksum_is_refused(flowers_src, tmp_path, monkeypatch):
    resources = {"17flowers.tgz": md5(flowers_src / "17flowers.tgz"), "datasplits.mat": "0" * 32}
    monkeypatch.setattr(FlowersDataModule, "resources", resources)
    target = tmp_path / "flowers17"
    with serve(flowers_src) as url, pytest.raises(DataError, match="checksum mismatch"):
        loaded(target, mirrors=[url])
    assert sorted(p.name for p in target.iterdir()) == ["17flowers.tgz"]


def test_real_resources_are_the_published_files():
    assert FlowersDataModule.resources == {
        "17flowers.tgz": "b59a65d8d1a99cd66944d474e1289eab",
        "datasplits.mat": "4828cddfd0d803c5abbdebcb1e148a1e",
    }


@pytest.mark.slow
def test_one_epoch_through_the_console_script(flowers_src, tmp_path, store_uri):
    data_dir = tmp_path / "flowers17"
    data_dir.mkdir()
    for name in FILES:  # found on disk: no download
        shutil.copy2(flowers_src / name, data_dir)
    result = run_cli(
        [
            "data=flowers17",
            f"data.dir={data_dir}",
            "data.mirrors=[]",
            "trainer.max_epochs=1",
            f"tracking.uri={store_uri}",
            "trainer.enable_progress_bar=false",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    client, run = only_run(store_uri, "flowers17")
    assert run.info.status == "FINISHED"
    assert run.data.tags["input_shape"] == "64x64x3"
    assert run.data.params["params_total"] == str(64 * 64 * 3 * 128 + 128 + 128 * 17 + 17)
    assert {"val/acc", "test/acc"} <= set(run.data.metrics)
    artifact = "tables/accuracy_by_split.json"
    local = client.download_artifacts(run.info.run_id, artifact, str(tmp_path))
    table = json.loads(Path(local).read_text())
    assert [row[:2] for row in table["data"]] == [["train", 680], ["val", 340], ["test", 340]]
    assert (data_dir / "flowers17_64.npz").is_file()


# -- labels and splits -----------------------------------------------------------------


@pytest.mark.parametrize("split_id", [1, 3])
def test_splits_follow_the_split_file_and_labels_the_image_ids(data_dir, split_id):
    dm = loaded(data_dir, split_id=split_id)
    ids = flowers_split_ids()
    for split, prefix in (("train", "trn"), ("val", "val"), ("test", "tst")):
        expected_ids = ids[f"{prefix}{split_id}"].ravel().astype(int)
        assert dm.splits[split].y.tolist() == list((expected_ids - 1) // 80)
        # each RGB photo shows its class's colour: images and labels stayed paired
        for image_id, x, y in zip(expected_ids, dm.splits[split].images(), dm.splits[split].y):
            if flowers_mode(image_id) == "RGB":
                mean = (x * 255).reshape(-1, 3).mean(dim=0).numpy()
                assert np.abs(mean - FLOWERS_COLOURS[int(y)]).max() < 8, image_id
    assert np.bincount(dm.splits["train"].y.numpy()).tolist() == [40] * 17


def test_grayscale_and_cmyk_photos_become_rgb(data_dir):
    dm = loaded(data_dir)
    ids = flowers_split_ids()["trn1"].ravel().astype(int)
    x = dm.splits["train"].images()
    gray = [i for i, image_id in enumerate(ids) if flowers_mode(image_id) == "L"]
    cmyk = [i for i, image_id in enumerate(ids) if flowers_mode(image_id) == "CMYK"]
    assert gray and cmyk
    assert all(np.allclose(x[i, ..., 0], x[i, ..., 1]) for i in gray)  # gray stays gray
    assert all(x[i].std() > 0.01 for i in cmyk)  # not blank


def test_split_file_without_the_asked_split_is_a_clear_error(data_dir):
    ids = flowers_split_ids()
    savemat(data_dir / "datasplits.mat", {k: v for k, v in ids.items() if not k.endswith("2")})
    assert len(loaded(data_dir, split_id=1).splits["train"]) == 680
    with pytest.raises(DataError, match="has no variable trn2"):
        loaded(data_dir, split_id=2)


def test_split_file_with_overlapping_splits_is_refused(data_dir):
    ids = flowers_split_ids()
    ids["val1"] = ids["trn1"][:, :340]
    savemat(data_dir / "datasplits.mat", ids)
    with pytest.raises(DataError, match="more than one of trn1, val1 and tst1"):
        loaded(data_dir)


def test_split_file_that_is_not_matlab_is_refused(data_dir):
    (data_dir / "datasplits.mat").write_bytes(b"<html>not found</html>")
    with pytest.raises(DataError, match="cannot be read as a MATLAB file"):
        loaded(data_dir)


# -- the decoded cache -----------------------------------------------------------------


@pytest.fixture(scope="session")
def reference_train_images(prepared_src):
    """The 32x32 train images as the first run decoded them."""
    return loaded(prepared_src).splits["train"].x


def test_second_load_uses_the_cache_without_decoding(
    data_dir, decode_calls, reference_train_images
):
    dm = loaded(data_dir)
    assert decode_calls == []
    assert np.array_equal(dm.splits["train"].x, reference_train_images)


def _truncate(cache: Path, archive: Path) -> None:
    data = cache.read_bytes()
    cache.write_bytes(data[: len(data) // 2])


def _touch_archive(cache: Path, archive: Path) -> None:
    stat = archive.stat()
    os.utime(archive, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a newer download


def _fewer_images(cache: Path, archive: Path) -> None:
    save_cache(cache, np.zeros((1000, 32, 32, 3), np.uint8), archive)


def _other_size(cache: Path, archive: Path) -> None:
    save_cache(cache, np.zeros((1360, 64, 64, 3), np.uint8), archive)


@pytest.mark.slow  # decodes every photo again per case
@pytest.mark.parametrize("spoil", [_truncate, _touch_archive, _fewer_images, _other_size])
def test_untrustworthy_cache_is_rebuilt(data_dir, decode_calls, reference_train_images, spoil):
    spoil(data_dir / "flowers17_32.npz", data_dir / "17flowers.tgz")

    rebuilt = loaded(data_dir)
    assert len(decode_calls) == 1360
    assert np.array_equal(rebuilt.splits["train"].x, reference_train_images)
    decode_calls.clear()
    loaded(data_dir)  # and the rebuilt cache is trusted again
    assert decode_calls == []
    assert not [p for p in data_dir.iterdir() if p.name.startswith(".")]  # no temp files


def test_unwritable_data_dir_is_a_clear_error(data_dir, monkeypatch):
    # (root, which runs these tests, may write anywhere: a read-only folder cannot be made)
    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("denselab.data.flowers.tempfile.mkdtemp", read_only)
    (data_dir / "flowers17_32.npz").unlink()
    with pytest.raises(DataError, match="Permission denied.*writable folder"):
        loaded(data_dir)
    assert sorted(p.name for p in data_dir.iterdir()) == sorted(FILES)


@pytest.mark.slow  # decodes every photo twice
def test_each_image_size_has_its_own_cache(data_dir, decode_calls):
    dm = loaded(data_dir, image_size=128)
    assert dm.input_shape == (128, 128, 3) and len(decode_calls) == 1360
    assert {p.name for p in data_dir.glob("*.npz")} == {"flowers17_32.npz", "flowers17_128.npz"}


# -- broken archives -------------------------------------------------------------------


def test_archive_escaping_the_data_dir_is_refused(tmp_path, flowers_src):
    data_dir = tmp_path / "flowers17"
    data_dir.mkdir()
    shutil.copy2(flowers_src / "datasplits.mat", data_dir)
    with tarfile.open(data_dir / "17flowers.tgz", "w:gz") as tar:
        add_bytes(tar, "jpg/image_0001.jpg", b"x")
        add_bytes(tar, "../evil", b"x")
    with pytest.raises(DataError, match="'../evil', a path that climbs out"):
        loaded(data_dir)
    assert not (tmp_path / "evil").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flowers17"]
    assert sorted(p.name for p in data_dir.iterdir()) == sorted(FILES)  # no leftovers


def test_archive_missing_photos_is_refused(tmp_path, flowers_src):
    data_dir = tmp_path / "flowers17"
    data_dir.mkdir()
    shutil.copy2(flowers_src / "datasplits.mat", data_dir)
    with (
        tarfile.open(flowers_src / "17flowers.tgz") as full,
        tarfile.open(data_dir / "17flowers.tgz", "w:gz") as part,
    ):
        for info in full.getmembers():
            if info.name != "jpg/image_0700.jpg":
                part.addfile(info, full.extractfile(info) if info.isfile() else None)
    with pytest.raises(DataError, match="lacks 1 of the 1,360 photos .*first: image_0700.jpg"):
        loaded(data_dir)
    assert sorted(p.name for p in data_dir.iterdir()) == sorted(FILES)


# -- decoding one photo ----------------------------------------------------------------


def _striped(width: int, height: int) -> Image.Image:
    """Red, green, blue thirds along the long side: only green survives a centre crop."""
    pixels = np.zeros((height, width, 3), np.uint8)
    if width >= height:
        for k in range(3):
            pixels[:, k * width // 3 : (k + 1) * width // 3, k] = 255
    else:
        for k in range(3):
            pixels[k * height // 3 : (k + 1) * height // 3, :, k] = 255
    return Image.fromarray(pixels)


@pytest.mark.parametrize("width, height", [(300, 100), (100, 300)])
def test_decoding_crops_the_centre_square(tmp_path, width, height):
    path = tmp_path / "striped.png"
    _striped(width, height).save(path)
    square = image_decoding.decode_image(path, 16)
    assert square.shape == (16, 16, 3) and square.dtype == np.uint8
    assert (square[..., 1] > 200).all() and (square[..., [0, 2]] < 60).all()


@pytest.mark.parametrize("mode", ["L", "CMYK", "P", "RGBA", "LA", "I;16"])
def test_decoding_any_mode_gives_rgb(tmp_path, mode):
    image = Image.fromarray(np.full((40, 60, 3), (200, 120, 40), np.uint8))
    if mode == "P":
        image = image.convert("P")
        image.info["transparency"] = 0
    else:
        image = image.convert(mode)
    path = tmp_path / ("photo.jpg" if mode in ("L", "CMYK") else "photo.png")
    image.save(path, transparency=0) if mode == "P" else image.save(path)
    square = image_decoding.decode_image(path, 32)
    assert square.shape == (32, 32, 3) and square.dtype == np.uint8
    assert square.max() > 0


def test_undecodable_photo_is_a_clear_error(tmp_path):
    path = tmp_path / "image_0001.jpg"
    path.write_bytes(b"\xff\xd8\xff not really a jpeg")
    with pytest.raises(DataError, match="image_0001.jpg cannot be decoded"):
        image_decoding.decode_images([path], 32)
