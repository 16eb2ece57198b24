"""Safe extraction: archives that would write outside their folder are refused whole."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
from helpers import add_bytes

from denselab.data.archive import safe_extract
from denselab.errors import DataError


def write_tar(path: Path, members: list[tarfile.TarInfo]) -> Path:
    """A gzipped tar with a harmless file first, then ``members`` (file bodies: b"x")."""
    with tarfile.open(path, "w:gz") as tar:
        add_bytes(tar, "jpg/image_0001.jpg", b"harmless")
        for member in members:
            body = io.BytesIO(b"x") if member.isfile() else None
            if member.isfile():
                member.size = 1
            tar.addfile(member, body)
    return path


def member(name: str, kind: bytes = tarfile.REGTYPE, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def every_file(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda out: member("../evil"), "climbs out of the folder"),
        (lambda out: member("jpg/../../evil"), "climbs out of the folder"),
        (lambda out: member(str(out / "evil")), "an absolute path"),
        (lambda out: member("jpg/link", tarfile.SYMTYPE, str(out / "evil")), "a link"),
        (lambda out: member("jpg/hard", tarfile.LNKTYPE, "../evil"), "a link"),
        (lambda out: member("jpg/fifo", tarfile.FIFOTYPE), "special file"),
    ],
    ids=["parent", "nested-parent", "absolute", "symlink", "hardlink", "fifo"],
)
def test_unsafe_member_is_refused_and_nothing_is_written(tmp_path, make, words):
    outside = tmp_path / "outside"
    outside.mkdir()
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    archive = write_tar(tmp_path / "archive.tgz", [make(outside)])
    before = every_file(tmp_path)

    with pytest.raises(DataError, match=words) as err:
        safe_extract(archive, data_dir / "extracted")

    message = str(err.value)
    assert "nothing was extracted" in message and "delete it and run again" in message
    assert "\n" not in message
    assert every_file(tmp_path) == before  # not even the harmless first member
    assert not (tmp_path / "evil").exists() and not (outside / "evil").exists()


def test_safe_archive_is_extracted_in_place(tmp_path):
    archive = write_tar(tmp_path / "archive.tgz", [member("jpg/files.txt")])
    safe_extract(archive, tmp_path / "out")
    assert (tmp_path / "out" / "jpg" / "image_0001.jpg").read_bytes() == b"harmless"
    assert (tmp_path / "out" / "jpg" / "files.txt").read_bytes() == b"x"


@pytest.mark.parametrize("content", [b"not a tar archive at all", b"\x1f\x8b\x08\x00trunc"])
def test_damaged_archive_is_a_clear_error(tmp_path, content):
    archive = tmp_path / "archive.tgz"
    archive.write_bytes(content)
    with pytest.raises(DataError, match="truncated or not a tar archive"):
        safe_extract(archive, tmp_path / "out")


def test_truncated_archive_is_a_clear_error(tmp_path):
    archive = write_tar(tmp_path / "archive.tgz", [member(f"jpg/{i}.txt") for i in range(200)])
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated or not a tar archive"):
        safe_extract(archive, tmp_path / "out")
