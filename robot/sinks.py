"""Episode sinks: where finished episodes go (``EpisodeSink = Callable[[Episode], None]``).

The learner link's durable outbox (`robot.link.outbox.Outbox.put`) is the production sink. `FolderSink` is the
fallback the single-process `wvl robot` uses without a learner: each episode is written as
``<folder>/<uuid>.episode`` (``Episode.to_bytes()``), atomically (temp file, fsync, rename, fsync of the
folder), so a crash never leaves a half-written episode that looks complete.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

from robot.episode import Episode

log = logging.getLogger(__name__)

EpisodeSink = Callable[[Episode], None]
EPISODE_SUFFIX = ".episode"


class FolderSink:
    def __init__(self, folder: str | os.PathLike, codec: str = "raw") -> None:
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise PermissionError(f"outbox folder {self.folder}: cannot create it ({e})") from e
        if not os.access(self.folder, os.W_OK):
            raise PermissionError(f"outbox folder {self.folder}: not writable")
        self.codec = codec
        self.written: list[Path] = []

    def __call__(self, episode: Episode) -> None:
        final = self.folder / f"{episode.uuid}{EPISODE_SUFFIX}"
        tmp = self.folder / f".{episode.uuid}{EPISODE_SUFFIX}.tmp"
        data = episode.to_bytes(self.codec)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self.written.append(final)
        log.info("episode %s (%s, %d steps) -> %s", episode.uuid[:8], episode.outcome, len(episode), final)

    def episodes(self) -> list[Path]:
        return sorted(self.folder.glob(f"*{EPISODE_SUFFIX}"))


def read_episode_file(path: str | os.PathLike) -> Episode:
    return Episode.from_bytes(Path(path).read_bytes())
