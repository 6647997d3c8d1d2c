"""A synthetic camera that behaves like a USB camera driver: frames at a fixed rate from its own thread, a
capture-to-delivery latency, and faults on demand (`unplug()` = the USB device vanishes mid-stream,
`stall()` = the stream silently stops). Used by tests, benchmarks and `wvl robot` dry runs.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from robot.cameras.base import Frame
from robot.cameras.threaded import ThreadedCamera
from robot.errors import DeviceNotConnectedError


@dataclass(frozen=True)
class SyntheticCameraConfig:
    name: str = "front"
    width: int = 64
    height: int = 64
    fps: float = 30.0
    depth: bool = False
    latency_s: float = 0.002  # capture -> delivery
    clock_offset_s: float = 0.0  # added to every stamp (a camera whose clock is off)
    rt_priority: int | None = None  # SCHED_FIFO priority of the reader thread (see ThreadedCamera)

    def __post_init__(self) -> None:
        if not (8 <= self.width <= 4096 and 8 <= self.height <= 4096):
            raise ValueError(f"camera {self.name}: width/height {self.width}x{self.height} outside 8..4096")
        if not 0 < self.fps <= 1000:
            raise ValueError(f"camera {self.name}: fps must be in (0, 1000], got {self.fps}")
        if self.latency_s < 0:
            raise ValueError(f"camera {self.name}: latency_s must be >= 0")


class SyntheticCamera(ThreadedCamera):
    def __init__(self, config: SyntheticCameraConfig = SyntheticCameraConfig()) -> None:
        super().__init__(config.name, warmup_s=max(1.0, 5.0 / config.fps), rt_priority=config.rt_priority)
        self.config = config
        self._unplugged = threading.Event()
        self._stalled = threading.Event()
        self._index = 0
        self._t0 = 0.0
        h, w = config.height, config.width
        yy, xx = np.mgrid[0:h, 0:w]
        # A smooth pattern that moves by one pixel per frame (compresses like a real image, not like noise).
        self._base = np.stack([(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)), ((xx + yy) * 127 // max(w + h - 2, 1))], -1).astype(np.uint8)
        self._depth = (500 + (yy * 1000 // max(h - 1, 1))).astype(np.uint16) if config.depth else None

    # Fault injection -------------------------------------------------------------------------------
    def unplug(self) -> None:
        """The device disappears: the next grab fails with the error a driver gives for a USB drop."""
        self._unplugged.set()

    def stall(self) -> None:
        """The stream stops delivering frames without any error (a hung driver)."""
        self._stalled.set()

    def resume(self) -> None:
        self._stalled.clear()

    # ThreadedCamera hooks --------------------------------------------------------------------------
    def _open(self) -> None:
        if self._unplugged.is_set():
            raise DeviceNotConnectedError(f"camera {self.name}: no such device (unplugged)")
        self._index = 0
        self._t0 = time.monotonic()

    def _close(self) -> None:
        pass

    def _grab(self, timeout_s: float) -> Frame | None:
        if self._unplugged.is_set():
            raise DeviceNotConnectedError("USB device disappeared (unplugged mid-stream)")
        if self._stalled.is_set():
            time.sleep(timeout_s)
            return None
        c = self.config
        capture = self._t0 + self._index / c.fps
        deliver = capture + c.latency_s
        wait = deliver - time.monotonic()
        if wait > timeout_s:
            time.sleep(timeout_s)
            return None
        if wait > 0:
            time.sleep(wait)
        i = self._index
        self._index += 1
        rgb = np.roll(self._base, i % c.width, axis=1)
        depth = None if self._depth is None else np.roll(self._depth, i % c.height, axis=0)
        return Frame(rgb=rgb, stamp=capture + c.clock_offset_s, depth=depth, index=i)
