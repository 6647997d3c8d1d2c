"""From a device's `TeleopCommand` to the robot: deadband, device -> base axis remap, speeds, 7-d action.

The mapping is the pure core every device shares (robosuite, serl and GELLO all hard-code a version of it
per device; here the YAML of each device holds its numbers):

    deflection d (6,) in [-1, 1], device frame
      -> deadband (|d| < deadband -> 0, the rest rescaled so output stays continuous)
      -> base = [R @ d[:3], R @ d[3:]]            R: 3x3 device -> robot base rotation/sign matrix
      -> twist = base * [linear_speed_m_s]*3 + [angular_speed_rad_s]*3      (m/s, rad/s, base frame)
      -> action[:6] = twist / hz / arm limits   (clipped to [-1, 1]);  action[6] = gripper target
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from robot.arms.base import ArmLimits
from robot.config_dict import dataclass_from_dict
from teleop.command import TeleopCommand


@dataclass(frozen=True)
class TeleopMapping:
    linear_speed_m_s: float = 0.15  # at full deflection
    angular_speed_rad_s: float = 0.5
    deadband: float = 0.05
    # Device -> robot base frame, row-major 3x3 (applied to translation and rotation alike).
    axis_remap: tuple[float, ...] = (1, 0, 0, 0, 1, 0, 0, 0, 1)

    def __post_init__(self) -> None:
        for name in ("linear_speed_m_s", "angular_speed_rad_s"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"mapping.{name}: must be a positive number, got {v!r}")
        if not 0 <= self.deadband < 1:
            raise ValueError(f"mapping.deadband: must be in [0, 1), got {self.deadband}")
        r = np.asarray(self.axis_remap, dtype=float)
        if r.shape != (9,) or not np.all(np.isfinite(r)):
            raise ValueError(f"mapping.axis_remap: expected 9 numbers (a row-major 3x3), got {self.axis_remap!r}")
        object.__setattr__(self, "axis_remap", tuple(float(x) for x in r))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TeleopMapping":
        return dataclass_from_dict(cls, d, "mapping")

    @property
    def remap(self) -> np.ndarray:
        return np.asarray(self.axis_remap, dtype=np.float64).reshape(3, 3)

    def base_twist(self, cmd: TeleopCommand) -> np.ndarray:
        """(6,) m/s and rad/s in the robot base frame (what MoveIt Servo's TwistStamped carries)."""
        d = np.nan_to_num(np.asarray(cmd.twist, dtype=np.float64), nan=0.0, posinf=1.0, neginf=-1.0)
        d = np.clip(d, -1.0, 1.0)
        if self.deadband > 0:
            mag = np.maximum(np.abs(d) - self.deadband, 0.0) / (1.0 - self.deadband)
            d = np.sign(d) * mag
        R = self.remap
        base = np.concatenate([R @ d[:3], R @ d[3:]])
        return base * np.array([self.linear_speed_m_s] * 3 + [self.angular_speed_rad_s] * 3)

    def to_action(self, cmd: TeleopCommand, hz: float, limits: ArmLimits, last_gripper: float = 1.0) -> np.ndarray:
        """(7,) float32 action of the Episode contract for one control step at ``hz``."""
        tw = self.base_twist(cmd) / hz  # metres / radians this step
        a = np.empty(7, dtype=np.float32)
        a[:3] = np.clip(tw[:3] / limits.max_translation_m, -1, 1)
        a[3:6] = np.clip(tw[3:] / limits.max_rotation_rad, -1, 1)
        a[6] = last_gripper if cmd.gripper is None else cmd.gripper
        return a

    def deflection_for_action(self, action: np.ndarray, hz: float, limits: ArmLimits) -> np.ndarray:
        """Inverse of `to_action` for the motion part (no deadband): what a scripted operator pushes."""
        a = np.asarray(action, dtype=np.float64)
        base = np.concatenate([a[:3] * limits.max_translation_m, a[3:6] * limits.max_rotation_rad]) * hz
        base /= np.array([self.linear_speed_m_s] * 3 + [self.angular_speed_rad_s] * 3)
        Rinv = np.linalg.pinv(self.remap)
        d = np.concatenate([Rinv @ base[:3], Rinv @ base[3:]])
        # Undo the deadband: a small wanted motion needs a deflection just past the band.
        d = np.where(np.abs(d) > 1e-9, np.sign(d) * (np.abs(d) * (1.0 - self.deadband) + self.deadband), 0.0)
        return np.clip(d, -1.0, 1.0).astype(np.float32)
