"""Each safety rule fires on a crafted command, is counted, and the arm holds (or is clipped) accordingly."""

import threading
import time

import numpy as np
import pytest

from robot.arms.base import ArmLimits, ArmState
from robot.arms.fake import KinematicArm, KinematicArmConfig
from robot.safety import SafetyConfig, SafetyFilter, SafetyFlag
from tests.factories import KINEMATIC_SAFETY

CFG = SafetyConfig(workspace_low=(-0.3, -0.3, 0.05), workspace_high=(0.3, 0.3, 0.5), workspace_margin_m=0.0, max_translation_m=0.02,
                   max_rotation_rad=0.05, startup_max_translation_m=0.01, startup_max_rotation_rad=0.03,
                   ramp_steps=1, watchdog_timeout_s=0.2)
# A box around the kinematic arm's start (0, 0, 0.3) for tests of other rules (the defaults are a real arm's box).
AROUND_START = {k: KINEMATIC_SAFETY[k] for k in ("workspace_low", "workspace_high", "workspace_margin_m")}


def armed(cfg=CFG):
    """A connected kinematic arm (1.0 = 5 cm / 0.1 rad per step) and a filter past its start-up guard."""
    arm = KinematicArm(KinematicArmConfig(max_translation_m=0.05, max_rotation_rad=0.1))
    arm.connect()
    f = SafetyFilter(cfg, arm.limits)
    f.reset(arm.read_state())
    r = f.clamp(np.zeros(7, np.float32) + [0, 0, 0, 0, 0, 0, 1], arm.read_state(), now=0.0)
    assert r.flags == SafetyFlag.NONE
    return arm, f


def send(arm, f, action, now=1.0, **kw):
    before = arm.read_state().ee_pose[:3].copy()
    res = f.clamp(np.asarray(action, np.float32), arm.read_state(), now=now, **kw)
    arm.send_action(res.action)
    return res, arm.read_state().ee_pose[:3] - before


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_command_holds(bad):
    arm, f = armed()
    res, moved = send(arm, f, [0.1, bad, 0, 0, 0, 0, 1])
    assert res.flags & SafetyFlag.NONFINITE and res.held
    np.testing.assert_array_equal(moved, 0)
    assert f.counts["nonfinite"] == 1 and f.counts["interventions"] == 1


def test_translation_and_rotation_steps_are_clamped_keeping_direction():
    arm, f = armed()
    res, moved = send(arm, f, [1, 1, 0, 0, 0, 0, 1])  # 7 cm requested, 2 cm allowed
    assert res.flags & SafetyFlag.TRANSLATION
    assert np.linalg.norm(moved) == pytest.approx(0.02, abs=1e-6)
    assert moved[0] == pytest.approx(moved[1])
    res, _ = send(arm, f, [0, 0, 0, 1, 0, 0, 1])  # 0.1 rad requested, 0.05 allowed
    assert res.flags & SafetyFlag.ROTATION
    assert res.action[3] * 0.1 == pytest.approx(0.05, abs=1e-6)
    assert f.counts["translation"] == 1 and f.counts["rotation"] == 1


def test_workspace_box_clips_the_target_onto_the_box():
    arm, f = armed(SafetyConfig(**{**CFG.to_dict(), "max_translation_m": 0.2, "workspace_low": [-0.3, -0.3, 0.05]}))
    arm.xyz[:] = [0.0, 0.0, 0.07]
    res, moved = send(arm, f, [0, 0, -1, 0, 0, 0, 1])  # 5 cm down would go below z = 0.05
    assert res.flags & SafetyFlag.WORKSPACE
    assert arm.read_state().ee_pose[2] == pytest.approx(0.05, abs=1e-6)
    res, moved = send(arm, f, [0, 0, -1, 0, 0, 0, 1])  # already on the floor of the box: no motion down
    np.testing.assert_allclose(moved, 0, atol=1e-7)


def test_gripper_is_sanitised():
    arm, f = armed()
    res, _ = send(arm, f, [0, 0, 0, 0, 0, 0, 7.5])
    assert res.flags & SafetyFlag.GRIPPER and res.action[6] == 1.0
    res, _ = send(arm, f, [0, 0, 0, 0, 0, 0, -0.3])  # binary mode snaps: the command changed, an intervention
    assert res.flags == SafetyFlag.GRIPPER_SNAP and res.action[6] == -1.0 and res.intervened
    assert f.counts["gripper_snap"] == 1 and f.counts["interventions"] == 2
    res, _ = send(arm, f, [0, 0, 0, 0, 0, 0, -1.0])  # already binary: nothing to snap
    assert res.flags == SafetyFlag.NONE and res.action[6] == -1.0
    cont = SafetyFilter(SafetyConfig(gripper_mode="continuous", ramp_steps=1, **AROUND_START), arm.limits)
    cont.reset(arm.read_state())
    assert cont.clamp(np.array([0, 0, 0, 0, 0, 0, 0.3]), arm.read_state(), now=0).action[6] == pytest.approx(0.3)


def test_startup_guard_refuses_a_far_first_command_then_ramps():
    arm = KinematicArm(KinematicArmConfig(max_translation_m=0.05))
    arm.connect()
    f = SafetyFilter(SafetyConfig(max_translation_m=0.05, startup_max_translation_m=0.01, ramp_steps=4, **AROUND_START), arm.limits)
    f.reset(arm.read_state())
    for _ in range(3):  # a policy whose first command jumps 5 cm is refused, repeatedly
        res, moved = send(arm, f, [1, 0, 0, 0, 0, 0, 1])
        assert res.flags & SafetyFlag.STARTUP and res.held
        np.testing.assert_array_equal(moved, 0)
    res, moved = send(arm, f, [0.1, 0, 0, 0, 0, 0, 1])  # 5 mm: accepted, ramp step 1/4 -> 12.5 mm cap
    assert not res.flags & SafetyFlag.STARTUP
    steps = [np.linalg.norm(send(arm, f, [1, 0, 0, 0, 0, 0, 1])[1]) for _ in range(4)]
    np.testing.assert_allclose(steps, [0.025, 0.0375, 0.05, 0.05], atol=1e-6)  # ramps to the full 5 cm
    assert f.counts["startup"] == 3 and f.counts["ramp"] == 2


def test_watchdog_holds_when_commands_stop_arriving():
    arm, f = armed()
    res, moved = send(arm, f, [0.2, 0, 0, 0, 0, 0, 1], now=10.0, command_stamp=9.95)  # 50 ms old: fine
    assert res.flags == SafetyFlag.NONE and moved[0] > 0
    res, moved = send(arm, f, [0.2, 0, 0, 0, 0, 0, 1], now=10.5, command_stamp=9.95)  # 550 ms old
    assert res.flags & SafetyFlag.WATCHDOG and res.held
    np.testing.assert_array_equal(moved, 0)
    assert res.action[6] == 1.0  # the gripper keeps its target: a held object is not dropped


def test_deadman_release_holds():
    arm, f = armed()
    res, moved = send(arm, f, [0.2, 0, 0, 0, 0, 0, 1], enabled=False)
    assert res.flags & SafetyFlag.DEADMAN and res.held
    np.testing.assert_array_equal(moved, 0)


def test_estop_halts_within_one_control_period_and_latches():
    """A loop at 50 Hz; the e-stop is pressed from another thread at a random moment. The first command
    sent after the press is a hold, so the halt comes within one period; it stays until released."""
    from robot.control import MonotonicClock, RateLoop

    arm, f = armed()
    pressed_at: list[float] = []
    first_hold_at: list[float] = []

    def press():
        time.sleep(0.137)
        pressed_at.append(time.monotonic())
        f.estop("test button")

    th = threading.Thread(target=press)
    th.start()
    loop = RateLoop(50, MonotonicClock(), max_steps=25)
    for tick in loop:
        res = f.clamp(np.array([0.2, 0, 0, 0, 0, 0, 1], np.float32), arm.read_state(), now=tick.start)
        arm.send_action(res.action)
        if res.flags & SafetyFlag.ESTOP and not first_hold_at:
            first_hold_at.append(time.monotonic())
    th.join()
    assert first_hold_at and first_hold_at[0] - pressed_at[0] <= 0.02 + 0.005
    held = [a for a in arm.sent if not np.any(a[:6])]
    assert len(held) >= 25 - 8  # every command after the press was a hold
    assert f.estopped
    f.release_estop()
    assert f.clamp(np.array([0.1, 0, 0, 0, 0, 0, 1]), arm.read_state(), now=0).flags == SafetyFlag.NONE


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="workspace_low"):
        SafetyConfig(workspace_low=(0, 0, 1), workspace_high=(1, 1, 0.5))
    with pytest.raises(ValueError, match="max_translation_m"):
        SafetyConfig(max_translation_m=-1)
    with pytest.raises(ValueError, match="unknown keys.*bogus"):
        SafetyConfig.from_dict({"bogus": 1})
    with pytest.raises(ValueError, match="gripper_mode"):
        SafetyConfig(gripper_mode="wiggle")


def test_startup_ramp_mode_lets_a_far_first_command_through_ramped():
    arm = KinematicArm(KinematicArmConfig(max_translation_m=0.05))
    arm.connect()
    f = SafetyFilter(SafetyConfig(max_translation_m=0.05, startup_max_translation_m=0.01, startup_mode="ramp", ramp_steps=5,
                                  **AROUND_START), arm.limits)
    f.reset(arm.read_state())
    res, moved = send(arm, f, [1, 0, 0, 0, 0, 0, 1])
    assert res.flags & SafetyFlag.STARTUP and not res.held
    assert np.linalg.norm(moved) == pytest.approx(0.01, abs=1e-6)  # 1/5 of the 5 cm limit
    with pytest.raises(ValueError, match="startup_mode"):
        SafetyConfig(startup_mode="yolo")


# ---------------------------------------------------------------------------------------------- issue 18: 11-14, 16
def _state(xyz=(0.0, 0.0, 0.2), quat=(0, 0, 0, 1), gripper=1.0, joints=np.zeros(9)):
    return ArmState(joints=np.asarray(joints, np.float32), ee_pose=np.array([*xyz, *quat], np.float32), gripper=gripper, stamp=0.0)


@pytest.mark.parametrize("bad", [
    {"xyz": (np.nan, 0, 0.2)}, {"xyz": (np.inf, 0, 0.2)}, {"quat": (0, np.nan, 0, 1)}, {"gripper": np.nan},
    {"joints": [0, np.nan, 0, 0, 0, 0, 0, 0, 0]},
    {"xyz": (1.5, 0, 0.2)},  # 1.2 m outside the box: a bad reading or a box in the wrong frame
])
def test_nonfinite_or_implausible_arm_state_holds_and_is_flagged(bad):
    f = SafetyFilter(SafetyConfig(**AROUND_START, ramp_steps=1, startup_max_translation_m=0.2), ArmLimits())
    f.reset(_state())
    res = f.clamp(np.array([0, 0, 1, 0, 0, 0, 1], np.float32), _state(**bad), now=0.0)
    assert res.held and res.flags & SafetyFlag.STATE
    assert np.all(np.isfinite(res.action)) and not res.action[:6].any()
    assert f.counts["state"] == 1 and f.counts["interventions"] == 1
    # a plausible state again: the arm moves (ramped in: a resume)
    res = f.clamp(np.array([0, 0, 0.1, 0, 0, 0, 1], np.float32), _state(), now=0.1)
    assert not res.held and res.flags == SafetyFlag.NONE and res.action[2] == pytest.approx(0.1)


def test_an_ee_slightly_outside_the_box_is_plausible_and_pulled_back():
    f = SafetyFilter(SafetyConfig(**{**AROUND_START, "workspace_high": (0.6, 0.6, 0.5)}, ramp_steps=1), ArmLimits())
    f.reset(_state())
    res = f.clamp(np.zeros(7, np.float32) + [0, 0, 0, 0, 0, 0, 1], _state(xyz=(0, 0, 0.52)), now=0.0)
    assert not res.held and res.flags & SafetyFlag.WORKSPACE and res.action[2] < 0


@pytest.mark.parametrize("stamp", [np.nan, np.inf, -np.inf, 1e9, 10.0 + 0.25])
def test_watchdog_rejects_a_non_finite_or_future_command_stamp(stamp):
    arm, f = armed()  # watchdog 0.2 s
    res, moved = send(arm, f, [0.2, 0, 0, 0, 0, 0, 1], now=10.0, command_stamp=stamp)
    assert res.flags & SafetyFlag.WATCHDOG and res.held
    np.testing.assert_array_equal(moved, 0)
    assert f.counts["watchdog"] == 1


def test_watchdog_accepts_a_chunk_action_meant_for_slightly_later():
    arm, f = armed()  # a late-started step plays the next action of its chunk a little early
    res, moved = send(arm, f, [0.2, 0, 0, 0, 0, 0, 1], now=10.0, command_stamp=10.05)
    assert res.flags == SafetyFlag.NONE and moved[0] > 0


def _ramped_filter():
    arm = KinematicArm(KinematicArmConfig(max_translation_m=0.05))
    arm.connect()
    f = SafetyFilter(SafetyConfig(max_translation_m=0.05, startup_max_translation_m=0.01, ramp_steps=4, **AROUND_START), arm.limits)
    f.reset(arm.read_state())
    send(arm, f, [0.1, 0, 0, 0, 0, 0, 1], now=0.0)  # accepted: ramp 1/4
    for k in range(4):  # ramped in to the full 5 cm
        send(arm, f, [1, 0, 0, 0, 0, 0, 1], now=0.1 * (k + 1))
    assert np.linalg.norm(send(arm, f, [1, 0, 0, 0, 0, 0, 1], now=0.5)[1]) == pytest.approx(0.05, abs=1e-6)
    return arm, f


def _steps_after(arm, f, now):
    return [np.linalg.norm(send(arm, f, [1, 0, 0, 0, 0, 0, 1], now=now + 0.1 * k)[1]) for k in range(5)]


def test_ramp_restarts_after_the_estop_is_released():
    arm, f = _ramped_filter()
    f.estop("test")
    assert send(arm, f, [1, 0, 0, 0, 0, 0, 1], now=1.0)[0].held
    f.release_estop()
    np.testing.assert_allclose(_steps_after(arm, f, 1.1), [0.0125, 0.025, 0.0375, 0.05, 0.05], atol=1e-6)


def test_ramp_restarts_after_a_watchdog_stall():
    arm, f = _ramped_filter()
    for k in range(25):  # the source stalls for 2.5 s: every step holds
        res, moved = send(arm, f, [1, 0, 0, 0, 0, 0, 1], now=1.0 + 0.1 * k, command_stamp=0.5)
        assert res.flags & SafetyFlag.WATCHDOG and res.held
    np.testing.assert_allclose(_steps_after(arm, f, 3.5), [0.0125, 0.025, 0.0375, 0.05, 0.05], atol=1e-6)


def test_ramp_restarts_after_the_deadman_is_released_and_pressed_again():
    arm, f = _ramped_filter()
    assert send(arm, f, [1, 0, 0, 0, 0, 0, 1], now=1.0, enabled=False)[0].flags & SafetyFlag.DEADMAN
    np.testing.assert_allclose(_steps_after(arm, f, 1.1)[:2], [0.0125, 0.025], atol=1e-6)


def test_a_single_nonfinite_command_does_not_restart_the_ramp():
    arm, f = _ramped_filter()
    assert send(arm, f, [np.nan, 0, 0, 0, 0, 0, 1], now=1.0)[0].held
    assert np.linalg.norm(send(arm, f, [1, 0, 0, 0, 0, 0, 1], now=1.1)[1]) == pytest.approx(0.05, abs=1e-6)


def test_workspace_margin_keeps_an_overshooting_controller_inside_the_box():
    """A controller that overshoots its target by 14.5 mm (the simulated Panda on a box face): with a 2 cm margin
    the measured EE never leaves the box; without one it ends 14.5 mm outside."""
    OVERSHOOT = 0.0145

    def push_up(margin):
        arm = KinematicArm(KinematicArmConfig(max_translation_m=0.05))
        arm.connect()
        f = SafetyFilter(SafetyConfig(workspace_low=(-0.3, -0.3, 0.0), workspace_high=(0.3, 0.3, 0.4), workspace_margin_m=margin,
                                      max_translation_m=0.05, startup_max_translation_m=0.05, ramp_steps=1), arm.limits)
        f.reset(arm.read_state())
        top, flags = [], SafetyFlag.NONE
        for k in range(8):  # keep pushing up into the ceiling
            res, moved = send(arm, f, [0, 0, 1, 0, 0, 0, 1], now=0.1 * k)
            flags |= res.flags
            if moved[2] > 0:
                arm.xyz[2] += OVERSHOOT  # the controller overshoots the target it was sent
            top.append(arm.xyz[2])
        return max(top), flags

    top, flags = push_up(0.02)
    assert top <= 0.4 and flags & SafetyFlag.WORKSPACE
    assert push_up(0.0)[0] == pytest.approx(0.4 + OVERSHOOT, abs=1e-6)  # the defect without a margin


def test_margin_and_frame_config_errors_name_the_field():
    with pytest.raises(ValueError, match="workspace_margin_m"):
        SafetyConfig(workspace_margin_m=-0.01)
    with pytest.raises(ValueError, match="workspace_margin_m"):
        SafetyConfig(workspace_low=(0, 0, 0), workspace_high=(1, 1, 0.1), workspace_margin_m=0.05)
    with pytest.raises(ValueError, match="workspace_frame"):
        SafetyConfig(workspace_frame="tool")
    with pytest.raises(ValueError, match="workspace_frame.*world"):  # a box in the base frame on an arm reporting world poses
        SafetyFilter(SafetyConfig(), ArmLimits(pose_frame="world"))
