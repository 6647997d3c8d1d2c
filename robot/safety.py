"""The safety filter between whoever commands (teleop or policy) and the arm.

`SafetyFilter.clamp` takes one 7-d action of the Episode contract (EE delta xyz and delta rpy normalised
to [-1, 1] by the arm's `ArmLimits`, gripper target -1 close .. +1 open) and returns the action that may
be sent, plus a bit mask of the rules that fired. Rules, in the order they are applied:

=============  ===================================================================================
``ESTOP``      latched e-stop (`estop()`): hold until `release_estop()` (an explicit operator action)
``DEADMAN``    the command source says it is not enabled (teleop deadman released): hold
``WATCHDOG``   the command is older than ``watchdog_timeout_s`` (the source stopped talking): hold
``NONFINITE``  NaN/inf anywhere in the action: hold
``STARTUP``    start-up guard: a first command after `reset` that would move farther than
               ``startup_max_*`` is refused (``startup_mode="refuse"``: hold until a small command
               arrives - a stick pushed at the start must be released; the runner gives up after a
               while) or let through ramped (``"ramp"``: for delta policies whose first action is
               naturally large). From the first accepted command the step limits ramp up from
               1/ramp_steps to full over ``ramp_steps`` steps (``RAMP`` when the ramp clipped)
``GRIPPER``    gripper target outside [-1, 1] (clipped); in ``binary`` mode the target is snapped to +-1
``WORKSPACE``  the EE target (current position + step) leaves the workspace box: clipped onto the box
``TRANSLATION``/``ROTATION``  the step is longer than ``max_translation_m`` / ``max_rotation_rad``:
               scaled down, direction kept
=============  ===================================================================================

*Hold* means zero EE motion with the gripper kept at its last accepted target (a held object is not
dropped). Every step where any rule fired is an *intervention*: the runner writes the mask per step into
``Episode.extras["safety_flags"]``, ``Episode.interventions`` and the per-rule counts into
``Episode.info["safety"]``. The e-stop acts on the next `clamp` call, i.e. within one control period.
"""

from __future__ import annotations

import enum
import logging
import math
import threading
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from robot.arms.base import ArmLimits, ArmState

log = logging.getLogger(__name__)


class SafetyFlag(enum.IntFlag):
    NONE = 0
    ESTOP = 1
    DEADMAN = 2
    WATCHDOG = 4
    NONFINITE = 8
    STARTUP = 16
    RAMP = 32
    GRIPPER = 64
    WORKSPACE = 128
    TRANSLATION = 256
    ROTATION = 512


RULES: tuple[SafetyFlag, ...] = tuple(f for f in SafetyFlag if f is not SafetyFlag.NONE)


def flag_names(mask: int) -> list[str]:
    return [f.name.lower() for f in RULES if mask & f]


@dataclass(frozen=True)
class SafetyConfig:
    """Limits of the safety filter. Lengths in metres, angles in radians, all in the arm's base frame."""

    workspace_low: tuple[float, float, float] = (-0.6, -0.6, 0.0)
    workspace_high: tuple[float, float, float] = (0.6, 0.6, 0.7)
    max_translation_m: float = 0.05  # per control step (0.5 m/s at 10 Hz)
    max_rotation_rad: float = 0.1  # per control step
    gripper_mode: str = "binary"  # "binary": snap to -1/+1 at gripper_threshold; "continuous": clip only
    gripper_threshold: float = 0.0
    startup_max_translation_m: float = 0.02  # the first command may move at most this far ...
    startup_max_rotation_rad: float = 0.05  # ... and turn at most this much, else it is refused
    startup_mode: str = "refuse"  # "refuse": hold while the first command is too far; "ramp": execute it ramped in
    ramp_steps: int = 10  # after the first accepted command, step limits grow to full over this many steps
    watchdog_timeout_s: float = 0.3  # hold when the newest command is older than this (3 periods at 10 Hz)
    require_enabled: bool = True  # honour the source's deadman flag

    def __post_init__(self) -> None:
        for name in ("workspace_low", "workspace_high"):
            v = getattr(self, name)
            if len(v) != 3 or not all(isinstance(x, (int, float)) and math.isfinite(x) for x in v):
                raise ValueError(f"safety.{name}: expected 3 finite numbers (m), got {v!r}")
            object.__setattr__(self, name, tuple(float(x) for x in v))
        if any(lo >= hi for lo, hi in zip(self.workspace_low, self.workspace_high)):
            raise ValueError(f"safety.workspace_low: {self.workspace_low} must be below workspace_high {self.workspace_high} on every axis")
        for name in ("max_translation_m", "max_rotation_rad", "startup_max_translation_m", "startup_max_rotation_rad", "watchdog_timeout_s"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"safety.{name}: must be a positive number, got {v!r}")
        if self.gripper_mode not in ("binary", "continuous"):
            raise ValueError(f"safety.gripper_mode: {self.gripper_mode!r} is not 'binary' or 'continuous'")
        if not -1 < self.gripper_threshold < 1:
            raise ValueError(f"safety.gripper_threshold: must be inside (-1, 1), got {self.gripper_threshold}")
        if self.startup_mode not in ("refuse", "ramp"):
            raise ValueError(f"safety.startup_mode: {self.startup_mode!r} is not 'refuse' or 'ramp'")
        if not isinstance(self.ramp_steps, int) or self.ramp_steps < 1:
            raise ValueError(f"safety.ramp_steps: must be an int >= 1, got {self.ramp_steps!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SafetyConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"safety: unknown keys {sorted(unknown)}; valid keys: {sorted(names)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class SafetyResult:
    action: np.ndarray  # (7,) float32, what may be sent
    flags: SafetyFlag
    held: bool = False  # the command was replaced by a hold (no EE motion)

    @property
    def intervened(self) -> bool:
        return self.flags != SafetyFlag.NONE


class SafetyFilter:
    """Stateful per episode: call `reset(state)` before the first command of every episode.

    Thread-safety: `estop()` / `release_estop()` may be called from any thread (a button callback, a ROS
    subscription); everything else from the control thread.
    """

    def __init__(self, config: SafetyConfig = SafetyConfig(), limits: ArmLimits = ArmLimits()) -> None:
        self.config = config
        self.limits = limits
        self._estop = threading.Event()
        self._estop_reason = ""
        self.counts: dict[str, int] = {}
        self.steps = 0
        self.reset()

    # ------------------------------------------------------------------ episode state
    def reset(self, state: ArmState | None = None) -> None:
        """New episode: re-arm the start-up guard, zero the counts. The e-stop stays latched."""
        self._armed = False
        self._refusing = False
        self._ramp_i = 0
        self._last_gripper = 1.0 if state is None or state.gripper >= 0.5 else -1.0
        self.counts = {f.name.lower(): 0 for f in RULES}
        self.counts["interventions"] = 0
        self.steps = 0
        self._watchdog_active = False

    # ------------------------------------------------------------------ e-stop
    def estop(self, reason: str = "e-stop pressed") -> None:
        if not self._estop.is_set():
            log.warning("SAFETY: e-stop latched (%s); the arm holds until release_estop()", reason)
        self._estop_reason = reason
        self._estop.set()

    def release_estop(self) -> None:
        if self._estop.is_set():
            log.warning("SAFETY: e-stop released by the operator")
        self._estop.clear()

    @property
    def estopped(self) -> bool:
        return self._estop.is_set()

    # ------------------------------------------------------------------ the filter
    def hold_action(self) -> np.ndarray:
        return np.array([0, 0, 0, 0, 0, 0, self._last_gripper], dtype=np.float32)

    def clamp(self, action: np.ndarray, state: ArmState, *, now: float, command_stamp: float | None = None,
              enabled: bool = True) -> SafetyResult:
        """Filter one command. ``now`` and ``command_stamp`` (when the command was issued / is meant for)
        are on the control loop's clock; ``command_stamp=None`` means "issued now"."""
        c = self.config
        flags = SafetyFlag.NONE
        self.steps += 1
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (7,):
            # A wrong-shaped command is a programming error upstream, but the arm must still hold.
            log.error("SAFETY: command of shape %s is not a 7-d action; holding", a.shape)
            a = np.full(7, np.nan)

        if self._estop.is_set():
            flags |= SafetyFlag.ESTOP
        if c.require_enabled and not enabled:
            flags |= SafetyFlag.DEADMAN
        age = 0.0 if command_stamp is None else now - command_stamp
        if age > c.watchdog_timeout_s:
            flags |= SafetyFlag.WATCHDOG
            if not self._watchdog_active:
                log.warning("SAFETY: watchdog: newest command is %.0f ms old (limit %.0f ms); holding",
                            age * 1e3, c.watchdog_timeout_s * 1e3)
            self._watchdog_active = True
        elif self._watchdog_active:
            log.info("SAFETY: watchdog: commands arrive again")
            self._watchdog_active = False
        if not np.all(np.isfinite(a)):
            flags |= SafetyFlag.NONFINITE
            log.warning("SAFETY: non-finite command %s; holding", np.array2string(a, precision=3))
        if flags:
            return self._finish(self.hold_action(), flags, held=True)

        trans_scale, rot_scale = self.limits.max_translation_m, self.limits.max_rotation_rad
        dpos = a[:3] * trans_scale  # metres this step
        drot = a[3:6] * rot_scale  # radians this step

        # Start-up guard: the first command must be small; after it, limits ramp in.
        ramp = 1.0
        if not self._armed:
            far = np.linalg.norm(dpos) > c.startup_max_translation_m or np.linalg.norm(drot) > c.startup_max_rotation_rad
            if far and c.startup_mode == "refuse":
                if not self._refusing:
                    log.warning("SAFETY: start-up guard refused the first command (%.3f m, %.3f rad > %.3f m, %.3f rad); holding "
                                "until a small command arrives", np.linalg.norm(dpos), np.linalg.norm(drot),
                                c.startup_max_translation_m, c.startup_max_rotation_rad)
                self._refusing = True
                return self._finish(self.hold_action(), SafetyFlag.STARTUP, held=True)
            if far:
                flags |= SafetyFlag.STARTUP  # let through, but only at the first ramp step's size
            self._armed, self._refusing = True, False
        if self._ramp_i < c.ramp_steps:
            self._ramp_i += 1
            ramp = self._ramp_i / c.ramp_steps

        # Gripper.
        g = a[6]
        if not -1.0 <= g <= 1.0:
            flags |= SafetyFlag.GRIPPER
            g = float(np.clip(g, -1.0, 1.0))
        if c.gripper_mode == "binary":
            g = 1.0 if g > c.gripper_threshold else -1.0

        # Workspace box on the EE target.
        pos = np.asarray(state.ee_pose[:3], dtype=np.float64)
        lo, hi = np.array(c.workspace_low), np.array(c.workspace_high)
        target = pos + dpos
        clipped = np.clip(target, lo, hi)
        if not np.array_equal(clipped, target):
            flags |= SafetyFlag.WORKSPACE
            dpos = clipped - pos

        # Per-step clamps (with the start-up ramp).
        max_t, max_r = c.max_translation_m * ramp, c.max_rotation_rad * ramp
        n = float(np.linalg.norm(dpos))
        if n > max_t:
            flags |= SafetyFlag.RAMP if n <= c.max_translation_m else SafetyFlag.TRANSLATION
            dpos *= max_t / n
        n = float(np.linalg.norm(drot))
        if n > max_r:
            flags |= SafetyFlag.RAMP if n <= c.max_rotation_rad else SafetyFlag.ROTATION
            drot *= max_r / n

        out = np.concatenate([dpos / trans_scale, drot / rot_scale, [g]]).astype(np.float32)
        self._last_gripper = float(g)
        if flags & ~SafetyFlag.RAMP:
            log.debug("SAFETY: clipped (%s): %s -> %s", ", ".join(flag_names(flags)), np.array2string(a, precision=3),
                      np.array2string(out, precision=3))
        return self._finish(out, flags)

    def _finish(self, action: np.ndarray, flags: SafetyFlag, held: bool = False) -> SafetyResult:
        for f in RULES:
            if flags & f:
                self.counts[f.name.lower()] += 1
        if flags:
            self.counts["interventions"] += 1
        return SafetyResult(action=action, flags=flags, held=held)

    def summary(self) -> dict[str, int]:
        """Per-rule counts of this episode (steps where the rule fired) plus ``interventions`` and ``steps``:
        what goes into ``Episode.info["safety"]``."""
        return {**self.counts, "steps": self.steps}
