"""The arm and camera of a simulated rig (ManiSkill or LIBERO): thin views onto one shared simulator.

A simulator here is anything with ``open()``, ``state() -> ArmState``, ``step(action)``, ``rgb(camera)``,
``sim_time`` and ``frame_index()``. Connecting a device opens the simulator (idempotent); disconnecting a
device leaves the simulator to its owner, because the arm and the camera share it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from robot.arms.base import Arm, ArmLimits, ArmState
from robot.cameras.base import Camera, Frame
from robot.errors import DeviceNotConnectedError


class _SimDevice:
    def __init__(self, sim: Any, name: str) -> None:
        self.sim, self.name = sim, name
        self._connected = False

    def connect(self) -> None:
        self.sim.open()
        self._connected = True

    def disconnect(self) -> None:
        self._connected = False

    @property
    def is_connected(self) -> bool:
        return self._connected

    def _require_connected(self, what: str) -> None:
        if not self._connected:
            raise DeviceNotConnectedError(f"{what}: not connected")


class SimulatedArm(_SimDevice, Arm):
    """The simulated Panda. `send_action` advances the simulator by one control period."""

    def __init__(self, sim: Any, name: str, limits: ArmLimits) -> None:
        super().__init__(sim, name)
        self.limits = limits

    def read_state(self) -> ArmState:
        self._require_connected(self.name)
        return self.sim.state()

    def send_action(self, action: np.ndarray) -> np.ndarray:
        self._require_connected(self.name)
        a = np.clip(np.asarray(action, dtype=np.float32).reshape(7), -1.0, 1.0)
        self.sim.step(a)
        return a


class SimulatedCamera(_SimDevice, Camera):
    """One of the simulator's RGB cameras (no depth)."""

    def read(self) -> Frame:
        self._require_connected(f"camera {self.name}")
        return Frame(rgb=self.sim.rgb(self.name), stamp=self.sim.sim_time, index=self.sim.frame_index())
