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


def test_camera_node_publishes_image_and_camera_info_at_its_rate_over_loopback_only(graph, probe):
    from sensor_msgs.msg import CameraInfo, Image

    images = probe.listen(Image, "/camera/color/image_raw", sensor=True)
    infos = probe.listen(CameraInfo, "/camera/color/camera_info", sensor=True)
    strace = shutil.which("strace")
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
