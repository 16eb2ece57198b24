"""Extracting downloaded tar archives without letting them write anywhere else.

A tar member can name any path (``../../.bashrc``, ``/etc/passwd``) or be a link to one,
and a plain ``extractall`` follows them. Every member is checked before the first byte is
written, so a hostile or broken archive is refused whole and leaves nothing behind;
Python's own ``filter="data"`` then guards the extraction itself a second time.
"""

from __future__ import annotations

import tarfile
import zlib
from pathlib import Path, PurePosixPath

from denselab.errors import DataError

# Python's extraction filters came in 3.12 and were backported to 3.10.12 and 3.11.4; the
# checks below stand on their own where they are missing.
_DATA_FILTER = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
_FilterError = getattr(tarfile, "FilterError", ())


def unsafe_reason(member: tarfile.TarInfo) -> str | None:
    """Why extracting ``member`` could write outside the target folder, or None if safe."""
    name = member.name.replace("\\", "/")
    path = PurePosixPath(name)
    if path.is_absolute() or (len(name) > 1 and name[1] == ":"):  # /etc/x, C:/x
        return "an absolute path"
    if ".." in path.parts:
        return "a path that climbs out of the folder with '..'"
    if member.issym() or member.islnk():
        return "a link"
    if not (member.isfile() or member.isdir()):
        return "a device, pipe or other special file"
    return None


def safe_extract(archive: Path, target: Path) -> None:
    """Extract the tar archive (gzip or not) into ``target``, or raise DataError unextracted."""
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for member in members:
                reason = unsafe_reason(member)
                if reason:
                    raise DataError(
                        f"{archive} holds {member.name!r}, {reason}, so nothing was extracted "
                        f"from it; it is not the real dataset: delete it and run again to "
                        "download a fresh copy."
                    )
            tar.extractall(target, members=members, **_DATA_FILTER)
    except _FilterError as err:  # what our checks missed, caught by Python's filter
        raise DataError(
            f"{archive} holds a member that would be written outside {target} ({err}); it "
            "is not the real dataset: delete it and run again to download a fresh copy."
        ) from None
    except (tarfile.TarError, EOFError, zlib.error) as err:
        raise DataError(
            f"{archive} is truncated or not a tar archive ({err}); delete it and run again "
            "to download a fresh copy."
        ) from None
