"""Reading several cameras as one observation: time-aligned, with stale and repeated frames detected.

`CameraGroup.read()` returns one frame per camera. For cameras with a reader thread (`ThreadedCamera`) it
takes the latest frame when it is fresh (arrived within ``max_age_s``) and otherwise waits up to
``timeout_s`` for a new one, raising `StaleFrameError` when none comes (a stalled stream is an error, never
a silently reused frame). Cameras whose stamps lie more than ``max_skew_s`` behind the newest are read
once more so the set is aligned; the remaining skew is reported. A frame whose index equals the one
returned last time for that camera is reported as ``repeated`` (the control loop records it per step).

Other cameras (simulated, replay, a recording played losslessly) are read with their blocking `read()`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from robot.cameras.base import Camera, Frame
from robot.cameras.threaded import ThreadedCamera
from robot.errors import StaleFrameError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GroupRead:
    frames: dict[str, Frame]
    skew_s: float  # newest stamp - oldest stamp across cameras
    repeated: dict[str, bool]  # the camera returned the same frame as in the previous read


class CameraGroup:
    def __init__(self, cameras: dict[str, Camera], max_age_s: float = 0.1, timeout_s: float = 0.5, max_skew_s: float = 0.02) -> None:
        if not cameras:
            raise ValueError("cameras: at least one camera is required")
        if max_age_s <= 0 or timeout_s <= 0 or max_skew_s < 0:
            raise ValueError(f"camera group: max_age_s ({max_age_s}) and timeout_s ({timeout_s}) must be > 0, max_skew_s >= 0")
        self.cameras = dict(cameras)
        self.max_age_s, self.timeout_s, self.max_skew_s = max_age_s, timeout_s, max_skew_s
        self._last_index: dict[str, int] = {}
        self.repeats = {n: 0 for n in self.cameras}
        self.realigned = 0

    def connect(self) -> None:
        for c in self.cameras.values():
            if not c.is_connected:
                c.connect()

    def disconnect(self) -> None:
        for c in self.cameras.values():
            if c.is_connected:
                c.disconnect()

    def reset(self) -> None:
        """New episode: forget the last indices (the first frame of an episode is never a repeat)."""
        self._last_index.clear()
        self.repeats = {n: 0 for n in self.cameras}

    def _read_one(self, cam: Camera) -> Frame:
        if isinstance(cam, ThreadedCamera) and not cam.lossless:
            try:
                return cam.peek(self.max_age_s)
            except StaleFrameError:
                return cam.read(self.timeout_s)  # raises StaleFrameError when the stream really stalled
        if isinstance(cam, ThreadedCamera):  # a recording played losslessly: every frame, in order
            return cam.read(self.timeout_s)
        return cam.read()

    def read(self) -> GroupRead:
        frames = {name: self._read_one(cam) for name, cam in self.cameras.items()}
        if len(frames) > 1 and self.max_skew_s > 0:
            newest = max(f.stamp for f in frames.values())
            behind = [n for n, f in frames.items() if newest - f.stamp > self.max_skew_s and isinstance(self.cameras[n], ThreadedCamera)]
            for n in behind:  # one more frame from each lagging camera
                frames[n] = self.cameras[n].read(self.timeout_s)
            if behind:
                self.realigned += 1
        stamps = [f.stamp for f in frames.values()]
        skew = max(stamps) - min(stamps)
        if len(frames) > 1 and skew > self.max_skew_s:
            log.debug("cameras misaligned by %.1f ms after re-reading", skew * 1e3)
        repeated = {}
        for n, f in frames.items():
            repeated[n] = self._last_index.get(n) == f.index
            if repeated[n]:
                self.repeats[n] += 1
            self._last_index[n] = f.index
        return GroupRead(frames=frames, skew_s=skew, repeated=repeated)
