"""ROS 2 over loopback: the camera node's image topic and the policy node's camera -> twist loop, beside the
same without ROS.

1. Image topic: ``camera_node`` (a synthetic camera, 64x64 - the policy's resolution - and 640x480 - a
   RealSense's colour stream) at 10 and 30 fps, received by a subscriber in this process: achieved rate and
   latency capture -> received (the image header carries the capture time on the monotonic clock, which both
   processes share). Beside it, the same camera read in-process (`SyntheticCamera.read`, no ROS).
2. Camera -> policy -> twist: ``sim_arm_node`` (kinematic arm, its camera at the rate) + ``policy_node`` (an ONNX
   policy with the state input, re-planning every step) at 10 and 30 Hz. Measured here, where both topics
   arrive: the rate of twists, and image -> twist = a twist's arrival minus the arrival of the newest image
   before it (the wait for the runner's tick, read, infer, filter, publish, plus the DDS hops). Beside it, the
   same runner, policy, camera and arm in one process without ROS, measured the same way: a command's departure
   minus the newest frame's arrival before it. Both include the phase between the camera's period and the runner's tick
   (0 to one period, it differs from run to run: the two processes' timers are not aligned), so they are a
   frame's age when its command leaves, not a transport latency; the image topic rows are the transport.

Every process is on a private DDS domain, loopback only (`robot.ros_env`).

    OMP_NUM_THREADS=1 .venv/bin/python bench/ros2.py [--seconds 4]

Last line: name=value pairs (rates in Hz, latencies in ms).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robot.console import print_table  # noqa: E402
from robot.ros_env import private_domain_id  # noqa: E402
from robot.ros_graph import RosGraph, params_file  # noqa: E402


def pct(x, q) -> float:
    return float(np.percentile(np.asarray(x, float), q)) if len(x) else float("nan")


def image_topic(size: tuple[int, int], fps: int, seconds: float, work: Path, salt: int) -> dict:
    from sensor_msgs.msg import Image

    from robot.nodes.probe import Probe, wait_until
    from robot.rosmsg import stamp_to_float

    dom = private_domain_id(salt)
    probe = Probe(dom, "bench")
    try:
        got = probe.listen(Image, "/camera/color/image_raw", sensor=True)
        with RosGraph(dom, work / f"cam-{size[0]}-{fps}") as g:
            g.start("camera_node", params_file("collect"), {"kind": "synthetic", "width": size[1], "height": size[0], "fps": fps, "depth": False})
            wait_until(lambda: len(got) >= 5, 30, "images", g)
            n0, t0 = len(got), time.monotonic()
            time.sleep(seconds)  # the measurement window
            window = got[n0:]
            t1 = time.monotonic()
        lat = [(t - stamp_to_float(m.header.stamp)) * 1e3 for t, m in window]
        return {"rate": len(window) / (t1 - t0), "p50": pct(lat, 50), "p99": pct(lat, 99), "n": len(window)}
    finally:
        probe.close()


def image_in_process(size: tuple[int, int], fps: int, seconds: float) -> dict:
    from robot.cameras.fake import SyntheticCamera, SyntheticCameraConfig

    cam = SyntheticCamera(SyntheticCameraConfig(width=size[1], height=size[0], fps=fps))
    cam.connect()
    lat, t0 = [], time.monotonic()
    while time.monotonic() - t0 < seconds:
        f = cam.read()
        lat.append((time.monotonic() - f.stamp) * 1e3)
    cam.disconnect()
    return {"rate": len(lat) / (time.monotonic() - t0), "p50": pct(lat, 50), "p99": pct(lat, 99), "n": len(lat)}


def policy_loop(hz: int, seconds: float, work: Path, salt: int) -> dict:
    from geometry_msgs.msg import TwistStamped
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from robot.nodes.probe import Probe, wait_until
    from tests.factories import reach_policy_artifact

    art = reach_policy_artifact(work / f"policy-{hz}", hz=float(hz), target=(0.3, 0.3, 0.5), gain=0.5)
    dom = private_domain_id(salt)
    probe = Probe(dom, "bench")
    try:
        images = probe.listen(Image, "/camera/color/image_raw", sensor=True)
        twists = probe.listen(TwistStamped, "/servo_node/delta_twist_cmds")
        with RosGraph(dom, work / f"loop-{hz}") as g:
            g.start("sim_arm_node", params_file("sim_deploy"), {"rate_hz": float(hz)})
            g.start("policy_node", params_file("sim_deploy"), {"artifact": str(art), "rate_hz": float(hz), "replan_every": 1,
                                                                "max_steps": int(hz * (seconds + 10)), "outbox": str(work / f"out-{hz}")})
            events = probe.publisher(String, "/policy/event")
            probe.wait_subscribed(events)
            events.publish(String(data="start"))
            wait_until(lambda: len(twists) >= 5, 30, "twists", g)
            n0, t0 = len(twists), time.monotonic()
            time.sleep(seconds)  # the measurement window
            window, t1 = twists[n0:], time.monotonic()
            events.publish(String(data="stop"))
            img_t = np.array([t for t, _ in images])
        lat = []
        for t, _ in window:
            i = np.searchsorted(img_t, t) - 1
            if i >= 0:
                lat.append((t - img_t[i]) * 1e3)
        return {"rate": len(window) / (t1 - t0), "p50": pct(lat, 50), "p99": pct(lat, 99), "n": len(window)}
    finally:
        probe.close()


def policy_in_process(hz: int, seconds: float, work: Path) -> dict:
    from robot.arms.fake import KinematicArm
    from robot.cameras.fake import SyntheticCamera, SyntheticCameraConfig
    from robot.control import MonotonicClock
    from robot.policy_runtime import PolicyRuntime, RigSpec
    from robot.policy_source import PolicySource
    from robot.runner import EpisodeRunner, RunnerConfig
    from robot.safety import SafetyConfig, SafetyFilter
    from tests.factories import KINEMATIC_SAFETY, reach_policy_artifact

    art = reach_policy_artifact(work / f"policy-inproc-{hz}", hz=float(hz), target=(0.3, 0.3, 0.5), gain=0.5)
    rt = PolicyRuntime(RigSpec(control_hz=float(hz)))
    rt.load(art)
    arm = KinematicArm()
    arm.connect()
    cam = SyntheticCamera(SyntheticCameraConfig(fps=hz))
    arrivals, sends = [], []  # the same two instants the ROS path measures: a frame's arrival, a command's departure
    grab, send = cam._grab, arm.send_action

    def timed_grab(timeout_s):
        f = grab(timeout_s)
        if f is not None:
            arrivals.append(time.monotonic())
        return f

    def timed_send(a):
        out = send(a)
        sends.append(time.monotonic())
        return out

    cam._grab, arm.send_action = timed_grab, timed_send
    cam.connect()
    runner = EpisodeRunner(arm, {"front": cam}, SafetyFilter(SafetyConfig(ramp_steps=1, startup_mode="ramp", **KINEMATIC_SAFETY), arm.limits),
                           RunnerConfig(hz=float(hz), max_steps=int(hz * seconds), replan_every=1), MonotonicClock())
    t0 = time.monotonic()
    runner.run(PolicySource(rt, camera="front"), "move")
    dt = time.monotonic() - t0
    cam.disconnect()
    arr = np.array(arrivals)
    lat = [(t - arr[i]) * 1e3 for t in sends if (i := np.searchsorted(arr, t) - 1) >= 0]
    return {"rate": len(sends) / dt, "p50": pct(lat, 50), "p99": pct(lat, 99), "n": len(sends)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=4.0)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="wvl-bench-ros2-"))
    rows, last = [], {}
    salt = 0
    for size in ((64, 64), (480, 640)):
        for fps in (10, 30):
            salt += 1
            r = image_topic(size, fps, args.seconds, work, salt)
            b = image_in_process(size, fps, args.seconds)
            name = f"{size[1]}x{size[0]}@{fps}"
            rows.append(("image topic", name, f"{r['rate']:.1f}", f"{r['p50']:.2f}", f"{r['p99']:.2f}",
                         f"{b['rate']:.1f}", f"{b['p50']:.2f}", f"{b['p99']:.2f}", f"{r['p99'] / b['p99']:.1f}x"))
            last[f"img{size[1]}_{fps}hz_rate"] = round(r["rate"], 1)
            last[f"img{size[1]}_{fps}hz_p99_ms"] = round(r["p99"], 2)
    for hz in (10, 30):
        salt += 1
        r = policy_loop(hz, args.seconds, work, salt)
        b = policy_in_process(hz, args.seconds, work)
        rows.append(("camera->policy->twist", f"{hz} Hz", f"{r['rate']:.1f}", f"{r['p50']:.2f}", f"{r['p99']:.2f}",
                     f"{b['rate']:.1f}", f"{b['p50']:.2f}", f"{b['p99']:.2f}", f"{r['p99'] / b['p99']:.1f}x"))
        last[f"twist_{hz}hz_rate"] = round(r["rate"], 1)
        last[f"twist_{hz}hz_p50_ms"] = round(r["p50"], 2)
        last[f"twist_{hz}hz_p99_ms"] = round(r["p99"], 2)
    print_table("ROS 2 over loopback (ROS: node processes + a subscriber here) vs in one process",
                ["path", "config", "ROS Hz", "ROS p50 ms", "ROS p99 ms", "no-ROS Hz", "no-ROS p50 ms", "no-ROS p99 ms", "p99 ratio"], rows)
    print(" ".join(f"{k}={v}" for k, v in last.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
