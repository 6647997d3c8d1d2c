"""The Arm protocol: connect / read_state / send_action / disconnect.

Actions are the 7-d contract of `robot.episode`: EE delta xyz and delta rpy normalised to [-1, 1]
(the rig's `ArmLimits` say what 1.0 means in metres / radians per control step) and a gripper target
(-1 close, +1 open).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ArmState:
    """Robot state at ``stamp`` (s). joints (J,) rad; ee_pose (7,) xyz m + quaternion xyzw in the arm's
    `ArmLimits.pose_frame` (the base frame, except ManiSkill's world frame); gripper opening 0 (closed) .. 1 (open)."""

    joints: np.ndarray
    ee_pose: np.ndarray
    gripper: float
    stamp: float


@dataclass(frozen=True)
class ArmLimits:
    """What a normalised action of 1.0 means on this arm, per control step, and the frame its EE pose
    (`ArmState.ee_pose`) is reported in: the safety filter's workspace box must be stated in that frame."""

    max_translation_m: float = 0.1
    max_rotation_rad: float = 0.1
    pose_frame: str = "base"  # base: the arm's base frame | world: a simulator's world frame (ManiSkill)


class Arm(abc.ABC):
    name: str
    limits: ArmLimits = ArmLimits()

    @abc.abstractmethod
    def connect(self) -> None: ...

    @abc.abstractmethod
    def read_state(self) -> ArmState: ...

    @abc.abstractmethod
    def send_action(self, action: np.ndarray) -> np.ndarray:
        """Command one 7-d action; returns the action actually sent (after any device-side clipping)."""

    @abc.abstractmethod
    def disconnect(self) -> None: ...

    @property
    @abc.abstractmethod
    def is_connected(self) -> bool: ...

    def __enter__(self) -> "Arm":
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        if self.is_connected:
            self.disconnect()
