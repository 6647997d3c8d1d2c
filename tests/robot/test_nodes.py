"""ROS 2 side without ROS: node shells parse and declare exactly their config's parameters, parameter
YAML validates, the collector / topic-arm / topic-camera logic the shells delegate to works on messages
built from rosbags' real definitions, and robot/ + teleop/ stay free of torch, learning and rclpy."""

import ast
import time
from pathlib import Path

import numpy as np
import pytest

from robot import rosmsg
from robot.arms.topic import TopicArm
from robot.cameras.topic import TopicCamera
from robot.collector import CollectorConfig, StreamCollector
from robot.control import MonotonicClock
from robot.errors import DeviceNotConnectedError
from robot.nodes.config import (NODE_CONFIGS, PolicyNodeConfig, config_from_node, declare_config,
                                load_params_file, parameter_defaults)
from robot.runner import EpisodeRunner, RunnerConfig
from robot.safety import SafetyConfig, SafetyFilter
from tests.factories import KINEMATIC_SAFETY

ROOT = Path(__file__).resolve().parents[2]
NODES = {"camera_node": "CameraNodeConfig", "teleop_node": "TeleopNodeConfig", "collector_node": "CollectorNodeConfig",
         "policy_node": "PolicyNodeConfig", "sim_arm_node": "SimArmNodeConfig"}


class FakeNode:
    """Records declare_parameter calls like rclpy's Node and hands the values back (with overrides)."""

    def __init__(self, overrides=None):
        self.declared, self.overrides = {}, overrides or {}

    def declare_parameter(self, name, default, descriptor=None):
        assert name not in self.declared, f"{name} declared twice"
        self.declared[name] = default

    def get_parameter(self, name):
        return type("P", (), {"value": self.overrides.get(name, self.declared[name])})()


@pytest.mark.parametrize("node_name", sorted(NODES))
def test_node_shell_parses_and_builds_its_config_from_declared_parameters(node_name):
    path = ROOT / "robot" / "nodes" / f"{node_name}.py"
    tree = ast.parse(path.read_text())
    imports = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
               for a in (n.names if isinstance(n, ast.Import) else [ast.alias(n.module or "")])}
    assert "rclpy" in imports and "torch" not in imports and "learning" not in imports
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "load_config"]
    assert [c.args[1].id for c in calls] == [NODES[node_name]]  # declares exactly its config dataclass
    inits = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "__init__"]
    assert inits and inits[0].args[0].value == node_name  # the node name the parameter YAML uses
    cls = NODE_CONFIGS[node_name]
    node = FakeNode()
    overrides = {"artifact": "policies/current"} if node_name == "policy_node" else {}
    node.overrides = overrides
    declare_config(node, cls)
    assert set(node.declared) == set(parameter_defaults(cls))
    cfg = config_from_node(node, cls)
    assert isinstance(cfg, cls)


def test_nested_safety_parameters_and_overrides():
    node = FakeNode({"safety.max_translation_m": 0.01, "safety.workspace_low": [0.1, -0.3, 0.0], "rate_hz": 15.0})
    declare_config(node, PolicyNodeConfig)
    assert "safety.watchdog_timeout_s" in node.declared
    cfg = config_from_node(node, PolicyNodeConfig)
    assert cfg.safety.max_translation_m == 0.01 and cfg.safety.workspace_low == (0.1, -0.3, 0.0) and cfg.rate_hz == 15.0
    node = FakeNode({"output": "joint_trajectory"})
    declare_config(node, PolicyNodeConfig)
    with pytest.raises(ValueError, match="ik_factory"):
        config_from_node(node, PolicyNodeConfig)


def test_scripted_teleop_waits_for_the_configured_subscribers():
    from robot.nodes.config import TeleopNodeConfig

    node = FakeNode({"device": "scripted", "script_file": "s.yaml", "wait_for_subscribers.event": 2})
    declare_config(node, TeleopNodeConfig)
    cfg = config_from_node(node, TeleopNodeConfig)
    w = cfg.wait_for_subscribers
    assert (w.twist, w.action, w.event) == (1, 1, 2)
    node = FakeNode({"wait_for_subscribers.action": -1})
    declare_config(node, TeleopNodeConfig)
    with pytest.raises(ValueError, match="wait_for_subscribers"):
        config_from_node(node, TeleopNodeConfig)


def test_parameter_files_validate_and_unknown_keys_are_refused(tmp_path):
    cfgs = load_params_file(ROOT / "launch" / "params" / "collect.yaml")
    assert set(cfgs) == {"camera_node", "teleop_node", "collector_node"}
    assert cfgs["collector_node"].success == cfgs["collector_node"].near_success  # 1:1
    deploy = load_params_file(ROOT / "launch" / "params" / "deploy.yaml")
    assert deploy["policy_node"].safety.startup_mode == "refuse"
    bad = tmp_path / "bad.yaml"
    bad.write_text("teleop_node:\n  ros__parameters:\n    devise: keyboard\n")
    with pytest.raises(ValueError, match="unknown parameters.*devise"):
        load_params_file(bad)
    bad.write_text("policy_node:\n  ros__parameters:\n    artifact: p\n    safety: {max_speed: 1}\n")
    with pytest.raises(ValueError, match="safety: unknown parameters.*max_speed"):
        load_params_file(bad)
    bad.write_text("lidar_node:\n  ros__parameters: {}\n")
    with pytest.raises(ValueError, match="no config schema"):
        load_params_file(bad)


@pytest.mark.parametrize("name", ["collect.launch.py", "deploy.launch.py", "sim_deploy.launch.py"])
def test_launch_files_parse_and_reference_existing_nodes(name):
    """Each launch file builds its description from robot.ros_graph's table under its own name (what that starts:
    tests/robot/test_ros_logic.py, against stand-ins for ROS 2's launch package)."""
    text = (ROOT / "launch" / name).read_text()
    tree = ast.parse(text)
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)
    calls = [n.args[0].value for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "launch_description"]
    assert calls == [name.removesuffix(".launch.py")]
    from robot.ros_graph import LAUNCHES

    assert all((ROOT / "robot" / "nodes" / f"{m}.py").exists() for m in LAUNCHES[calls[0]])
    assert (ROOT / "launch" / "params" / name.replace(".launch.py", ".yaml")).exists()


def test_robot_and_teleop_never_import_torch_learning_or_rclpy_outside_nodes():
    banned = {"torch", "diffusers", "transformers", "learning"}
    for pkg in ("robot", "teleop"):
        for path in (ROOT / pkg).rglob("*.py"):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith("robot/sim/"):
                continue  # the simulator imports its torch lazily
            tree = ast.parse(path.read_text())
            names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
            names |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
            assert not names & banned, f"{rel} imports {names & banned}"
            if not rel.startswith("robot/nodes/"):
                assert "rclpy" not in names, f"{rel} imports rclpy"


# The application layer: entry points and the process graph that compose devices, teleop and calibration into a
# running robot process.
# (ROS 2 node shells stay in robot/nodes/, the one place rclpy may be imported.)
APPLICATION = ("robot/main.py", "robot/deploy.py", "robot/ros_graph.py", "robot/nodes/")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    return names | {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}


def test_the_base_layers_never_import_the_application_layer():
    """robot/ (but its application layer), teleop/ and calibration/ import nothing above them: no entry point, no
    node shell; robot's base imports neither teleop nor calibration (they build on it, not it on them)."""
    app_modules = ("robot.main", "robot.deploy", "robot.ros_graph", "robot.nodes")
    for pkg in ("robot", "teleop", "calibration"):
        for path in (ROOT / pkg).rglob("*.py"):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith(APPLICATION):
                continue
            names = _imports(path)
            up = {n for n in names if n.startswith(app_modules)}
            if pkg == "robot":
                up |= {n for n in names if n.split(".")[0] in ("teleop", "calibration")}
            assert not up, f"{rel} imports {sorted(up)}, above its layer"


# ---------------------------------------------------------------------------------------------- collector logic
class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def feed(col, clock, T, msgs=True):
    """One control period of messages, converted from rosbags messages like the node shell does."""
    clock.t += 0.1
    img = rosmsg.image_msg(np.full((8, 8, 3), int(clock.t * 10) % 255, np.uint8), clock.t, "cam", types=T)
    col.on_image("front", rosmsg.image_from_msg(img), rosmsg.stamp_to_float(img.header.stamp))
    js = rosmsg.joint_state_msg(["j1", "fr3_finger_joint1", "fr3_finger_joint2"], [0.1, 0.04, 0.04], clock.t, types=T)
    names, pos, _, _, _ = rosmsg.joint_state_from_msg(js)
    pose = rosmsg.pose_from_msg(rosmsg.pose_stamped_msg([0.4, 0, 0.3, 0, 0, 0, 1], clock.t, "base", types=T))
    from robot.nodes.config import gripper_opening

    col.on_state(pos, pose, gripper_opening(names, pos, ("fr3_finger_joint1", "fr3_finger_joint2"), 0.08), clock.t)
    if msgs:
        act = rosmsg.float64_array_msg([0.2, 0, 0, 0, 0, 0, 1], types=T)
        col.on_action(rosmsg.float64_array_from_msg(act), clock.t)
    return col.tick()


def test_stream_collector_builds_labelled_sans_episodes():
    T, clock, saved, prompts = rosmsg.default_types(), Clock(), [], []
    col = StreamCollector(CollectorConfig(task="pick", success=1, near_success=1), saved.append, clock=clock, on_prompt=prompts.append)
    assert "SUCCESS" in prompts[-1]
    assert not feed(col, clock, T)  # idle: nothing recorded before "start"
    col.on_event("start")
    assert sum(feed(col, clock, T) for _ in range(5)) == 5
    col.on_event("success")
    assert saved[-1].outcome == "success" and len(saved[-1]) == 5 and saved[-1].source == "teleop"
    assert saved[-1].gripper[0] == pytest.approx(1.0) and saved[-1].actions[0, 0] == pytest.approx(0.2)
    assert "NEAR-SUCCESS" in prompts[-1]
    col.on_event("start")
    for _ in range(3):
        feed(col, clock, T)
    col.on_event("rerecord")  # discarded, asked again
    assert col.tally.discarded == 1 and "NEAR-SUCCESS" in prompts[-1]
    col.on_event("start")
    for _ in range(4):
        feed(col, clock, T, msgs=False)  # no teleop action: holds are recorded as interventions
    col.on_event("save_next")
    col.on_event("near_success")
    assert saved[-1].outcome == "near_success" and saved[-1].interventions.all() and not saved[-1].actions[:, :6].any()
    assert "targets reached" in prompts[-1]


def test_stream_collector_starts_on_next_from_a_device_without_a_start_button():
    T, clock, saved = rosmsg.default_types(), Clock(), []
    col = StreamCollector(CollectorConfig(task="pick", success=1, near_success=1), saved.append, clock=clock)
    col.on_event("success")  # idle: a label starts nothing
    assert col.state == "idle" and not feed(col, clock, T)
    col.on_event("save_next")  # two-button SpaceMouse right button / gamepad start
    assert col.state == "recording" and feed(col, clock, T)
    col.on_event("save_next")
    col.on_event("save_next")  # awaiting its label: a second press does not start another episode
    assert col.state == "awaiting_label"


def test_stream_collector_reports_stale_inputs_and_the_steps_of_the_episode():
    """What the collector node logs from (its inputs arrive fresh; an episode's first recorded step)."""
    T, clock, saved = rosmsg.default_types(), Clock(), []
    col = StreamCollector(CollectorConfig(task="pick"), saved.append, clock=clock)
    assert col.stale_inputs() == ["front", "robot state"] and col.steps == 0  # nothing received yet
    assert not feed(col, clock, T) and col.stale_inputs() == [] and col.steps == 0  # fresh, idle
    col.on_event("start")
    assert feed(col, clock, T) and col.steps == 1 and feed(col, clock, T) and col.steps == 2
    clock.t += 0.25
    assert col.stale_inputs() == ["front", "robot state"]
    col.on_event("stop")
    assert col.state == "awaiting_label" and col.steps == 0


def test_stream_collector_stalled_camera_ends_the_episode_and_shutdown_keeps_it():
    T, clock, saved = rosmsg.default_types(), Clock(), []
    col = StreamCollector(CollectorConfig(task="pick", max_stale_ticks=3), saved.append, clock=clock)
    col.on_event("start")
    for _ in range(4):
        feed(col, clock, T)
    ticks = 0
    while col.state == "recording" and ticks < 20:  # the camera stops; the state keeps coming
        clock.t += 0.1
        col.on_state(np.zeros(3), np.array([0, 0, 0, 0, 0, 0, 1.0]), 1.0, clock.t)
        col.tick()
        ticks += 1
    # frames up to max_age_s (0.2 s) old are still used, then 3 stale ticks end the episode
    assert col.state == "awaiting_label" and ticks == 2 + 3 and col.stale_ticks == 3
    ep = col.flush()  # the operator quits without labelling: saved unlabeled, not lost
    assert ep is saved[-1] and ep.outcome == "unlabeled" and len(ep) == 6 and "camera_stalled" in ep.info["end_reason"]
    assert ep.extras["frame_repeated"][-2:].all()  # the two steps that reused the last frame say so


# ---------------------------------------------------------------------------------------------- policy node logic
def test_topic_arm_twist_and_trajectory_outputs():
    sent = []
    arm = TopicArm("twist", lambda *a: sent.append(a), hz=10)
    arm.connect()
    with pytest.raises(DeviceNotConnectedError, match="no robot state"):
        arm.read_state()
    arm.update_state(np.zeros(7), np.array([0.4, 0, 0.3, 0, 0, 0, 1.0]), 1.0, 0.0)
    arm.send_action(np.array([0.5, 0, -1, 0, 0, 0.2, -1]))
    twist, grip = sent[-1]
    np.testing.assert_allclose(twist, [0.5, 0, -1.0, 0, 0, 0.2])  # 1.0 = 0.1 m / 0.1 rad per step at 10 Hz
    assert grip == -1
    with pytest.raises(ValueError, match="ik"):
        TopicArm("joint_trajectory", print, hz=10)
    traj = TopicArm("joint_trajectory", lambda *a: sent.append(a), hz=10, ik=lambda state, target: target[:3] * 10)
    traj.connect()
    traj.update_state(np.zeros(7), np.array([0.4, 0, 0.3, 0, 0, 0, 1.0]), 1.0, 0.0)
    traj.send_action(np.array([1, 0, 0, 0, 0, 0, 1]))
    positions, dt, _ = sent[-1]
    np.testing.assert_allclose(positions, [[5.0, 0, 3.0]])
    msg = rosmsg.joint_trajectory_msg(["a", "b", "c"], positions, dt, 1.0)
    assert rosmsg.joint_trajectory_from_msg(msg)[2][0] == pytest.approx(0.1)


def test_policy_node_loop_over_topics_without_ros():
    """The policy node's episode: TopicCamera + TopicArm + runner, fed by a publisher thread."""
    import threading

    published = []
    cam = TopicCamera("front", warmup_s=2.0)
    arm = TopicArm("twist", lambda *a: published.append(a), hz=20)
    arm.connect()
    stop = threading.Event()

    def publisher():
        while not stop.is_set():
            now = time.monotonic()
            cam.push(np.zeros((8, 8, 3), np.uint8), now)
            arm.update_state(np.zeros(7), np.array([0.4, 0, 0.3, 0, 0, 0, 1.0]), 1.0, now)
            time.sleep(0.01)

    th = threading.Thread(target=publisher, daemon=True)
    th.start()
    try:
        cam.connect()

        class Src:
            def reset(self, instruction):
                pass

            def next_chunk(self, obs):
                return np.tile([0.1, 0, 0, 0, 0, 0, 1], (4, 1)).astype(np.float32)

        runner = EpisodeRunner(arm, {"front": cam}, SafetyFilter(SafetyConfig(ramp_steps=1, **KINEMATIC_SAFETY), arm.limits),
                               RunnerConfig(hz=20, max_steps=8, rig="ros2"), MonotonicClock())
        res = runner.run(Src(), "task")
    finally:
        stop.set()
        th.join()
        cam.disconnect()
    assert res.end_reason == "max_steps" and len(published) >= 8
    np.testing.assert_allclose(published[0][0][0], 0.1 * 0.1 * 20)
