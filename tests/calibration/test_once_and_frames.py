"""Issue 21 item 9: the hand-eye file says which transform is which; `wvl calibrate` says each message once."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import yaml

from calibration.files import HandEyeCalibration, load_handeye, save_handeye, save_intrinsics
from calibration.geometry import invert, make_transform, matrix_to_pose, rpy_to_matrix
from calibration.handeye import HandEyeConfig, HandEyeResult, HandEyeSample, MethodResult, solve_handeye
from calibration.synthetic import HandEyeRig, handeye_rig_poses, perturb_pose, render_board
from learning.cli import main as wvl


def _truth(rig: HandEyeRig) -> HandEyeResult:
    m = MethodResult("tsai", rig.X, 0.0, 0.0, 0.0, 0.0)
    return HandEyeResult(rig.kind, rig.X, rig.target, "tsai", {"tsai": m}, 15, 90.0)


def test_handeye_file_names_parent_and_child_of_each_transform(tmp_path):
    rig = HandEyeRig.default("eye_to_hand")
    calib = HandEyeCalibration.from_result(_truth(rig), "front", "base_link")
    path = save_handeye(tmp_path, calib)
    text = path.read_text()
    d = yaml.safe_load(text)
    assert d["frames"] == {
        "xyz, quaternion_xyzw": "base_link -> camera_link",
        "child_to_optical": "camera_link -> camera_color_optical_frame",
        "parent_to_optical": "base_link -> camera_color_optical_frame",
        "methods": "base_link -> camera_color_optical_frame (every method's xyz, quaternion_xyzw)",
        "target": "ee -> board",
    }
    # The frames the note names are the ones the numbers are in.
    top = np.array(d["xyz"] + d["quaternion_xyzw"])
    assert np.allclose(top, matrix_to_pose(calib.T_parent_child))
    assert np.allclose(d["methods"]["tsai"]["xyz"], calib.T_parent_optical[:3, 3])
    assert np.allclose(d["parent_to_optical"]["xyz"], calib.T_parent_optical[:3, 3])
    assert "top-level xyz / quaternion_xyzw is base_link -> camera_link" in text
    assert "every entry under methods: are base_link -> camera_color_optical_frame" in text
    assert load_handeye(path).calibration_id == calib.calibration_id  # the note does not disturb loading


def test_drift_check_says_its_verdict_once(tmp_path, capsys, caplog):
    rig = HandEyeRig.default("eye_to_hand")
    d = tmp_path / "calib"
    save_handeye(d, HandEyeCalibration.from_result(_truth(rig), "front", "base_link"))
    save_intrinsics(d / "front.camera_info.yaml", rig.camera)
    pose = rig.ee_pose_for(make_transform(rpy_to_matrix(np.radians(10), 0, 0), [0.0, 0.0, 0.45]))
    bump = make_transform(rpy_to_matrix(0, 0, np.radians(1.5)), [0.01, 0, 0])
    img = render_board(rig.board, rig.camera, invert(bump) @ rig.board_pose_at(pose), rng=np.random.default_rng(0))
    (tmp_path / "now").mkdir()
    cv2.imwrite(str(tmp_path / "now" / "now.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    ee = "[" + ",".join(f"{v:.9f}" for v in matrix_to_pose(pose)) + "]"
    caplog.set_level(logging.INFO)
    assert wvl(["calibrate", "check", f"dir={d}", f"source.path={tmp_path / 'now'}", f"check.ee_pose={ee}"]) == 3
    captured = capsys.readouterr()
    said = captured.out + captured.err + caplog.text
    assert said.count("camera front MOVED") == 1, said


def test_handeye_solver_leaves_its_warnings_to_the_caller(caplog):
    rig = HandEyeRig.default("eye_to_hand")
    rng = np.random.default_rng(3)
    # Robot poses 1 cm / 0.5 deg off (a poor held-out consistency: a warning); one blurred sample (dropped).
    samples = [HandEyeSample(perturb_pose(T, rng, 0.01, 0.5), rig.board_pose_at(T), 5.0 if i == 0 else 0.2)
               for i, T in enumerate(handeye_rig_poses(rig, 12, rng))]
    caplog.set_level(logging.INFO)
    res = solve_handeye(samples, HandEyeConfig(kind="eye_to_hand", methods=("tsai", "park")))
    assert res.dropped and res.warnings  # returned (the CLI prints each once) ...
    assert not [r for r in caplog.records if r.levelno >= logging.INFO], caplog.text  # ... not logged as well
