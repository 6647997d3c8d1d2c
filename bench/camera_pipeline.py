"""Camera pipeline: 640x480 RGB (+ aligned depth) frames/s and latency from the RealSense replay path to an
Episode step.

A real RealSense recording (``.db3``, written by pyrealsense2's software device: `write_synthetic_recording`)
is played through `RealSenseCamera` - the same librealsense pipeline as a live D435: playback, frame
sync, ``rs.align`` of depth to colour, the reader thread - then `CameraGroup.read()` and
`EpisodeRecorder.add_step` (with a kinematic arm's state). Two modes, side by side, RGB+depth and RGB only:

- ``throughput``: playback as fast as it is consumed (lossless), frames/s end to end;
- ``30 fps live``: playback paced at the recorded 30 fps, latency = Episode step recorded - frame arrived
  in the camera's reader thread (the time a control loop adds on top of the driver).

    .venv/bin/python bench/camera_pipeline.py [--frames 150]

Last line: rgbd_fps=... rgb_fps=... rgbd_latency_p50_ms=... rgbd_latency_p99_ms=...
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robot.arms.fake import KinematicArm  # noqa: E402
from robot.cameras.group import CameraGroup  # noqa: E402
from robot.cameras.realsense import RealSenseCamera, RealSenseConfig, write_synthetic_recording  # noqa: E402
from robot.cameras.replay import ReplayEndedError  # noqa: E402
from robot.console import print_table  # noqa: E402
from robot.episode import EpisodeRecorder  # noqa: E402
from robot.errors import StaleFrameError  # noqa: E402


def run(path: Path, depth: bool, realtime: bool) -> dict:
    cam = RealSenseCamera(RealSenseConfig(name="front", playback_file=str(path), depth=depth, playback_realtime=realtime))
    group = CameraGroup({"front": cam}, max_age_s=0.05, timeout_s=1.0)
    arm = KinematicArm()
    arm.connect()
    rec = EpisodeRecorder("benchmark", 30.0, rig="bench", source="scripted")
    latencies = []
    t_start = time.perf_counter()
    cam.connect()
    t0 = t_end = None
    try:
        while True:
            try:
                # live mode: each step waits for the next frame, like a 30 Hz loop synchronised to the camera
                g = group.read() if not realtime else type("G", (), {"frames": {"front": cam.read(1.0)}})()
            except (ReplayEndedError, StaleFrameError):
                break
            arrived = time.monotonic() - cam.age()
            f = g.frames["front"]
            s = arm.read_state()
            rec.add_step(timestamp=time.monotonic(), images={"front": f.rgb}, depth={"front": f.depth} if depth else None,
                         joints=s.joints, ee_pose=s.ee_pose, gripper=s.gripper, action=np.zeros(7, np.float32))
            latencies.append(time.monotonic() - arrived)
            t0 = t0 or time.perf_counter()
            t_end = time.perf_counter()  # the last frame recorded (end-of-recording detection excluded)
    finally:
        cam.disconnect()
    n = len(rec)
    tf = time.perf_counter()
    ep = rec.finish("unlabeled")
    finish_ms = (time.perf_counter() - tf) * 1e3
    lat = np.array(latencies[1:]) * 1e3 if len(latencies) > 1 else np.array([np.nan])
    # Frames/s from the first frame recorded to the end (connect/warm-up excluded; it is reported apart).
    return dict(mode="30 fps live" if realtime else "throughput", stream="RGB+depth" if depth else "RGB", frames=n,
                fps=(n - 1) / (t_end - t0) if n > 1 else float("nan"), connect_s=(t0 or t_start) - t_start,
                p50=float(np.percentile(lat, 50)), p99=float(np.percentile(lat, 99)), max=float(np.max(lat)),
                finish_ms=finish_ms, shape=ep.images["front"].shape[1:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=150)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        # Paced at 30 fps while recording: real-time playback then delivers frames at a live camera's rate.
        path = write_synthetic_recording(Path(d) / "session.db3", n_frames=args.frames, width=640, height=480, fps=30, depth=True, paced=True)
        write_s = time.perf_counter() - t
        rows = [run(path, depth, realtime) for realtime in (False, True) for depth in (True, False)]
    print_table(f"RealSense replay -> Episode step, 640x480, {args.frames}-frame .db3 (written in {write_s:.1f} s)",
                ["mode", "stream", "frames", "fps", "lat p50 ms", "lat p99 ms", "lat max ms", "connect s", "finish ms"],
                [(r["mode"], r["stream"], r["frames"], round(r["fps"], 2), round(r["p50"], 3), round(r["p99"], 3), round(r["max"], 3),
                  round(r["connect_s"], 2), round(r["finish_ms"], 1)) for r in rows])
    tp = {r["stream"]: r for r in rows if r["mode"] == "throughput"}
    live = {r["stream"]: r for r in rows if r["mode"] == "30 fps live"}
    print(f"rgbd_fps={tp['RGB+depth']['fps']:.2f} rgb_fps={tp['RGB']['fps']:.2f} "
          f"rgbd_latency_p50_ms={live['RGB+depth']['p50']:.3f} rgbd_latency_p99_ms={live['RGB+depth']['p99']:.3f}")


if __name__ == "__main__":
    main()
