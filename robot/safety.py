"""The safety filter between whoever commands (teleop or policy) and the arm.

`SafetyFilter.clamp` takes one 7-d action of the Episode contract (EE delta xyz and delta rpy normalised
to [-1, 1] by the arm's `ArmLimits`, gripper target -1 close .. +1 open) and returns the action that may
be sent, plus a bit mask of the rules that fired. Rules, in the order they are applied:

=============  ===================================================================================
``ESTOP``      latched e-stop (`estop()`): hold until `release_estop()` (an explicit operator action)
``DEADMAN``    the command source says it is not enabled (teleop deadman released): hold
``WATCHDOG``   the command is older than ``watchdog_timeout_s`` (the source stopped talking), or its stamp is
               not a finite time or lies more than ``watchdog_timeout_s`` in the future (a stamp from another
               clock would otherwise never go stale): hold
``NONFINITE``  NaN/inf anywhere in the action: hold
``STATE``      the arm's state is non-finite (NaN/inf in the EE pose, joints or gripper) or implausible (the EE
               more than ``state_max_outside_m`` outside the workspace box: a bad driver reading or a box in
               the wrong frame): hold - the step would be computed from a position the arm is not at
``STARTUP``    start-up guard: a first command after `reset` that would move farther than
               ``startup_max_*`` is refused (``startup_mode="refuse"``: hold until a small command
               arrives - a stick pushed at the start must be released; the runner gives up after a
               while) or let through ramped (``"ramp"``: for delta policies whose first action is
               naturally large). From the first accepted command the step limits ramp up from
               1/ramp_steps to full over ``ramp_steps`` steps (``RAMP`` when the ramp clipped). The ramp
               starts again after every *resume*: the first command that passes after an e-stop, deadman,
               watchdog or arm-state hold moves at most 1/ramp_steps of the step limits
``GRIPPER``    gripper target outside [-1, 1] (clipped)
``GRIPPER_SNAP`` ``binary`` mode: a target strictly between -1 and +1 is snapped to -1 / +1 (the command changed)
``WORKSPACE``  the EE target (current position + step) leaves the workspace box shrunk by
               ``workspace_margin_m`` on every side: clipped onto that inner box (a controller that overshoots
               its target by less than the margin keeps the measured EE inside the box)
``TRANSLATION``/``ROTATION``  the step is longer than ``max_translation_m`` / ``max_rotation_rad``:
               scaled down, direction kept
=============  ===================================================================================

*Hold* means zero EE motion with the gripper kept at its last accepted target (a held object is not
dropped). A hold restarts the ramp only for the rules that pause the command stream or the arm (e-stop,
deadman, watchdog, arm state); a single non-finite command is one held step inside a running stream and does
not. Every step where any rule fired is an *intervention*: the runner writes the mask per step into
``Episode.extras["safety_flags"]``, ``Episode.interventions`` and the per-rule counts into
``Episode.info["safety"]``. The e-stop acts on the next `clamp` call, i.e. within one control period.

**Frames and defaults.** The box is stated in ``workspace_frame``, which must be the frame the arm reports
its EE pose in (`ArmLimits.pose_frame`; a mismatch is refused when the filter is built): ``base`` for a real
arm and LIBERO, ``world`` for ManiSkill (whose Panda base sits at x = -0.615 m in the world). There is one
source of limits per rig: `SafetyConfig`'s defaults are the real arm's conservative limits (a Franka FR3/Panda
over a table, base frame; `launch/params/deploy.yaml` uses them as they are), the simulated rig's limits are
``robot/conf/robot.yaml``'s ``safety`` block (`robot.sim.rollout.sim_safety_config`), which names every key.
"""

from __future__ import annotations

import enum
import logging
import math
import threading
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from robot.arms.base import ArmLimits, ArmState
from robot.config_dict import dataclass_from_dict

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
    STATE = 1024  # the arm's state is non-finite or implausible
    GRIPPER_SNAP = 2048  # binary gripper: a target between -1 and +1 was snapped to -1 / +1


# Holds after which the ramp starts again (a resume): the stream or the arm was paused, not one bad command.
RESUME_HOLDS = SafetyFlag.ESTOP | SafetyFlag.DEADMAN | SafetyFlag.WATCHDOG | SafetyFlag.STATE
WORKSPACE_FRAMES = ("base", "world")


RULES: tuple[SafetyFlag, ...] = tuple(f for f in SafetyFlag if f is not SafetyFlag.NONE)


def flag_names(mask: int) -> list[str]:
    return [f.name.lower() for f in RULES if mask & f]


@dataclass(frozen=True)
class SafetyConfig:
    """Limits of the safety filter. Lengths in metres, angles in radians, positions in ``workspace_frame``.

    The defaults are the *real arm's* conservative limits: a Franka FR3/Panda over a table in front of it,
    in the arm's base frame, 0.2 m/s at 10 Hz (what `launch/params/deploy.yaml` deploys with). The simulated
    rig does not use them: its limits are ``robot/conf/robot.yaml``'s ``safety`` block, which names every key.
    """

    workspace_low: tuple[float, float, float] = (0.2, -0.4, 0.02)  # in front of the base, 2 cm above the table
    workspace_high: tuple[float, float, float] = (0.75, 0.4, 0.6)
    workspace_frame: str = "base"  # the frame of the box: base (the arm's base frame) | world (ManiSkill's world)
    # Targets are kept this far inside every face of the box: the controller overshoots a target on a face (the
    # simulated Panda by 14.5 mm), so with a margin the measured EE stays inside the box.
    workspace_margin_m: float = 0.02
    max_translation_m: float = 0.02  # per control step (0.2 m/s at 10 Hz)
    max_rotation_rad: float = 0.1  # per control step
    gripper_mode: str = "binary"  # "binary": snap to -1/+1 at gripper_threshold; "continuous": clip only
    gripper_threshold: float = 0.0
    startup_max_translation_m: float = 0.01  # the first command may move at most this far ...
    startup_max_rotation_rad: float = 0.05  # ... and turn at most this much, else it is refused
    startup_mode: str = "refuse"  # "refuse": hold while the first command is too far; "ramp": execute it ramped in
    ramp_steps: int = 10  # after the first accepted command (and after every resume), step limits grow to full over this many steps
    watchdog_timeout_s: float = 0.3  # hold when the newest command is older than this (3 periods at 10 Hz)
    require_enabled: bool = True  # honour the source's deadman flag
    state_max_outside_m: float = 0.3  # an EE reported farther than this outside the box is implausible: hold

    def __post_init__(self) -> None:
        for name in ("workspace_low", "workspace_high"):
            v = getattr(self, name)
            if len(v) != 3 or not all(isinstance(x, (int, float)) and math.isfinite(x) for x in v):
                raise ValueError(f"safety.{name}: expected 3 finite numbers (m), got {v!r}")
            object.__setattr__(self, name, tuple(float(x) for x in v))
        if any(lo >= hi for lo, hi in zip(self.workspace_low, self.workspace_high)):
            raise ValueError(f"safety.workspace_low: {self.workspace_low} must be below workspace_high {self.workspace_high} on every axis")
        if self.workspace_frame not in WORKSPACE_FRAMES:
            raise ValueError(f"safety.workspace_frame: {self.workspace_frame!r} is not one of {WORKSPACE_FRAMES}")
        m = self.workspace_margin_m
        if not isinstance(m, (int, float)) or not math.isfinite(m) or m < 0:
            raise ValueError(f"safety.workspace_margin_m: must be a number >= 0, got {m!r}")
        if any(2 * m >= hi - lo for lo, hi in zip(self.workspace_low, self.workspace_high)):
            raise ValueError(f"safety.workspace_margin_m: {m} m on both sides leaves no room inside the box "
                             f"{self.workspace_low}..{self.workspace_high}")
        for name in ("max_translation_m", "max_rotation_rad", "startup_max_translation_m", "startup_max_rotation_rad",
                     "watchdog_timeout_s", "state_max_outside_m"):
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
        return dataclass_from_dict(cls, d, "safety")

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
        if config.workspace_frame != limits.pose_frame:
            raise ValueError(f"safety.workspace_frame: the box is stated in the {config.workspace_frame!r} frame but the arm "
                             f"reports its EE pose in the {limits.pose_frame!r} frame (ArmLimits.pose_frame); set "
                             f"safety.workspace_frame={limits.pose_frame} with a box in that frame")
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
        self._paused = False  # the last step was a hold that pauses the stream (RESUME_HOLDS): ramp in again
        self._last_gripper = 1.0 if state is None or state.gripper >= 0.5 else -1.0
        self.counts = {f.name.lower(): 0 for f in RULES}
        self.counts["interventions"] = 0
        self.steps = 0
        self._watchdog_active = False
        self._state_bad = False

    # ------------------------------------------------------------------ e-stop
    def estop(self, reason: str = "e-stop pressed") -> None:
        if not self._estop.is_set():
            log.warning("SAFETY: e-stop latched (%s); the arm holds until release_estop()", reason)
        self._estop_reason = reason
        self._estop.set()

    def release_estop(self) -> None:
        if self._estop.is_set():
            log.warning("SAFETY: e-stop released by the operator; the next commands ramp in over %d steps", self.config.ramp_steps)
        self._estop.clear()

    @property
    def estopped(self) -> bool:
        return self._estop.is_set()

    # ------------------------------------------------------------------ the filter
    def hold_action(self) -> np.ndarray:
        return np.array([0, 0, 0, 0, 0, 0, self._last_gripper], dtype=np.float32)

    def _watchdog(self, now: float, command_stamp: float | None) -> bool:
        """True when the command must not be trusted for its time: too old, not a finite time, or from the future."""
        c = self.config
        if command_stamp is None:
            age = 0.0
        else:
            age = float(now) - float(command_stamp)
        if math.isfinite(age) and -c.watchdog_timeout_s <= age <= c.watchdog_timeout_s:
            if self._watchdog_active:
                log.info("SAFETY: watchdog: commands arrive again")
            self._watchdog_active = False
            return False
        if not self._watchdog_active:
            if not math.isfinite(age):
                log.warning("SAFETY: watchdog: command stamp %r at loop time %r is not a finite time; holding", command_stamp, now)
            elif age < 0:
                log.warning("SAFETY: watchdog: command stamp is %.0f ms in the future (limit %.0f ms: another clock?); holding",
                            -age * 1e3, c.watchdog_timeout_s * 1e3)
            else:
                log.warning("SAFETY: watchdog: newest command is %.0f ms old (limit %.0f ms); holding",
                            age * 1e3, c.watchdog_timeout_s * 1e3)
        self._watchdog_active = True
        return True

    def _state_implausible(self, state: ArmState) -> str:
        """Why the arm's state cannot be used to compute a step ("" when it can)."""
        pose = np.asarray(state.ee_pose, dtype=np.float64).reshape(-1)
        if pose.shape[0] < 3:
            return f"EE pose has {pose.shape[0]} values"
        joints = np.asarray(state.joints, dtype=np.float64).reshape(-1)
        if not (np.all(np.isfinite(pose)) and np.all(np.isfinite(joints)) and math.isfinite(float(state.gripper))):
            return f"non-finite state (EE pose {np.array2string(pose, precision=3)}, gripper {state.gripper})"
        c = self.config
        pos = pose[:3]
        outside = np.maximum(np.array(c.workspace_low) - pos, 0.0) + np.maximum(pos - np.array(c.workspace_high), 0.0)
        d = float(np.linalg.norm(outside))
        if d > c.state_max_outside_m:
            return (f"EE at {np.array2string(pos, precision=3)} is {d:.3f} m outside the workspace box (limit "
                    f"{c.state_max_outside_m} m; is the box in the arm's {c.workspace_frame!r} frame?)")
        return ""

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
        if self._watchdog(now, command_stamp):
            flags |= SafetyFlag.WATCHDOG
        if not np.all(np.isfinite(a)):
            flags |= SafetyFlag.NONFINITE
            log.warning("SAFETY: non-finite command %s; holding", np.array2string(a, precision=3))
        why = self._state_implausible(state)
        if why:
            flags |= SafetyFlag.STATE
            if not self._state_bad:
                log.warning("SAFETY: arm state unusable (%s); holding", why)
        elif self._state_bad:
            log.info("SAFETY: arm state plausible again")
        self._state_bad = bool(why)
        if flags:
            if flags & RESUME_HOLDS:
                self._paused = True
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
        if self._paused:  # resuming after an e-stop / deadman / watchdog / arm-state hold: ramp in again
            self._paused = False
            self._ramp_i = 0
        if self._ramp_i < c.ramp_steps:
            self._ramp_i += 1
            ramp = self._ramp_i / c.ramp_steps

        # Gripper.
        g = a[6]
        if not -1.0 <= g <= 1.0:
            flags |= SafetyFlag.GRIPPER
            g = float(np.clip(g, -1.0, 1.0))
        if c.gripper_mode == "binary":
            snapped = 1.0 if g > c.gripper_threshold else -1.0
            if snapped != g:
                flags |= SafetyFlag.GRIPPER_SNAP
            g = snapped

        # Workspace box (shrunk by the margin) on the EE target.
        pos = np.asarray(state.ee_pose[:3], dtype=np.float64)
        lo = np.array(c.workspace_low) + c.workspace_margin_m
        hi = np.array(c.workspace_high) - c.workspace_margin_m
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
