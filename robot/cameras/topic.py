"""A camera fed by pushed frames (a ROS image subscription, a network stream): the policy node's camera.

The subscriber callback calls `push(rgb, stamp, depth)`; readers get the same semantics as any device
camera (`ThreadedCamera`: fresh frames only, `StaleFrameError` when the topic goes quiet).
"""

from __future__ import annotations

import queue

import numpy as np

from robot.cameras.base import Frame
from robot.cameras.threaded import ThreadedCamera


class TopicCamera(ThreadedCamera):
    def __init__(self, name: str = "front", warmup_s: float = 5.0) -> None:
        super().__init__(name, warmup_s=warmup_s)
        self._q: queue.Queue[Frame] = queue.Queue(maxsize=2)
        self._n = 0

    def push(self, rgb: np.ndarray, stamp: float, depth: np.ndarray | None = None) -> None:
        """Called from the subscription thread; keeps only the newest frames (a slow reader drops old ones)."""
        frame = Frame(rgb=np.asarray(rgb), stamp=float(stamp), depth=depth, index=self._n)
        self._n += 1
        try:
            self._q.put_nowait(frame)
        except queue.Full:
            try:
                self._q.get_nowait()
            except queue.Empty:
                pass
            self._q.put_nowait(frame)

    def latest_stamp(self) -> float | None:
        """The stamp of the newest frame taken from the topic (None before the first): a rig waits on it after a reset."""
        with self._lock:
            return None if self._latest is None else self._latest.stamp

    def _open(self) -> None:
        pass

    def _close(self) -> None:
        pass

    def _grab(self, timeout_s: float) -> Frame | None:
        try:
            return self._q.get(timeout=timeout_s)
        except queue.Empty:
            return None
