"""The teleop device protocol and the reader-thread base every physical device uses.

`TeleopDevice`: ``connect() / read() -> TeleopCommand / disconnect()``, ``is_connected``, context manager.
`read()` never blocks: it returns the device's latest state plus at most one pending episode event (events
queue up, so a quick double press is not lost). ``stamp`` in the command is the monotonic time the device
last reported; when the device thread dies or the device vanishes, ``is_connected`` turns False and the
stamp stops advancing, so the safety watchdog holds the arm and the session ends the episode cleanly.

Optional capability: ``on_prompt(requested_outcome)`` - a session tells the device (a scripted operator)
which outcome the next demonstration should have ("success" or "near_success").
"""

from __future__ import annotations

import abc
import logging
import threading
import time
from collections import deque

import numpy as np

from teleop.command import EpisodeEvent, TeleopCommand

log = logging.getLogger(__name__)


class TeleopDevice(abc.ABC):
    name: str = "teleop"

    @abc.abstractmethod
    def connect(self) -> None: ...

    @abc.abstractmethod
    def read(self) -> TeleopCommand: ...

    @abc.abstractmethod
    def disconnect(self) -> None: ...

    @property
    @abc.abstractmethod
    def is_connected(self) -> bool: ...

    def __enter__(self) -> "TeleopDevice":
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        if self.is_connected:
            self.disconnect()


class ThreadedDevice(TeleopDevice):
    """A device polled by a named daemon thread. Subclasses implement ``_open()``, ``_poll(timeout_s)`` (read
    what the device sent, update state through `_set_axes` / `_set_gripper` / `_push_event`; raise
    ConnectionError/OSError when the device is gone) and ``_close()``."""

    poll_timeout_s = 0.02

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._axes = np.zeros(6, np.float32)
        self._gripper: float | None = None
        self._enabled = True
        self._events: deque[EpisodeEvent] = deque(maxlen=32)
        self._stamp: float | None = None
        self._error: BaseException | None = None
        self._connected = False

    @abc.abstractmethod
    def _open(self) -> None: ...

    @abc.abstractmethod
    def _poll(self, timeout_s: float) -> None: ...

    @abc.abstractmethod
    def _close(self) -> None: ...

    # state updates (reader thread) ---------------------------------------------------------------
    def _set_axes(self, axes: np.ndarray) -> None:
        with self._lock:
            self._axes = np.asarray(axes, dtype=np.float32).reshape(6).copy()

    def _set_gripper(self, g: float | None) -> None:
        with self._lock:
            self._gripper = g

    def _set_enabled(self, on: bool) -> None:
        with self._lock:
            self._enabled = bool(on)

    def _push_event(self, ev: EpisodeEvent) -> None:
        with self._lock:
            self._events.append(ev)
        log.info("%s: %s", self.name, ev.value)

    # lifecycle -----------------------------------------------------------------------------------
    @property
    def is_connected(self) -> bool:
        return self._connected and self._error is None

    @property
    def error(self) -> BaseException | None:
        return self._error

    def connect(self) -> None:
        if self._connected:
            raise ConnectionError(f"teleop {self.name}: already connected")
        self._open()
        self._stop.clear()
        self._error = None
        self._stamp = time.monotonic()
        self._connected = True
        self._thread = threading.Thread(target=self._run, name=f"teleop-{self.name}", daemon=True)
        self._thread.start()

    def disconnect(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
            self._thread = None
        if self._connected:
            try:
                self._close()
            except Exception as e:
                log.debug("teleop %s: close failed: %s", self.name, e)
        self._connected = False

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._poll(self.poll_timeout_s)
            except BaseException as e:
                log.error("teleop %s: device lost: %s", self.name, e)
                with self._lock:
                    self._error = e
                    self._axes[:] = 0  # never keep moving on the last deflection of a vanished device
                return
            with self._lock:
                self._stamp = time.monotonic()

    def read(self) -> TeleopCommand:
        with self._lock:
            ev = self._events.popleft() if self._events else None
            return TeleopCommand(twist=self._axes.copy(), gripper=self._gripper, enabled=self._enabled and self._error is None,
                                 event=ev, stamp=self._stamp)
