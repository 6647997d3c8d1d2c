"""`wvl calibrate` end to end on synthetic files and fake live devices; image sources; ROS conversion."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import yaml

from calibration.files import load_handeye, load_intrinsics, save_intrinsics
from calibration.geometry import matrix_to_pose, transform_delta
from calibration.samples import save_samples
from calibration.sources import SourceConfig, iter_images
from learning.cli import main as wvl
from tests.calibration import rig as rigmod


def _write_views(folder, views):
    folder.mkdir(parents=True, exist_ok=True)
    for name, rgb in views:
        cv2.imwrite(str(folder / f"{name}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return folder


@pytest.mark.slow  # ~20 s on 2 shared cores (renders included)
def test_board_intrinsics_handeye_check_from_files(tmp_path, capsys, intrinsics_views, eye_to_hand, camera):
    d = tmp_path / "calib"
    assert wvl(["calibrate", "board", f"dir={d}"]) == 0
    assert (d / "board.svg").exists() and (d / "board.png").exists() and (d / "board.yaml").exists()

    views, _ = intrinsics_views
    folder = _write_views(tmp_path / "views", views)
    assert wvl(["calibrate", "intrinsics", f"dir={d}", f"source.path={folder}"]) == 0
    out = capsys.readouterr().out
    assert "RMS reprojection" in out and "20 used of 20" in out
    it = load_intrinsics(d / "front.camera_info.yaml")
    assert abs(it.fx - camera.fx) / camera.fx < 0.005 and abs(it.cx - camera.cx) < 2.0

    rig, samples, truth, images = eye_to_hand
    samples_file = save_samples(tmp_path / "taken" / "front.handeye_samples.yaml", "eye_to_hand", samples, images)
    assert wvl(["calibrate", "handeye", f"dir={d}", f"handeye.samples={samples_file}"]) == 0
    out = capsys.readouterr().out
    assert "daniilidis" in out and "held-out consistency" in out
    calib = load_handeye(d / "front.handeye.yaml")
    mm, deg = transform_delta(rig.X, calib.T_parent_optical)
    assert mm < 2.0 and deg < 0.2 and calib.parent == "base_link" and calib.n_samples == 15

    # Drift check from a still image with the flange pose given: in place -> 0, bumped camera -> exit 3.
    rng = np.random.default_rng(0)
    check_dir = tmp_path / "check"
    check_dir.mkdir()
    cv2.imwrite(str(check_dir / "now.png"), cv2.cvtColor(rig.view(truth[0], rng), cv2.COLOR_RGB2BGR))
    pose = "[" + ",".join(f"{v:.9f}" for v in matrix_to_pose(truth[0])) + "]"
    assert wvl(["calibrate", "check", f"dir={d}", f"source.path={check_dir}", f"check.ee_pose={pose}"]) == 0
    report = json.loads((d / "front.drift.json").read_text())
    assert report["moved"] is False and report["calibration_id"] == calib.calibration_id
    from calibration.geometry import invert, make_transform, rpy_to_matrix
    from calibration.synthetic import render_board

    bump = make_transform(rpy_to_matrix(0, 0, np.radians(1.5)), [0.01, 0, 0])
    seen = invert(bump) @ rig.board_pose_at(truth[0])
    cv2.imwrite(str(check_dir / "now.png"), cv2.cvtColor(render_board(rig.board, rig.camera, seen, rng=rng), cv2.COLOR_RGB2BGR))
    assert wvl(["calibrate", "check", f"dir={d}", f"source.path={check_dir}", f"check.ee_pose={pose}"]) == 3
    assert json.loads((d / "front.drift.json").read_text())["moved"] is True
    assert "MOVED" in capsys.readouterr().out

    # A fixed camera without the robot: a board fixed in the scene becomes the reference, then is checked.
    from calibration.synthetic import view_pose

    static = view_pose(rig.board, [0.02, 0.0, 0.55], 15.0, 0.0, 5.0)
    cv2.imwrite(str(check_dir / "now.png"), cv2.cvtColor(render_board(rig.board, rig.camera, static, rng=rng), cv2.COLOR_RGB2BGR))
    assert wvl(["calibrate", "check", f"dir={d}", f"source.path={check_dir}", "check.save_reference=true"]) == 0
    assert (d / "front.drift_reference.yaml").exists()
    assert wvl(["calibrate", "check", f"dir={d}", f"source.path={check_dir}"]) == 0
    cv2.imwrite(str(check_dir / "now.png"), cv2.cvtColor(render_board(rig.board, rig.camera, invert(bump) @ static, rng=rng), cv2.COLOR_RGB2BGR))
    assert wvl(["calibrate", "check", f"dir={d}", f"source.path={check_dir}"]) == 3


def test_bad_input_is_one_clear_line(tmp_path, capsys):
    d = tmp_path / "calib"
    assert wvl(["calibrate", "board", f"dir={d}", "board.square_length_m=30"]) == 2
    assert "looks like millimetres" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert wvl(["calibrate", "intrinsics", f"dir={d}", f"source.path={tmp_path / 'empty'}"]) == 2
    assert "holds no images" in capsys.readouterr().err
    blank = tmp_path / "blank"
    blank.mkdir()
    cv2.imwrite(str(blank / "a.png"), np.full((48, 64, 3), 200, np.uint8))
    (blank / "b.png").write_bytes(b"not a png")
    assert wvl(["calibrate", "intrinsics", f"dir={d}", f"source.path={blank}"]) == 2
    assert "b.png: not a readable image" in capsys.readouterr().err
    assert wvl(["calibrate", "handeye", f"dir={d}", "handeye.samples=x.yaml"]) == 2
    assert "run `wvl calibrate intrinsics camera=front` first" in capsys.readouterr().err
    assert wvl(["calibrate", "check", f"dir={d}"]) == 2
    assert "nothing to check against" in capsys.readouterr().err
    assert wvl(["calibrate", "aim"]) == 2
    assert wvl(["calibrate", "intrinsics", "source.kind=webcam"]) == 2
    assert "source.kind" in capsys.readouterr().err


def test_live_intrinsics_capture_from_a_camera(tmp_path, capsys, board, camera):
    from calibration.synthetic import random_view_poses

    poses = random_view_poses(board, camera, 8, np.random.default_rng(21))
    poses.insert(3, poses[2])  # the board held in the same place again: not a new view
    rigmod.CURRENT["waving"] = rigmod.WavingBoardCamera(board, camera, poses, hold=3)
    d = tmp_path / "calib"
    rc = wvl(["calibrate", "intrinsics", f"dir={d}", "source.kind=camera",
              "source.camera_factory=tests.calibration.rig:make_waving_camera", "source.views=8",
              "intrinsics.min_views=6", "source.timeout_s=60"])
    assert rc == 0
    saved = sorted((d / "front.intrinsics_views").glob("*.png"))
    assert len(saved) == 8  # 9 held poses, one a repeat
    assert "captured 8/8" in capsys.readouterr().out
    it = load_intrinsics(d / "front.camera_info.yaml")
    assert abs(it.fx - camera.fx) / camera.fx < 0.02


def test_live_guided_handeye_session(tmp_path, monkeypatch, capsys):
    import calibration.cli as cli

    rig, arm, cam = rigmod.setup("eye_in_hand", seed=8)
    d = tmp_path / "calib"
    save_intrinsics(d / "wrist.camera_info.yaml", rig.camera)
    monkeypatch.setattr(cli, "ask", lambda prompt: "")  # the operator presses Enter at every suggested pose
    rc = wvl(["calibrate", "handeye", "camera=wrist", f"dir={d}", "handeye.kind=eye_in_hand", "source.kind=camera",
              "source.camera_factory=tests.calibration.rig:make_camera", "handeye.arm_factory=tests.calibration.rig:make_arm",
              "handeye.n_samples=10", "handeye.parent_frame=fr3_hand", "handeye.auto_move=true"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "next: tilt" in out and "ok: sample 9" in out
    calib = load_handeye(d / "wrist.handeye.yaml")
    assert calib.parent == "fr3_hand" and calib.kind == "eye_in_hand" and calib.n_samples == 10
    mm, deg = transform_delta(rig.X, calib.T_parent_optical)
    assert mm < 2.0 and deg < 0.2
    samples = yaml.safe_load((d / "wrist.handeye_samples.yaml").read_text())
    assert len(samples["samples"]) == 10 and (d / "wrist.handeye_samples" / "009.png").exists()
    # An arm that cannot be commanded to a pose is never driven: auto_move is refused before anything moves.
    rc = wvl(["calibrate", "handeye", "camera=wrist", f"dir={d}", "handeye.kind=eye_in_hand", "source.kind=camera",
              "source.camera_factory=tests.calibration.rig:make_camera", "handeye.arm_factory=robot.arms.fake:KinematicArm",
              "handeye.auto_move=true"])
    assert rc == 2 and "has no move_to_pose" in capsys.readouterr().err


def test_recording_and_video_sources(tmp_path, intrinsics_views, board):
    from robot.episode import Episode

    views, _ = intrinsics_views
    frames = np.stack([rgb for _, rgb in views[:12]])  # (T, H, W, 3)
    T = len(frames)
    ep = Episode(task="calibrate front", fps=5.0, timestamps=np.arange(T) * 0.2, images={"front": frames},
                 joints=np.zeros((T, 7)), ee_pose=np.tile([0, 0, 0, 0, 0, 0, 1.0], (T, 1)), gripper=np.ones(T),
                 actions=np.zeros((T, 7)), rewards=np.zeros(T), interventions=np.zeros(T, bool), source="teleop")
    path = tmp_path / "session.episode"
    path.write_bytes(ep.to_bytes())
    got = list(iter_images(SourceConfig(kind="recording", path=str(path)), "front"))
    assert len(got) == T and all(np.array_equal(a, b) for (_, a), b in zip(got, frames))
    assert len(list(iter_images(SourceConfig(kind="recording", path=str(path), every=4)))) == 3

    video = tmp_path / "wave.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (640, 480))
    for f in frames[:5]:
        w.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    w.release()
    got = list(iter_images(SourceConfig(kind="video", path=str(video), every=2)))
    assert [n for n, _ in got] == ["wave.avi#0", "wave.avi#2", "wave.avi#4"] and got[0][1].shape == (480, 640, 3)
    with pytest.raises(ValueError, match="not a recording"):
        list(iter_images(SourceConfig(kind="recording", path=str(video))))
    with pytest.raises(ValueError, match="source.path: required"):
        SourceConfig(kind="folder")


def test_realsense_factory_intrinsics_from_a_recording(tmp_path):
    from robot.cameras.realsense import RealSenseCamera, RealSenseConfig, import_pyrealsense2, write_synthetic_recording

    try:
        import_pyrealsense2()
    except ImportError as e:
        pytest.skip(f"pyrealsense2 unavailable: {e}")
    from calibration.sources import factory_intrinsics

    rec = write_synthetic_recording(tmp_path / "rs.db3", n_frames=3, depth=False)
    cam = RealSenseCamera(RealSenseConfig(playback_file=str(rec), depth=False))
    cam.connect()
    try:
        intr = factory_intrinsics(cam)
    finally:
        cam.disconnect()
    assert intr.size == (640, 480) and intr.fx == 600.0 and intr.cx == 320.0
    # The same numbers from the recording used as an image source (what `wvl calibrate intrinsics` compares).
    found = {}
    frames = list(iter_images(SourceConfig(kind="recording", path=str(rec)), "front",
                              on_connect=lambda c: found.update(k=factory_intrinsics(c))))
    # librealsense may drop the frames a playback emits before set_real_time(False) takes effect (write_synthetic_recording's
    # docstring); on a loaded machine that was 2 of the 3 here, so only "some frames, all of the recorded size" is exact.
    assert 1 <= len(frames) <= 3 and all(f[1].shape == (480, 640, 3) for f in frames) and found["k"].fy == 600.0, [n for n, _ in frames]


def test_static_transform_message_with_real_ros2_types(eye_to_hand):
    from rosbags.typesys import Stores, get_typestore

    from calibration.files import HandEyeCalibration
    from calibration.handeye import HandEyeConfig, solve_handeye
    from calibration.ros import static_transform, static_transform_args

    rig, samples, _, _ = eye_to_hand
    calib = HandEyeCalibration.from_result(solve_handeye(samples, HandEyeConfig(kind="eye_to_hand")), "front", "base_link")
    ts = get_typestore(Stores.ROS2_HUMBLE)
    names = ["geometry_msgs/msg/TransformStamped", "geometry_msgs/msg/Transform", "geometry_msgs/msg/Vector3",
             "geometry_msgs/msg/Quaternion", "std_msgs/msg/Header", "builtin_interfaces/msg/Time"]
    msg = static_transform(calib, {n: ts.types[n] for n in names}, sec=12, nanosec=5)
    tf = ts.types["tf2_msgs/msg/TFMessage"](transforms=[msg])
    back = ts.deserialize_cdr(ts.serialize_cdr(tf, "tf2_msgs/msg/TFMessage"), "tf2_msgs/msg/TFMessage").transforms[0]
    assert back.header.frame_id == "base_link" and back.child_frame_id == "camera_link" and back.header.stamp.sec == 12
    p = matrix_to_pose(calib.T_parent_child)
    assert np.allclose([back.transform.translation.x, back.transform.translation.y, back.transform.translation.z], p[:3])
    assert np.allclose([back.transform.rotation.x, back.transform.rotation.w], [p[3], p[6]])
    args = static_transform_args(calib)
    assert args[args.index("--frame-id") + 1] == "base_link" and float(args[args.index("--qw") + 1]) == pytest.approx(p[6])


def test_node_and_launch_files_are_thin_and_parse():
    import ast
    import importlib
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    importlib.import_module("robot.nodes.calibration_tf")  # imports without ROS: rclpy only inside main()
    src = (root / "robot" / "nodes" / "calibration_tf.py").read_text()
    top_imports = [n for n in ast.parse(src).body if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert all("rclpy" not in ast.dump(n) for n in top_imports)
    launch_src = (root / "launch" / "calibration.launch.py").read_text()
    ast.parse(launch_src)
    assert "robot.nodes.calibration_tf" in launch_src


def test_launch_description_builds_with_ros2():
    import importlib.util
    from pathlib import Path

    # Only where ROS 2 is installed ("launch" alone would find this repo's launch/ folder).
    pytest.importorskip("launch_ros")
    import launch

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("calibration_launch", root / "launch" / "calibration.launch.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert isinstance(mod.generate_launch_description(), launch.LaunchDescription)
