"""A camera whose device is read by a background thread (the recipe every driver-backed camera follows).

Named daemon thread, a stop event, a condition signalling new frames, a lock around the latest frame,
monotonic host timestamps, bounded joins. Readers choose:

- `read(timeout_s)`: block until a frame *newer than the last one returned* arrives (never the same frame
  twice); `StaleFrameError` after ``timeout_s``;
- `peek(max_age_s)`: the latest frame without waiting; `StaleFrameError` when it is older than ``max_age_s``.

When the device fails for good (`_grab` raises), the thread stores the error and exits; every later read
raises `DeviceNotConnectedError` naming the camera and the reason, so a control loop can end its episode
cleanly and keep the frames it already has.

Subclasses implement ``_open()``, ``_grab(timeout_s) -> Frame | None`` (None: nothing new yet) and ``_close()``.
"""

from __future__ import annotations

import abc
import logging
from collections import deque
import os
import threading
import time

from robot.cameras.base import Camera, Frame
from robot.errors import DeviceAlreadyConnectedError, DeviceNotConnectedError, StaleFrameError

log = logging.getLogger(__name__)


class ThreadedCamera(Camera):
    LOSSLESS_BUFFER = 32  # frames a lossless reader may hold unread before it stops pulling
    def __init__(self, name: str, warmup_s: float = 2.0, read_timeout_s: float = 0.5, lossless: bool = False,
                 rt_priority: int | None = None) -> None:
        self.name = name
        # SCHED_FIFO for the reader thread: with a real-time control loop, a reader preempted while holding the
        # GIL would stall the loop (priority inversion); give readers a priority just below the loop's.
        self.rt_priority = rt_priority
        # lossless: the thread grabs the next frame only after the last one was read (playback of a
        # recording as fast as it can be consumed); otherwise it keeps only the latest (a live camera).
        self.lossless = lossless
        self.warmup_s = warmup_s
        self.read_timeout_s = read_timeout_s
        self._lock = threading.Lock()
        self._new = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._latest: Frame | None = None
        self._received = 0.0  # monotonic host time the latest frame arrived
        self._last_returned = -1
        self._error: BaseException | None = None
        self._connected = False
        self.frames_received = 0
        self._pending: deque[Frame] = deque()  # lossless mode: frames not read yet, oldest first

    # ------------------------------------------------------------------ subclass hooks
    @abc.abstractmethod
    def _open(self) -> None: ...

    @abc.abstractmethod
    def _grab(self, timeout_s: float) -> Frame | None:
        """Block up to ``timeout_s`` for the next device frame; raise DeviceNotConnectedError when the
        device is gone for good (after the subclass' own reconnect attempts)."""

    @abc.abstractmethod
    def _close(self) -> None: ...

    # ------------------------------------------------------------------ lifecycle
    @property
    def is_connected(self) -> bool:
        return self._connected and self._error is None

    def connect(self) -> None:
        if self._connected:
            raise DeviceAlreadyConnectedError(f"camera {self.name}: already connected")
        self._open()
        self._stop.clear()
        self._error, self._latest, self._last_returned = None, None, -1
        self._pending.clear()
        self._connected = True
        self._thread = threading.Thread(target=self._run, name=f"camera-{self.name}", daemon=True)
        self._thread.start()
        # Warm-up: a camera that never delivers a first frame is an error now, not a stale loop later.
        with self._new:
            ok = self._new.wait_for(lambda: self._latest is not None or self._error is not None, timeout=self.warmup_s)
        if self._error is not None or not ok:
            err = self._error
            self.disconnect()
            if err is not None:
                raise DeviceNotConnectedError(f"camera {self.name}: failed during warm-up: {err}") from err
            raise StaleFrameError(f"camera {self.name}: no frame within the {self.warmup_s:.1f} s warm-up; is the stream running?")

    def disconnect(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            if self._thread.is_alive():
                log.warning("camera %s: reader thread did not stop within 2 s (device call blocked)", self.name)
            self._thread = None
        if self._connected:
            try:
                self._close()
            except Exception as e:  # closing a device that already vanished
                log.debug("camera %s: close failed: %s", self.name, e)
        self._connected = False

    def _run(self) -> None:
        if self.rt_priority is not None:
            try:
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(self.rt_priority))
            except (PermissionError, AttributeError) as e:
                log.warning("camera %s: reader thread priority %s not applied (%s)", self.name, self.rt_priority, e)
        while not self._stop.is_set():
            if self.lossless:  # back-pressure: keep pulling (drivers drop what is not pulled) up to the buffer
                with self._new:
                    if not self._new.wait_for(lambda: self._stop.is_set() or len(self._pending) < self.LOSSLESS_BUFFER, timeout=0.1):
                        continue
            try:
                frame = self._grab(0.1)
            except BaseException as e:
                log.error("camera %s: reader stopped: %s", self.name, e)
                with self._new:
                    self._error = e
                    self._new.notify_all()
                return
            if frame is None:
                continue
            with self._new:
                self._latest = frame
                if self.lossless:
                    self._pending.append(frame)
                self._received = time.monotonic()
                self.frames_received += 1
                self._new.notify_all()

    # ------------------------------------------------------------------ reads
    def _check(self) -> None:
        if not self._connected:
            raise DeviceNotConnectedError(f"camera {self.name}: not connected")
        if self._error is not None:
            # Keep the subclass (ReplayEndedError, ...) so callers can tell an end of recording from a drop.
            cls = type(self._error) if isinstance(self._error, DeviceNotConnectedError) else DeviceNotConnectedError
            raise cls(f"camera {self.name}: {self._error}") from self._error

    def read(self, timeout_s: float | None = None) -> Frame:
        timeout = self.read_timeout_s if timeout_s is None else timeout_s
        if self.lossless:
            return self._read_lossless(timeout)
        with self._new:
            self._check()
            ok = self._new.wait_for(
                lambda: self._error is not None or (self._latest is not None and self._latest.index > self._last_returned),
                timeout=timeout,
            )
            self._check()
            if not ok:
                raise StaleFrameError(f"camera {self.name}: no new frame for {timeout * 1e3:.0f} ms (stalled stream?)")
            self._last_returned = self._latest.index
            self._new.notify_all()
            return self._latest

    def _read_lossless(self, timeout: float) -> Frame:
        with self._new:
            if not self._connected:
                raise DeviceNotConnectedError(f"camera {self.name}: not connected")
            self._new.wait_for(lambda: self._pending or self._error is not None, timeout=timeout)
            if self._pending:  # frames taken before an error are still delivered, in order
                frame = self._pending.popleft()
                self._last_returned = frame.index
                self._new.notify_all()
                return frame
            self._check()
            raise StaleFrameError(f"camera {self.name}: no new frame for {timeout * 1e3:.0f} ms (stalled stream?)")

    def peek(self, max_age_s: float) -> Frame:
        with self._new:
            self._check()
            if self._latest is None or time.monotonic() - self._received > max_age_s:
                age = "never" if self._latest is None else f"{(time.monotonic() - self._received) * 1e3:.0f} ms ago"
                raise StaleFrameError(f"camera {self.name}: latest frame arrived {age} (max age {max_age_s * 1e3:.0f} ms)")
            self._last_returned = self._latest.index
            self._new.notify_all()
            return self._latest

    def age(self) -> float:
        """Seconds since the latest frame arrived (inf before the first)."""
        with self._lock:
            return float("inf") if self._latest is None else time.monotonic() - self._received
