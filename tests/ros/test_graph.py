"""The ROS 2 nodes as processes on a private DDS domain over loopback, talking to each other and to the test's
probe over real topics: camera node -> Image + CameraInfo at its rate; teleop node (scripted device) -> sim arm
driver node + collector node -> labelled SANS episodes on disk; policy node (ONNX artifact with the state input)
driving the simulated arm driver node -> an episode in the outbox -> the learner over the link; e-stop on the
event topic; a camera topic that stops mid-episode. Every graph's sockets stay on loopback."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from robot.ros_env import bound_outside_loopback, inet_sockets, outside_loopback
from robot.ros_graph import params_file
from robot.sinks import read_episode_file
from tests.factories import reach_policy_artifact
from tests.ros.conftest import wait_until

pytestmark = pytest.mark.timeout(120)

CAMERA = {"kind": "synthetic", "width": 64, "height": 64, "fps": 30, "depth": False}


def _check_loopback(pids: list[int]) -> None:
    """No socket of the graph's processes is connected to a peer outside 127.0.0.0/8 (or ::1)."""
    for pid in pids:
        socks = inet_sockets(pid)
        assert socks, f"pid {pid}: no inet sockets found (is it a DDS participant?)"
        assert not outside_loopback(socks), f"pid {pid}: sockets connected outside loopback: {outside_loopback(socks)}"


def _datagram_destinations(trace: Path) -> set[str]:
    text = trace.read_text(errors="replace")
    return set(re.findall(r'inet_addr\("([0-9.]+)"\)', text)) | set(re.findall(r'inet_pton\(AF_INET6, "([0-9a-f:.]+)"', text))


def _working_strace() -> str | None:
    """strace, where it exists and may trace (a container without ptrace rights: the datagram check is skipped)."""
    exe = shutil.which("strace")
    if exe is None:
        return None
    return exe if subprocess.run([exe, "-qq", "-o", os.devnull, "true"], capture_output=True).returncode == 0 else None


def test_camera_node_publishes_image_and_camera_info_at_its_rate_over_loopback_only(graph, probe):
    from sensor_msgs.msg import CameraInfo, Image

    images = probe.listen(Image, "/camera/color/image_raw", sensor=True)
    infos = probe.listen(CameraInfo, "/camera/color/camera_info", sensor=True)
    strace = _working_strace()
    trace = graph.work / "camera.strace"
    wrap = [strace, "-f", "-qq", "-e", "trace=sendto,sendmsg,sendmmsg,connect", "-e", "signal=none", "-o", str(trace)] if strace else []
    cam = graph.start("camera_node", params_file("collect"), CAMERA, wrap=wrap)
    wait_until(lambda: len(images) >= 5, 30, "first camera images", graph)
    n0, t0 = len(images), time.monotonic()
    time.sleep(2.0)  # a measurement window, not a synchronisation: the rate is what is measured
    n1, t1 = len(images), time.monotonic()
    rate = (n1 - n0) / (t1 - t0)
    assert 0.75 * CAMERA["fps"] <= rate <= 1.15 * CAMERA["fps"], f"{rate:.1f} Hz for a {CAMERA['fps']} fps camera"
    assert len(infos) >= n0  # one CameraInfo per image
    _, msg = images[-1]
    assert (msg.width, msg.height, msg.encoding, msg.header.frame_id) == (64, 64, "rgb8", "camera_color_optical_frame")
    from robot import rosmsg

    assert rosmsg.image_from_msg(msg).shape == (64, 64, 3)
    K, _, w, h = rosmsg.camera_info_from_msg(infos[-1][1])
    assert (w, h) == (64, 64) and K[0, 2] == 32
    # while the graph runs: the node (under strace its child) and this probe hold loopback sockets only
    pids = [os.getpid()] + ([int(p) for p in Path(f"/proc/{cam.pid}/task/{cam.pid}/children").read_text().split()] if strace else [cam.pid])
    _check_loopback(pids)
    graph.stop()
    assert cam.proc.returncode == 0, cam.log_text()[-2000:]
    if strace:  # every datagram the node sent went to a loopback address
        dests = _datagram_destinations(trace)
        assert dests and all(d.startswith("127.") or d == "::1" for d in dests), f"datagrams sent to {sorted(dests)}"
    print(f"camera_node: {rate:.1f} Hz (configured {CAMERA['fps']}), bound outside loopback by rmw's LOCALHOST "
          f"transport: {sorted({s['local'] for s in bound_outside_loopback(inet_sockets(os.getpid()))})}")


# ---------------------------------------------------------------------------------------------- policy + sim arm
TARGET = (0.1, -0.05, 0.25)  # the reach policy's target; the kinematic arm starts at (0, 0, 0.3)


def _deploy_graph(graph, probe, tmp_path, **policy):
    """sim_arm_node (kinematic) + policy_node (reach artifact with the state input), both from sim_deploy.yaml."""
    from std_msgs.msg import String

    art = reach_policy_artifact(tmp_path / "policy", target=TARGET)
    status = probe.listen(String, "/policy/status")
    graph.start("sim_arm_node", params_file("sim_deploy"))
    graph.start("policy_node", params_file("sim_deploy"), {"artifact": str(art), "outbox": str(tmp_path / "outbox"), **policy})
    events = probe.publisher(String, "/policy/event")
    sim_events = probe.publisher(String, "/sim/event")
    probe.wait_subscribed(events)
    probe.wait_subscribed(sim_events)
    return status, events, sim_events


def _publish(pub, text: str) -> None:
    from std_msgs.msg import String

    pub.publish(String(data=text))


def _status(status, graph, timeout_s: float = 30.0) -> dict:
    wait_until(lambda: status, timeout_s, "policy/status (the episode's end)", graph)
    return json.loads(status[-1][1].data)


def test_policy_node_drives_the_simulated_arm_driver_and_the_episode_reaches_the_learner(graph, probe, tmp_path):
    from geometry_msgs.msg import TwistStamped

    from learning.data.store import EpisodeStore
    from learning.loop import ROBOT_ID, make_keys
    from learning.server.learner import LearnerServer

    learner_keys, key_dir = make_keys(tmp_path / "keys")
    server = LearnerServer(tmp_path / "learner", "tcp://127.0.0.1:*", learner_keys).start()
    try:
        twists = probe.listen(TwistStamped, "/servo_node/delta_twist_cmds")
        status, events, _ = _deploy_graph(
            graph, probe, tmp_path, max_steps=15, sink="link", link_endpoint=server.endpoint, robot_id=ROBOT_ID,
            link_secret_key=str(key_dir / f"{ROBOT_ID}.key_secret"), link_learner_key=str(key_dir / "learner.key"))
        _publish(events, "start")
        st = _status(status, graph)
        assert st["end_reason"] == "max_steps" and st["steps"] == 16 and st["outcome"] == "unlabeled", st
        store = EpisodeStore(tmp_path / "learner", create=False)

        def arrived() -> bool:
            store.refresh()
            return len(store) == 1

        wait_until(arrived, 30, "the episode committed by the learner", graph)
        row = store.row(0)
        assert row["uuid"] == st["uuid"] and row["policy_version"] == "reach-1" and row["robot_id"] == ROBOT_ID
        ep = store.read(0)
        assert len(ep) == 16 and ep.images["front"].shape == (16, 64, 64, 3) and ep.rig == "ros2"
        _check_reached(ep.ee_pose, graph)
        assert len(twists) >= 10 and all(t[1].header.frame_id == "base_link" for t in twists)
        # The learner commits, then acks; the robot deletes its spool file when the ack arrives, a moment later.
        wait_until(lambda: not list((tmp_path / "outbox").glob("*.ep")), 30,
                   "the committed episode leaving the robot's spool", graph)
    finally:
        graph.stop()
        server.close()
    assert all(n.proc.returncode == 0 for n in graph.nodes.values()), graph.tails()


def _check_reached(ee_pose, graph) -> None:
    """The arm moved towards the reach policy's target: the state input arrived and the twists moved the arm."""
    ee = np.asarray(ee_pose)
    d0, d1 = np.linalg.norm(ee[0, :3] - TARGET), np.linalg.norm(ee[-1, :3] - TARGET)
    assert d1 < 0.5 * d0, f"distance to the target {d0:.3f} -> {d1:.3f} m\n{graph.tails()}"


def _episode(outbox: Path, uuid: str):
    return read_episode_file(outbox / f"{uuid}.episode")


def test_estop_on_the_event_topic_latches_the_filter_and_the_arm_holds(graph, probe, tmp_path):
    from geometry_msgs.msg import TwistStamped

    twists = probe.listen(TwistStamped, "/servo_node/delta_twist_cmds")
    status, events, _ = _deploy_graph(graph, probe, tmp_path, max_steps=200)
    _publish(events, "start")
    wait_until(lambda: sum(np.abs(t[1].twist.linear.x) > 1e-6 for t in twists) >= 3, 20, "the policy moving the arm", graph)
    _publish(events, "estop")
    n_at_estop = len(twists)
    wait_until(lambda: len(twists) >= n_at_estop + 8, 20, "twists after the e-stop", graph)
    _publish(events, "stop")
    st = _status(status, graph)
    assert st["end_reason"] == "stopped", st
    after = [t[1].twist for t in twists[n_at_estop + 2:]]  # one command may have been in flight
    assert after and all(max(abs(v.linear.x), abs(v.linear.y), abs(v.linear.z)) < 1e-9 for v in after)
    ep = _episode(tmp_path / "outbox", st["uuid"])
    assert ep.info["safety"]["estop"] >= 6 and ep.interventions[-7:-1].all(), ep.info["safety"]  # held (the last row: the final observation)
    assert (ep.extras["safety_flags"][-7:-1] & 1).all()  # SafetyFlag.ESTOP on every held step
    # the e-stop stays latched: the next episode holds from its first step
    n0 = len(twists)
    _publish(events, "start")
    wait_until(lambda: len(twists) >= n0 + 5, 20, "the next episode's twists", graph)
    assert all(abs(t[1].twist.linear.x) < 1e-9 for t in twists[n0:])
    _publish(events, "stop")


def test_a_camera_topic_that_stops_mid_episode_ends_it_with_its_reason_and_keeps_the_frames(graph, probe, tmp_path):
    from geometry_msgs.msg import TwistStamped

    twists = probe.listen(TwistStamped, "/servo_node/delta_twist_cmds")
    status, events, sim_events = _deploy_graph(graph, probe, tmp_path, max_steps=200)
    _publish(events, "start")
    wait_until(lambda: len(twists) >= 6, 20, "the episode under way", graph)
    _publish(sim_events, "camera_off")  # the camera driver stops publishing; state keeps coming
    st = _status(status, graph)
    assert st["end_reason"] == "camera_stalled" and "no new frame" in st["detail"], st
    ep = _episode(tmp_path / "outbox", st["uuid"])
    assert len(ep) >= 5 and ep.images["front"].shape[0] == len(ep) and "camera_stalled" in ep.info["end_reason"]


# ---------------------------------------------------------------------------------------------- SANS collection
SCRIPT = """# 30 Hz teleop ticks: two labelled demonstrations, then one the operator leaves unlabelled
- {repeat: 6, enabled: false}
- {event: start}
- {repeat: 24, twist: [1, 0, 0, 0, 0, 0], gripper: 1}
- {event: success}
- {repeat: 6, enabled: false}
- {event: start}
- {repeat: 24, twist: [0, 1, 0, 0, 0, 0], gripper: -1}
- {event: near_success}
- {repeat: 6, enabled: false}
- {event: start}
- {repeat: 24, twist: [0, 0, 1, 0, 0, 0]}
"""


def test_teleop_node_drives_the_arm_and_the_collector_writes_labelled_episodes(graph, probe, tmp_path):
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    script = tmp_path / "script.yaml"
    script.write_text(SCRIPT)
    out = tmp_path / "outbox"
    events = probe.listen(String, "/teleop/event")
    images = probe.listen(Image, "/camera/color/image_raw", sensor=True)
    graph.start("sim_arm_node", params_file("sim_deploy"))
    collector = graph.start("collector_node", params_file("collect"), {
        "outbox": str(out), "success": 1, "near_success": 1, "gripper_joints": ["panda_finger_joint1", "panda_finger_joint2"]})
    wait_until(lambda: len(images) >= 3, 20, "the simulated arm's camera", graph)
    graph.wait_log("collector_node", "next: SUCCESS", 20)  # the collector is up and asks for a success first
    graph.wait_log("collector_node", "inputs fresh", 20)  # ... and receives the arm's images and state
    # the script plays once its listeners matched: the arm (twist), the collector (action, events) and this probe
    # (events: two subscribers, else whichever of collector and probe matched first starts it and the other misses events)
    graph.start("teleop_node", params_file("collect"), {"device": "scripted", "script_file": str(script),
                                                        "axis_remap": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                                                        "wait_for_subscribers.event": 2})
    wait_until(lambda: len(events) >= 5, 30, "the script's five events", graph)
    wait_until(lambda: len(list(out.glob("*.episode"))) >= 2, 20, "two labelled episodes on disk", graph)
    # the third (unlabelled) demonstration has a recorded step, so stopping the collector saves it; its length is not asserted
    graph.wait_log("collector_node", "recording episode 3: first step", 20)
    graph.stop("teleop_node")
    graph.stop("collector_node")  # SIGINT: the unfinished episode is saved unlabeled
    assert collector.proc.returncode == 0, collector.log_text()[-2000:]
    eps = sorted((read_episode_file(p) for p in out.glob("*.episode")), key=lambda e: e.timestamps[0])
    assert [e.outcome for e in eps] == ["success", "near_success", "unlabeled"], [e.info.get("end_reason") for e in eps]
    assert [e.source for e in eps] == ["teleop"] * 3 and all(e.task == "pick up the red cube and put it on the plate" for e in eps)
    first, second = eps[0], eps[1]
    assert len(first) >= 5 and first.images["front"].shape[1:] == (64, 64, 3)
    assert first.actions[:, 0].max() > 0.1 and np.ptp(first.ee_pose[:, 0]) > 0.01  # +x, and the arm moved in x
    assert second.actions[:, 1].max() > 0.1 and second.actions[-1, 6] == -1  # +y, the gripper target closed
    assert "collected: success 1/1  near_success 1/1  failure 0  unlabeled 1" in collector.log_text()
