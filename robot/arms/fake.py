"""A kinematic stand-in for an arm: integrates EE delta commands, with a command latency and faults on
demand. For tests, benchmarks and dry runs of the control stack without a simulator or hardware.

State: the EE position moves by ``action[:3] * limits.max_translation_m`` per command; orientation is kept
as roll-pitch-yaw and integrated the same way; the gripper opening follows the target at ``gripper_speed``
per command. `sent` keeps every command actually received (what a test inspects to prove the arm held).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

import numpy as np

from robot.arms.base import Arm, ArmLimits, ArmState
from robot.errors import DeviceAlreadyConnectedError, DeviceNotConnectedError


def rpy_to_quat_xyzw(rpy: np.ndarray) -> np.ndarray:
    r, p, y = (float(v) / 2 for v in rpy)
    cr, sr, cp, sp, cy, sy = math.cos(r), math.sin(r), math.cos(p), math.sin(p), math.cos(y), math.sin(y)
    return np.array([sr * cp * cy - cr * sp * sy, cr * sp * cy + sr * cp * sy, cr * cp * sy - sr * sp * cy, cr * cp * cy + sr * sp * sy])


@dataclass(frozen=True)
class KinematicArmConfig:
    name: str = "kinematic"
    start_xyz: tuple[float, float, float] = (0.0, 0.0, 0.3)
    start_rpy: tuple[float, float, float] = (math.pi, 0.0, 0.0)  # gripper pointing down
    max_translation_m: float = 0.05  # what action 1.0 means per step
    max_rotation_rad: float = 0.1
    gripper_speed: float = 0.5  # opening change per command
    command_latency_s: float = 0.0  # send_action blocks this long (a driver round trip)
    # A kinematic stand-in has no physical base: it reports its pose in whatever frame the rig's safety box is
    # stated in (the dry rig stands in for the simulated one: world).
    pose_frame: str = "base"


class KinematicArm(Arm):
    def __init__(self, config: KinematicArmConfig = KinematicArmConfig(), clock=time.monotonic) -> None:
        self.config = config
        self.name = config.name
        self.limits = ArmLimits(config.max_translation_m, config.max_rotation_rad, config.pose_frame)
        self._clock = clock
        self._connected = False
        self._lost = threading.Event()
        self.sent: list[np.ndarray] = []
        self.reset()

    def reset(self) -> None:
        c = self.config
        self.xyz = np.array(c.start_xyz, dtype=np.float64)
        self.rpy = np.array(c.start_rpy, dtype=np.float64)
        self.gripper = 1.0
        self.sent = []

    def connect(self) -> None:
        if self._connected:
            raise DeviceAlreadyConnectedError(f"{self.name}: already connected")
        if self._lost.is_set():
            raise DeviceNotConnectedError(f"{self.name}: controller unreachable")
        self._connected = True

    def disconnect(self) -> None:
        self._connected = False

    @property
    def is_connected(self) -> bool:
        return self._connected and not self._lost.is_set()

    def lose_connection(self) -> None:
        """The controller stops answering (network cable, controller fault)."""
        self._lost.set()

    def _check(self) -> None:
        if not self._connected:
            raise DeviceNotConnectedError(f"{self.name}: not connected")
        if self._lost.is_set():
            raise DeviceNotConnectedError(f"{self.name}: controller stopped answering")

    def read_state(self) -> ArmState:
        self._check()
        ee = np.concatenate([self.xyz, rpy_to_quat_xyzw(self.rpy)]).astype(np.float32)
        joints = np.concatenate([self.xyz, self.rpy, [self.gripper * 0.04, self.gripper * 0.04]]).astype(np.float32)
        return ArmState(joints=joints, ee_pose=ee, gripper=float(self.gripper), stamp=float(self._clock()))

    def send_action(self, action: np.ndarray) -> np.ndarray:
        self._check()
        a = np.asarray(action, dtype=np.float32).reshape(7)
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{self.name}: refusing a non-finite command {a} (the safety filter should have held)")
        a = np.clip(a, -1.0, 1.0)
        if self.config.command_latency_s > 0:
            time.sleep(self.config.command_latency_s)
        self.xyz = self.xyz + a[:3] * self.limits.max_translation_m
        self.rpy = self.rpy + a[3:6] * self.limits.max_rotation_rad
        target = 1.0 if a[6] > 0 else 0.0
        step = np.clip(target - self.gripper, -self.config.gripper_speed, self.config.gripper_speed)
        self.gripper = float(self.gripper + step)
        self.sent.append(a.copy())
        return a
