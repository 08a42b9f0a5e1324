"""Files written so that a reader never sees half of one, and what a killed write leaves behind."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old file or the new one, never half.

    The temporary file is ``.NAME.XXXXXXXX.tmp`` beside ``path`` (:func:`stale_temp_files` finds
    those a killed process left).
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def stale_temp_files(directory: Path, names: list[str]) -> list[Path]:
    """The temporary files :func:`atomic_write` may have left for files ``names`` of ``directory``.

    Matched exactly (mkstemp's eight random characters), so that the document ``a`` never takes
    the temporary files of a document ``a.atom`` for its own.
    """
    pattern = re.compile(
        r"\.(?:" + "|".join(re.escape(name) for name in names) + r")\.[A-Za-z0-9_]{8}\.tmp"
    )
    try:
        return [path for path in directory.iterdir() if pattern.fullmatch(path.name)]
    except OSError:
        return []


__all__ = ["atomic_write", "stale_temp_files"]
