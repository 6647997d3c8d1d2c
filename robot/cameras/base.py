"""The Camera protocol: connect / read -> Frame / disconnect (LeRobot-style)."""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Frame:
    """One camera frame. ``rgb`` (H, W, 3) uint8; ``depth`` (H, W) uint16 mm aligned to rgb, or None;
    ``stamp`` seconds on the camera's clock (hardware timestamp where the device has one);
    ``index`` a per-camera frame counter (a repeated index means the same frame was returned again)."""

    rgb: np.ndarray
    stamp: float
    depth: np.ndarray | None = None
    index: int = 0


class Camera(abc.ABC):
    name: str

    @abc.abstractmethod
    def connect(self) -> None: ...

    @abc.abstractmethod
    def read(self) -> Frame:
        """The next frame (blocking until one is available or the camera's timeout passes)."""

    @abc.abstractmethod
    def disconnect(self) -> None: ...

    @property
    @abc.abstractmethod
    def is_connected(self) -> bool: ...

    def __enter__(self) -> "Camera":
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        if self.is_connected:
            self.disconnect()
