"""The rclpy-free parts of the ROS 2 graph: the loopback environment, the node command lines and the table the
launch files share, the simulated arm driver's twist/timeout semantics, teleop scripts, the /proc socket reader."""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path

import numpy as np
import pytest

from robot.arms.fake import KinematicArm
from robot.arms.sim_driver import SimArmDriver, render_topdown
from robot.arms.topic import TopicArm
from robot.ros_env import PROFILE, inet_sockets, outside_loopback, private_domain_id, ros_env
from robot.ros_graph import LAUNCHES, NODES, node_command, params_file
from teleop.scripted import load_script

ROOT = Path(__file__).resolve().parents[2]


def test_ros_env_is_loopback_only_on_a_private_domain(tmp_path):
    env = ros_env(private_domain_id(3), tmp_path / "log", base={"ROS_LOCALHOST_ONLY": "1", "ROS_STATIC_PEERS": "10.0.0.2", "PATH": "/bin"})
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST" and 1 <= int(env["ROS_DOMAIN_ID"]) <= 101
    assert env["FASTRTPS_DEFAULT_PROFILES_FILE"] == env["FASTDDS_DEFAULT_PROFILES_FILE"] == str(PROFILE)
    assert "ROS_STATIC_PEERS" not in env and "ROS_LOCALHOST_ONLY" not in env and env["PATH"] == "/bin"
    assert Path(env["ROS_LOG_DIR"]).is_dir()
    xml = PROFILE.read_text()
    assert "<interfaceWhiteList><address>127.0.0.1</address></interfaceWhiteList>" in xml
    assert "<useBuiltinTransports>false</useBuiltinTransports>" in xml and "239.255" not in xml
    with pytest.raises(ValueError, match="private range"):
        ros_env(0)
    assert len({private_domain_id(s) for s in range(5)}) == 5


def test_node_commands_and_the_launch_table_agree_with_the_files():
    cmd = node_command("policy_node", params_file("sim_deploy"), {"artifact": "p/1", "max_steps": 5, "sink": "link", "cameras": ["a", "b"]})
    assert cmd[1:5] == ["-m", "robot.nodes.policy_node", "--ros-args", "-r"] and "__node:=policy_node" in cmd
    assert cmd[cmd.index("--params-file") + 1].endswith("launch/params/sim_deploy.yaml")
    assert "artifact:='p/1'" in cmd and "max_steps:=5" in cmd and "cameras:=['a','b']" in cmd
    from robot.nodes.config import load_params_file

    for launch, nodes in LAUNCHES.items():
        assert set(load_params_file(params_file(launch))) == set(nodes), launch  # every node has its parameters
    for module in NODES.values():
        assert (ROOT / "robot" / "nodes" / f"{module}.py").exists()
    with pytest.raises(ValueError, match="not one of"):
        node_command("lidar_node")


class _Recorded:
    """Stands in for a `launch` class: keeps its arguments."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


def test_launch_files_start_the_table_s_nodes_with_its_command_lines(monkeypatch):
    """`launch` / `launch_ros` are not installable here: the launch files run against recording stand-ins, and
    what they would start must be the `LAUNCHES` table's nodes with `node_command`'s command lines."""
    import runpy
    import sys
    import types

    for name, attrs in {"launch": ["LaunchDescription"], "launch.actions": ["DeclareLaunchArgument", "ExecuteProcess", "OpaqueFunction"],
                        "launch.conditions": ["UnlessCondition"], "launch.substitutions": ["LaunchConfiguration"]}.items():
        mod = types.ModuleType(name)
        for a in attrs:
            setattr(mod, a, type(a, (_Recorded,), {}))
        monkeypatch.setitem(sys.modules, name, mod)
    files = sorted(p.name.removesuffix(".launch.py") for p in (ROOT / "launch").glob("*.launch.py"))
    assert set(LAUNCHES) <= set(files) and set(files) - set(LAUNCHES) == {"calibration"}  # calibration_tf: tf2, see README
    for launch, nodes in LAUNCHES.items():
        desc = runpy.run_path(str(ROOT / "launch" / f"{launch}.launch.py"))["generate_launch_description"]()
        procs = [a for a in desc.args[0] if type(a).__name__ == "ExecuteProcess"]
        assert [p.kwargs["name"] for p in procs] == list(nodes), launch
        for p, node in zip(procs, nodes):
            cmd = p.kwargs["cmd"]
            assert cmd[:-2] == node_command(node) and cmd[-2] == "--params-file", cmd
        default = next(a for a in desc.args[0] if type(a).__name__ == "DeclareLaunchArgument" and a.args[0] == "params")
        assert default.kwargs["default_value"] == str(params_file(launch))


def test_sim_driver_inverts_the_topic_arm_s_twist_and_holds_on_a_stale_command():
    t = [0.0]
    arm = KinematicArm()
    arm.connect()
    driver = SimArmDriver(arm, lambda: render_topdown(arm.read_state().ee_pose, arm.read_state().gripper, 32), hz=10,
                          command_timeout_s=0.3, clock=lambda: t[0], reset=lambda seed, stride=1: (arm.reset(), seed)[1])
    sent = []
    topic = TopicArm("twist", lambda twist, grip: sent.append((twist, grip)), hz=10, limits=arm.limits)
    topic.connect()
    a = np.array([0.5, -0.2, 0.1, 0.0, 0.0, 0.3, -1.0])
    topic.send_action(a)
    driver.on_twist(sent[-1][0])
    driver.on_gripper(sent[-1][1])
    np.testing.assert_allclose(driver.action(), a, atol=1e-6)  # the action the policy meant, on the simulated arm
    x0 = arm.read_state().ee_pose[0]
    out = driver.tick()
    assert out.step == 1 and out.rgb.shape == (32, 32, 3) and math.isclose(out.state.ee_pose[0] - x0, 0.5 * arm.limits.max_translation_m, rel_tol=1e-5)
    t[0] = 0.31  # no new command within Servo's timeout: zero motion, the gripper target stays
    np.testing.assert_allclose(driver.action(), [0, 0, 0, 0, 0, 0, -1.0])
    driver.on_twist(np.array([np.nan, 0, 0, 0, 0, 0]))  # dropped
    np.testing.assert_allclose(driver.action()[:6], 0)
    assert driver.on_event("camera_off") == "camera off" and driver.tick(move=False).rgb is None
    assert driver.on_event("reset 7") == "reset to seed 7" and driver.step == 0 and np.allclose(arm.read_state().ee_pose[:3], (0, 0, 0.3))
    assert "ignored" in driver.on_event("fly")


def test_teleop_scripts_expand_and_refuse_bad_steps(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("- {repeat: 3, twist: [1, 0, 0, 0, 0, 0], gripper: -1}\n- {event: success}\n- {enabled: false}\n")
    cmds = load_script(str(p))
    assert len(cmds) == 5 and cmds[0].twist[0] == 1 and cmds[2].gripper == -1 and cmds[3].event.value == "success"
    assert not cmds[4].enabled
    for bad, match in (("- {twist: [2, 0, 0, 0, 0, 0]}", "twist"), ("- {event: fly}", "fly"), ("- {speed: 1}", "unknown keys"),
                       ("{a: 1}", "YAML list")):
        p.write_text(bad)
        with pytest.raises(ValueError, match=match):
            load_script(str(p))


def test_inet_sockets_reads_this_process_s_sockets_from_proc():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.connect(("127.0.0.1", 9))
    try:
        mine = [x for x in inet_sockets(os.getpid()) if x["local_port"] == s.getsockname()[1]]
        assert mine == [{"proto": "udp", "local": "127.0.0.1", "local_port": s.getsockname()[1], "remote": "127.0.0.1", "remote_port": 9}]
        assert not outside_loopback(mine)
        assert outside_loopback([{**mine[0], "remote": "192.0.2.7"}])
    finally:
        s.close()


class _FlagSim:
    """A stand-in simulator for reset_unsolved: seeds in ``solved`` are solved at reset; ``success`` is settable."""

    def __init__(self, solved=()):
        self.solved, self.success, self.seeds = set(solved), False, []

    def reset(self, seed):
        self.seeds.append(seed)
        self.success = seed in self.solved


def test_sim_topics_client_resets_with_stride_and_reads_the_flag_after_every_command_sent():
    """robot.ros_rig over an in-process driver (the topics as calls; status messages delivered when the test says):
    a reset skips solved seeds by the stride as reset_unsolved does, success() waits for the driver's step."""
    from robot.ros_rig import SimTopics, ros_sim_rig, wait_fresh
    from robot.sim.rollout import reset_unsolved

    arm = KinematicArm()
    arm.connect()
    sim = _FlagSim(solved={100, 103})
    driver = SimArmDriver(arm, lambda: np.zeros((8, 8, 3), np.uint8), reset=lambda s, stride=1: reset_unsolved(sim, s, stride),
                          success=lambda: sim.success, hz=10, instruction="reach")
    client = SimTopics(lambda text: (driver.on_event(text), client.on_status(driver.status_json(driver.tick(move=False)))),
                       command_wait_s=0.2)
    with pytest.raises(TimeoutError, match="first status"):
        client.first_status(0.05)
    client.on_status(driver.status_json(driver.tick(move=False)))
    assert client.first_status(1.0)["instruction"] == "reach"
    played, stamp = client.reset(100, 3)  # 100 solved -> 103 solved -> 106
    assert played == 106 and sim.seeds == [100, 103, 106] and stamp > 0
    # a command sent but not yet stepped by the driver: success() waits for it (and counts the late read)
    client.note_command()
    driver.on_twist(np.zeros(6))
    sim.success = True
    assert client.success() is False and client.late == 1  # the status of the step has not arrived
    assert client.wait_applied(0.01) is None and client.late == 2
    out = driver.tick()
    client.on_status(driver.status_json(out))
    assert client.success() is True and client.late == 2 and client.wait_applied(0.01) == out.stamp
    # the rig: reset_scene(i, stride) -> seed_base + i on the driver, then waits for a state/frame of the new scene
    cam = type("Cam", (), {"latest_stamp": lambda self: 1e12})()
    rig = ros_sim_rig(arm, {"front": cam}, client, "reach", seed_base=200)
    assert rig.reset_scene(1, 5) == 201 and rig.success() is False and rig.instruction == "reach"
    stale = type("Cam", (), {"latest_stamp": lambda self: None})()
    with pytest.raises(TimeoutError, match="new scene"):
        wait_fresh(arm, {"front": stale}, 0.0, 0.05)


def test_sim_deploy_params_are_the_simulated_rig_s_and_validate(tmp_path):
    from robot.nodes.config import load_params_file
    from robot.ros_graph import sim_deploy_params
    from robot.sim.rollout import sim_safety_config

    path = sim_deploy_params(tmp_path, sim={"kind": "maniskill", "task": "PickCube-v1", "image_size": 64, "control_hz": 10,
                                            "max_steps": 12, "camera_eye": None}, endpoint="tcp://127.0.0.1:5", secret_key="k/r.key_secret",
                             learner_key="k/learner.key", robot_id="robot-1", episodes=3, eval_seed=2000000, max_steps=12)
    cfg = load_params_file(path)
    arm, pol = cfg["sim_arm_node"], cfg["policy_node"]
    assert arm.kind == "maniskill" and arm.step_on == "command" and arm.seed == 2000000 and "camera_eye" not in arm.sim_json
    assert pol.mode == "deploy" and pol.sink == "link" and pol.success_topic == arm.status_topic and pol.sim_event_topic == arm.event_topic
    assert (pol.deploy.episodes, pol.deploy.eval_seed, pol.max_steps, pol.rate_hz) == (3, 2000000, 12, 10.0)
    assert pol.safety == sim_safety_config() and pol.pose_frame == "world" and pol.lockstep
    from robot.nodes.config import PolicyNodeConfig

    with pytest.raises(ValueError, match="mode=deploy"):
        PolicyNodeConfig(mode="deploy", sink="folder")
