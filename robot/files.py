"""File-system helpers shared by the robot's outbox / policy inbox and the learner's episode store.

Crash safety on POSIX needs the directory entry made durable as well as the file: after an atomic rename, fsync the
directory that holds it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def sha256_file(path: Path, bufsize: int = 1 << 20) -> str:
    """The hex SHA-256 of a file, read in ``bufsize`` blocks (policy weights can be gigabytes)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(bufsize):
            h.update(chunk)
    return h.hexdigest()


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file inside ``path`` durable; a file system that cannot fsync a directory is let be."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
