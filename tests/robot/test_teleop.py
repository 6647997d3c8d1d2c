"""Teleop devices (keyboard on a real pty, SpaceMouse from raw HID reports, gamepad), the mapping, and
the SANS session driven by a scripted device."""

import os
import struct
import time

import numpy as np
import pytest

from robot.arms.base import ArmLimits
from robot.arms.fake import KinematicArm
from robot.cameras.replay import EpisodeReplayCamera
from robot.control import SimulatedClock
from robot.runner import EpisodeRunner, RunnerConfig
from robot.safety import SafetyConfig, SafetyFilter
from robot.sinks import FolderSink, read_episode_file
from teleop import make_device
from teleop.command import EpisodeEvent, TeleopCommand
from teleop.gamepad import GamepadMap, GamepadMapper
from teleop.keyboard import KeyboardDevice, KeyDecoder, KeyMap
from teleop.mapping import TeleopMapping
from teleop.scripted import CompositeDevice, ScriptedDevice
from teleop.session import SansSession, SessionConfig
from teleop.source import TeleopSource
from teleop.spacemouse import SPECS, SpaceMouseButtons, SpaceMouseDevice, SpaceMouseParser
from tests.factories import KINEMATIC_SAFETY, random_episode


def test_key_decoder_handles_escape_sequences_split_across_reads():
    d = KeyDecoder()
    assert d.feed(b"w\x1b[C\r") == ["w", "right", "enter"]
    assert d.feed(b"\x1b[") == []  # partial arrow
    assert d.feed(b"D ") == ["left", "space"]
    assert d.feed(b"\x1b") == ["esc"]
    assert d.feed(b"\x7fQ") == ["backspace", "q"]


def test_keyboard_device_on_a_real_terminal():
    master, slave = os.openpty()
    dev = KeyboardDevice(KeyMap.load(), fd=slave)
    dev.connect()
    try:
        os.write(master, b"w")
        time.sleep(0.08)
        cmd = dev.read()
        assert cmd.twist[0] == 1.0 and cmd.enabled and cmd.stamp is not None
        time.sleep(0.2)  # no key-up on terminals: motion stops hold_s after the last press
        assert not dev.read().twist.any()
        os.write(master, b" m\x1b[D")
        time.sleep(0.08)
        cmds = [dev.read() for _ in range(3)]
        assert cmds[0].gripper == -1.0  # space toggled open -> close
        assert [c.event for c in cmds] == [EpisodeEvent.NEAR_SUCCESS, EpisodeEvent.RERECORD, None]
    finally:
        dev.disconnect()
        os.close(master)
        os.close(slave)


def test_keyboard_refuses_a_non_terminal_and_bad_keymaps():
    r, w = os.pipe()
    with pytest.raises(ConnectionError, match="not a TTY"):
        KeyboardDevice(fd=r).connect()
    os.close(r), os.close(w)
    with pytest.raises(ValueError, match="motion.w"):
        KeyMap.from_dict({"motion": {"w": ["forward", 1]}})
    with pytest.raises(ValueError, match="bound twice"):
        KeyMap.from_dict({"motion": {"w": ["x", 1]}, "events": {"w": "success"}})
    with pytest.raises(ValueError, match="unknown keys.*speed"):
        KeyMap.from_dict({"speed": 3})


def _report(rid, *vals):
    return [rid] + list(struct.pack("<" + "h" * len(vals), *vals))


def test_spacemouse_parser_on_synthetic_hid_reports():
    p = SpaceMouseParser(SPECS["SpaceMouseCompact"])
    p.feed(_report(1, 350, -175, 0))
    p.feed(_report(2, 0, 350, -350))  # rotation report: pitch, roll, yaw
    np.testing.assert_allclose(p.axes, [1.0, 0.5, 0, -1.0, 0, -1.0], atol=1e-6)
    p.feed([3, 0b10])
    assert p.buttons == {"LEFT": False, "RIGHT": True}
    single = SpaceMouseParser(SPECS["SpaceMouseProWireless"])
    single.feed(_report(1, 0, 0, 350, 0, 175, 0))
    np.testing.assert_allclose(single.axes, [0, 0, -1.0, -0.5, 0, 0], atol=1e-6)


class FakeHid:
    """Behaves like hidapi's device: reports with a timeout, OSError after an unplug."""

    def __init__(self, reports):
        self.reports, self.unplugged = list(reports), False

    def read(self, n, timeout_ms=0):
        if self.unplugged:
            raise OSError("read error")
        if self.reports:
            return self.reports.pop(0)
        time.sleep(timeout_ms / 1000)
        return []

    def close(self):
        pass


def test_spacemouse_device_buttons_and_unplug():
    hid = FakeHid([_report(1, 350, 0, 0), [3, 0b01], [3, 0b00], [3, 0b10]])
    dev = SpaceMouseDevice(SpaceMouseButtons.load(), model="SpaceMouseCompact", source=hid)
    dev.connect()
    time.sleep(0.15)
    cmd = dev.read()
    assert cmd.twist[0] == 1.0 and cmd.gripper == -1.0  # LEFT toggled the gripper closed
    assert cmd.event == EpisodeEvent.SAVE_NEXT  # RIGHT pressed
    hid.unplugged = True
    time.sleep(0.1)
    assert not dev.is_connected and not dev.read().twist.any() and not dev.read().enabled
    dev.disconnect()


def test_gamepad_mapper_deadman_edges_and_map_errors():
    m = GamepadMapper(GamepadMap.load())
    axes = [0.0, 0.5, 0, 0, -1.0, 0, 0, 0]
    c = m.update(axes, [0] * 11)
    assert not c.enabled and c.twist[0] == 0.5 and c.twist[2] == -1.0
    c = m.update(axes, [0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0])  # Y + RB
    assert c.enabled and c.event == EpisodeEvent.SUCCESS
    c = m.update(axes, [0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0])  # still held: no second event
    assert c.event is None
    with pytest.raises(ValueError, match="events.3"):
        GamepadMap.from_dict({"events": {3: "win"}})
    with pytest.raises(ValueError, match="unknown keys"):
        GamepadMap.from_dict({"buttons": {}})


def test_mapping_deadband_remap_and_inverse():
    limits = ArmLimits(0.05, 0.1)
    m = TeleopMapping(linear_speed_m_s=0.25, angular_speed_rad_s=0.5, deadband=0.1, axis_remap=(0, -1, 0, 1, 0, 0, 0, 0, 1))
    a = m.to_action(TeleopCommand(twist=[1, 0, 0.05, 0, 0, 0]), hz=10, limits=limits)
    # device +x -> base +y (remap), 0.25 m/s at 10 Hz = 2.5 cm = 0.5 of the 5 cm limit; z inside the deadband
    np.testing.assert_allclose(a, [0, 0.5, 0, 0, 0, 0, 1.0], atol=1e-6)
    want = np.array([0.1, -0.3, 0.2, 0.05, 0, -0.1, 1], np.float32)
    back = m.to_action(TeleopCommand(twist=m.deflection_for_action(want, 10, limits)), 10, limits)
    np.testing.assert_allclose(back[:6], want[:6], atol=1e-5)
    with pytest.raises(ValueError, match="axis_remap"):
        TeleopMapping(axis_remap=(1, 0, 0))
    with pytest.raises(ValueError, match="unknown keys"):
        TeleopMapping.from_dict({"gain": 2})
    with pytest.raises(ValueError, match="unknown"):
        make_device("joystick")


class KinematicOperator(ScriptedDevice):
    """A scripted operator for the kinematic arm: the 'task' is lifting the EE above 0.36 m. For a success it
    lifts until the runner sees success; for a near-success it stops 1 cm short and presses near_success.
    ``fumble_first``: discards (rerecord) the first attempt."""

    def __init__(self, arm, fumble_first=False):
        super().__init__([])
        self.arm, self.requested, self.fumble, self._label_asked, self._start_asked = arm, "success", fumble_first, False, False
        self.starts = 0

    def start_now(self):
        self._start_asked = True

    def on_prompt(self, requested):
        self.requested = requested

    def on_episode_start(self):
        self.arm.reset()
        self._label_asked = False

    def label_now(self, success=None):
        self._label_asked = True

    def read(self):
        if self._start_asked:
            self._start_asked, self.starts = False, self.starts + 1
            return TeleopCommand(event=EpisodeEvent.START)
        if self.fumble:
            self.fumble = False
            return TeleopCommand(event=EpisodeEvent.RERECORD)
        z = self.arm.xyz[2]
        if self._label_asked:
            return TeleopCommand(event=EpisodeEvent.SUCCESS if z > 0.36 else EpisodeEvent.FAILURE)
        if self.requested == "near_success" and z >= 0.35 - 1e-6:
            return TeleopCommand(event=EpisodeEvent.NEAR_SUCCESS)
        return TeleopCommand(twist=[0, 0, 1.0, 0, 0, 0], gripper=1.0)


def _session(tmp_path, device, arm, cfg):
    runner = EpisodeRunner(arm, {"front": EpisodeReplayCamera(random_episode(T=4, H=16, W=16), loop=True)},
                           SafetyFilter(SafetyConfig(**{**KINEMATIC_SAFETY, "startup_max_translation_m": 0.05}, ramp_steps=1), arm.limits),
                           RunnerConfig(hz=10, max_steps=30, settle_steps=1, source_kind="teleop"), SimulatedClock())
    runner.connect()
    sink = FolderSink(tmp_path / "outbox")
    mapping = TeleopMapping(linear_speed_m_s=0.1, deadband=0.0)
    session = SansSession(runner, device, mapping, sink, cfg, "lift the gripper", reset_scene=lambda i: None,
                          success=lambda: arm.xyz[2] > 0.36, realtime=False)
    return session, sink


def test_scripted_session_produces_labelled_episodes_with_the_right_outcomes(tmp_path):
    arm = KinematicArm()
    dev = KinematicOperator(arm, fumble_first=True)
    session, sink = _session(tmp_path, dev, arm, SessionConfig(success=2, near_success=2, label_timeout_s=2))
    s = session.run()
    assert s.stop_reason == "targets reached" and s.discarded == 1 and s.attempts == 5
    assert dev.starts == 5  # every episode waited for start
    assert dict(s.counts) == {"success": 2, "near_success": 2}
    eps = [read_episode_file(p) for p in sink.written]
    assert [e.outcome for e in eps] == ["success", "near_success", "success", "near_success"]  # 1:1 as it goes
    for e in eps:
        assert e.source == "teleop" and e.info["sans"]["label"] == e.outcome
        assert e.info["sans"]["requested"] == e.outcome
        top = e.ee_pose[:, 2].max()
        assert (top > 0.36) == (e.outcome == "success")  # the label matches what happened
        assert e.rewards[-1] == (e.outcome == "success")
    near = eps[1]
    assert near.ee_pose[:, 2].max() == pytest.approx(0.35, abs=0.011)  # missed by about 1 cm


def test_teleop_device_lost_mid_episode_keeps_the_episode_unlabeled(tmp_path):
    arm = KinematicArm()
    dev = ScriptedDevice(lambda i: TeleopCommand(event=EpisodeEvent.START) if i == 0 else TeleopCommand(twist=[0.5, 0, 0, 0, 0, 0]),
                         disconnect_after=7)
    session, sink = _session(tmp_path, dev, arm, SessionConfig(success=1, near_success=1, label_timeout_s=0.2))
    s = session.run()
    assert s.counts["unlabeled"] == 1 and "teleop_lost" in s.stop_reason
    ep = read_episode_file(sink.written[0])
    assert ep.outcome == "unlabeled" and 4 <= len(ep) <= 7 and "teleop_lost" in ep.info["end_reason"]


def test_teleop_source_status_and_estop_event():
    arm = KinematicArm()
    arm.connect()
    dev = ScriptedDevice([TeleopCommand(twist=[1, 0, 0, 0, 0, 0]), TeleopCommand(event=EpisodeEvent.ESTOP), TeleopCommand(twist=[1, 0, 0, 0, 0, 0])] * 3)
    dev.connect()
    safety = SafetyFilter(SafetyConfig(**{**KINEMATIC_SAFETY, "startup_max_translation_m": 0.1, "max_translation_m": 0.1}, ramp_steps=1), arm.limits)
    runner = EpisodeRunner(arm, {"front": EpisodeReplayCamera(random_episode(T=3, H=8, W=8), loop=True)}, safety,
                           RunnerConfig(hz=10, max_steps=6, source_kind="teleop"), SimulatedClock())
    runner.connect()
    src = TeleopSource(dev, TeleopMapping(linear_speed_m_s=0.5, deadband=0), 10, arm.limits, realtime=False)
    ep = runner.run(src, "task").episode
    assert ep.actions[0, 0] == pytest.approx(1.0)  # 0.5 m/s at 10 Hz = 5 cm = the full limit
    assert safety.estopped and not ep.actions[1:6, :6].any()  # latched after the e-stop key
    assert ep.info["safety"]["estop"] == 5


# ---------------------------------------------------------------------------------------------- issue 18: 17, 18
def test_session_records_only_after_the_operator_presses_start(tmp_path):
    """Reads before *start* (the operator still resetting the scene, a stray label key) move and record nothing;
    the episode starts with the first reading after start."""
    arm = KinematicArm()
    script = ([TeleopCommand(twist=[0, 0, 1, 0, 0, 0])] * 3 + [TeleopCommand(event=EpisodeEvent.SUCCESS), TeleopCommand(event=EpisodeEvent.START)]
              + [TeleopCommand(twist=[1, 0, 0, 0, 0, 0])] * 4)
    dev = ScriptedDevice(script, disconnect_after=len(script))
    session, sink = _session(tmp_path, dev, arm, SessionConfig(success=1, near_success=1, label_timeout_s=0.2))
    s = session.run()
    assert s.counts["unlabeled"] == 1 and "teleop_lost" in s.stop_reason
    ep = read_episode_file(sink.written[0])
    np.testing.assert_allclose(ep.ee_pose[:, 2], 0.3, atol=1e-6)  # the z pushes before start were never executed
    assert ep.actions[0, 0] > 0 and not ep.actions[:, 2].any()


def test_stop_or_silence_while_waiting_for_start_ends_the_session_without_an_episode(tmp_path):
    arm = KinematicArm()
    dev = ScriptedDevice([TeleopCommand(), TeleopCommand(event=EpisodeEvent.STOP)])
    session, sink = _session(tmp_path, dev, arm, SessionConfig(success=1, near_success=1))
    s = session.run()
    assert s.stop_reason == "operator stopped the session" and s.attempts == 0 and not sink.written
    dev = ScriptedDevice([])  # at rest: never starts
    session, sink = _session(tmp_path, dev, arm, SessionConfig(success=1, near_success=1, start_timeout_s=0.1))
    s = session.run()
    assert "start_timeout_s" in s.stop_reason and not sink.written and arm.sent == []


def test_the_scripted_operator_presses_start_when_asked():
    from robot.arms.base import ArmLimits
    from teleop.scripted import ExpertOperator

    op = ExpertOperator(None, TeleopMapping(), 10.0, ArmLimits())
    op.connect()
    assert op.read().event is None
    op.start_now()
    assert op.read().event == EpisodeEvent.START and op.read().event is None
    both = CompositeDevice(op, ScriptedDevice([]))
    both.connect()
    both.start_now()
    assert both.read().event == EpisodeEvent.START


def test_teleop_episodes_get_their_own_longer_default_length():
    from omegaconf import OmegaConf

    from learning.cli import compose
    from robot.main import episode_max_steps

    c = OmegaConf.to_container(compose("robot/robot", []), resolve=True)
    runner, hz = c["runner"], c["sim"]["control_hz"]
    assert runner["max_steps"] is None
    steps = episode_max_steps(runner["max_steps"], runner["teleop_max_steps"], teleop=True, sim_steps=40)
    assert steps / hz >= 60  # a person needs 20-60 s per demonstration
    assert episode_max_steps(None, runner["teleop_max_steps"], teleop=False, sim_steps=40) == 40  # rollouts: the simulator's
    assert episode_max_steps(50, runner["teleop_max_steps"], teleop=True) == 50  # an explicit runner.max_steps wins
    with pytest.raises(ValueError, match="teleop_max_steps"):
        episode_max_steps(None, 0, teleop=True)
