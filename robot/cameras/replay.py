"""Replay cameras: play back what a camera saw, through the same Camera protocol.

- `EpisodeReplayCamera` plays one camera of a recorded `Episode` (an object, or an ``.episode`` file as
  the outbox writes them): RGB (+ depth when recorded) with the recorded timestamps, paced in real time
  or as fast as it is read.
- RealSense recordings (``.db3``, what pyrealsense2 >= 2.59 records) are played by `RealSenseCamera` with
  ``playback_file`` set: the real librealsense pipeline (alignment, timestamps) runs on the recording.
  `make_replay_camera(path)` picks the right one from the file name.
"""

from __future__ import annotations

import time
from pathlib import Path

from robot.cameras.base import Camera, Frame
from robot.episode import Episode
from robot.errors import DeviceAlreadyConnectedError, DeviceNotConnectedError


class ReplayEndedError(DeviceNotConnectedError):
    """A replayed recording has no more frames."""


class EpisodeReplayCamera(Camera):
    """Plays ``episode.images[camera]`` (and ``depth[camera]``) frame by frame.

    ``realtime``: deliver frame t no earlier than its recorded time after `connect` (a live camera's pace);
    otherwise every `read` returns the next frame at once. ``loop``: start again at the end instead of
    raising `ReplayEndedError`. Stamps are the recorded timestamps (shifted by the loop count's duration).
    """

    def __init__(self, episode: Episode | str | Path, camera: str | None = None, name: str | None = None,
                 realtime: bool = False, loop: bool = False) -> None:
        if not isinstance(episode, Episode):
            path = Path(episode)
            try:
                episode = Episode.from_bytes(path.read_bytes())
            except FileNotFoundError as e:
                raise FileNotFoundError(f"replay camera: episode file {path} does not exist") from e
        cam = camera or episode.cameras[0]
        if cam not in episode.images:
            raise ValueError(f"replay camera: episode has no camera {cam!r}; it has {episode.cameras}")
        self.episode, self.camera, self.name = episode, cam, name or cam
        self.realtime, self.loop = realtime, loop
        self._i = 0
        self._t0 = 0.0
        self._connected = False

    def connect(self) -> None:
        if self._connected:
            raise DeviceAlreadyConnectedError(f"camera {self.name}: already connected")
        self._i, self._t0, self._connected = 0, time.monotonic(), True

    def disconnect(self) -> None:
        self._connected = False

    @property
    def is_connected(self) -> bool:
        return self._connected

    def __len__(self) -> int:
        return len(self.episode)

    def read(self, timeout_s: float | None = None) -> Frame:
        if not self._connected:
            raise DeviceNotConnectedError(f"camera {self.name}: not connected")
        ep, T = self.episode, len(self.episode)
        if self._i >= T and not self.loop:
            raise ReplayEndedError(f"camera {self.name}: replay of episode {ep.uuid} ended after {T} frames")
        lap, t = divmod(self._i, T)
        ts = ep.timestamps
        span = (ts[-1] - ts[0]) + (1.0 / ep.fps)
        stamp = float(ts[t] + lap * span)
        if self.realtime:
            due = self._t0 + (stamp - float(ts[0]))
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        depth = ep.depth[self.camera][t] if self.camera in ep.depth else None
        frame = Frame(rgb=ep.images[self.camera][t], stamp=stamp, depth=depth, index=self._i)
        self._i += 1
        return frame


def make_replay_camera(path: str | Path, name: str = "front", camera: str | None = None, realtime: bool = False,
                       loop: bool = False, depth: bool = True) -> Camera:
    """A replay camera for ``path``: a RealSense ``.db3`` recording, or an ``.episode`` file."""
    path = Path(path)
    if path.suffix == ".db3":
        from robot.cameras.realsense import RealSenseCamera, RealSenseConfig

        return RealSenseCamera(RealSenseConfig(name=name, playback_file=str(path), playback_realtime=realtime, depth=depth))
    return EpisodeReplayCamera(path, camera=camera, name=name, realtime=realtime, loop=loop)
