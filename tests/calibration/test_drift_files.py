"""Calibration files, the loader, ids, the drift check and the moved-camera episode filter."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from calibration.drift import DriftThresholds, check_drift, check_drift_poses
from calibration.errors import BoardNotFoundError, CalibrationError
from calibration.files import (
    HandEyeCalibration, episode_calibration_id, handeye_history, load_camera_calibration, load_handeye,
    load_rig_calibration, save_handeye, save_intrinsics,
)
from calibration.geometry import R_LINK_OPTICAL, make_transform, matrix_to_pose, rpy_to_matrix, transform_delta
from calibration.handeye import HandEyeConfig, solve_handeye
from calibration.selection import compatible_ids, indices_for_calibration
from tests.calibration import rig as rigmod


@pytest.fixture(scope="module")
def solved(eye_to_hand):
    rig, samples, _, _ = eye_to_hand
    return rig, solve_handeye(samples, HandEyeConfig(kind="eye_to_hand"))


def test_handeye_yaml_round_trip_and_optical_frame(tmp_path, solved):
    rig, res = solved
    calib = HandEyeCalibration.from_result(res, "front", "base_link", board={"squares_x": 9})
    path = save_handeye(tmp_path, calib)
    d = yaml.safe_load(path.read_text())
    for key in ("parent", "child", "xyz", "quaternion_xyzw", "method", "residuals", "n_samples", "date"):
        assert key in d  # the fields the issue asks for
    assert d["parent"] == "base_link" and d["child"] == "camera_link" and d["n_samples"] == 15
    back = load_handeye(path)
    assert back.calibration_id == calib.calibration_id == d["calibration_id"]
    assert np.allclose(back.T_parent_optical, res.X, atol=1e-9)
    # camera_link -> optical is the REP-103 rotation: the published child is camera_link, x forward.
    assert np.allclose(back.T_child_optical[:3, :3], R_LINK_OPTICAL)
    assert np.allclose(back.T_parent_child[:3, :3] @ np.array([1.0, 0, 0]), res.X[:3, :3] @ np.array([0, 0, 1.0]))
    assert list(handeye_history(tmp_path, "front")) == [calib.calibration_id]
    d["format"] = "something-else"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(d))
    with pytest.raises(ValueError, match="not 'wvl-handeye/1'"):
        load_handeye(tmp_path / "bad.yaml")


def test_loader_and_episode_ids(tmp_path, solved, camera):
    rig, res = solved
    with pytest.raises(FileNotFoundError, match="wvl calibrate intrinsics camera=front"):
        load_camera_calibration(tmp_path, "front")
    assert episode_calibration_id(tmp_path / "nope") is None
    save_intrinsics(tmp_path / "wrist.camera_info.yaml", camera)
    save_intrinsics(tmp_path / "front.camera_info.yaml", camera)
    calib = HandEyeCalibration.from_result(res, "front", "base_link")
    save_handeye(tmp_path, calib)
    rig_cal = load_rig_calibration(tmp_path)
    assert set(rig_cal) == {"front", "wrist"}
    assert rig_cal["front"].calibration_id == calib.calibration_id  # the extrinsics id wins
    assert rig_cal["wrist"].extrinsics is None and rig_cal["wrist"].calibration_id is not None
    ids = episode_calibration_id(tmp_path)
    assert ids == {"front": calib.calibration_id, "wrist": rig_cal["wrist"].calibration_id}
    assert episode_calibration_id(tmp_path, ["front"]) == calib.calibration_id


def test_drift_check_in_place_and_bumped():
    rig, arm, cam = rigmod.setup("eye_to_hand", seed=5)
    calib = HandEyeCalibration.from_result(_truth_result(rig), "front", "base_link")
    arm.connect()
    cam.connect()
    views = []
    for pose in _three_poses(rig):
        arm.move_to_pose(pose)
        views.append((cam.read().rgb, pose_matrix(arm)))
    report = check_drift(calib, rig.camera, rig.board, views)
    assert not report.moved and report.translation_mm < 2.0 and report.rotation_deg < 0.2 and report.n_views == 3
    # Someone bumps the camera: 6 mm and 0.8 deg.
    cam.bump = make_transform(rpy_to_matrix(0, np.radians(0.8), 0), [0.006, 0.0, 0.0])
    bumped = []
    for pose in _three_poses(rig):
        arm.move_to_pose(pose)
        bumped.append((cam.read().rgb, pose_matrix(arm)))
    report = check_drift(calib, rig.camera, rig.board, bumped)
    assert report.moved and "MOVED" in report.message and "recalibrate" in report.message
    assert report.rotation_deg == pytest.approx(0.8, abs=0.2)
    assert 3.0 < report.translation_mm < 12.0  # 6 mm at the camera plus 0.8 deg about the board's lever
    json.dumps(report.to_dict())  # the loop stores it
    # No board in view: a clear error; an eye_to_hand check with neither flange pose nor reference: too.
    with pytest.raises(BoardNotFoundError, match="none of the 1 views"):
        check_drift(calib, rig.camera, rig.board, [(np.full_like(views[0][0], 50), None)])
    with pytest.raises(CalibrationError, match="static reference board"):
        check_drift(calib, rig.camera, rig.board, [(views[0][0], None)])


def test_drift_with_static_reference_board(solved):
    rig, res = solved
    calib = HandEyeCalibration.from_result(res, "front", "base_link")
    T_cam_board = np.eye(4)
    T_cam_board[:3, 3] = [0.0, 0.05, 0.6]
    reference = calib.T_parent_optical @ T_cam_board  # the board where the camera saw it at calibration time
    ok = check_drift_poses(calib, [(T_cam_board, 0.1)], [None], reference=reference)
    assert not ok.moved and ok.translation_mm < 1e-6
    # The camera turned by 1 deg: the board appears rotated the other way.
    turned = make_transform(rpy_to_matrix(np.radians(1.0), 0, 0), [0, 0, 0])
    moved = check_drift_poses(calib, [(np.linalg.inv(turned) @ T_cam_board, 0.1)], [None], DriftThresholds(5.0, 0.5), reference)
    assert moved.moved and moved.rotation_deg == pytest.approx(1.0, abs=1e-6)


def test_eye_in_hand_drift_needs_flange_pose(eye_in_hand):
    rig, samples, truth, _ = eye_in_hand
    calib = HandEyeCalibration.from_result(_truth_result(rig), "wrist", "ee_link")
    report = check_drift_poses(calib, [(s.T_cam_board, s.reprojection_px) for s in samples[:3]], truth[:3])
    assert not report.moved and report.translation_mm < 2.0
    with pytest.raises(CalibrationError, match="flange pose"):
        check_drift_poses(calib, [(samples[0].T_cam_board, 0.1)], [None])


def test_moved_camera_episodes_are_refused(tmp_path, solved):
    from learning.data.store import EpisodeStore

    import copy

    rig, res = solved
    res = copy.deepcopy(res)  # modified below; the fixture is shared
    folder = tmp_path / "calib"
    old = HandEyeCalibration.from_result(res, "front", "base_link")
    save_handeye(folder, old)
    store = EpisodeStore(tmp_path / "store")
    store.append(_episode(0, old.calibration_id))
    store.append(_episode(1, {"front": old.calibration_id}))
    store.append(_episode(2, None))  # recorded before any calibration
    # Recalibrated without moving (0.3 mm off): a new id, but the same placement.
    res.X = res.X @ make_transform(np.eye(3), [0.0003, 0, 0])
    same = HandEyeCalibration.from_result(res, "front", "base_link")
    save_handeye(folder, same)
    store.append(_episode(3, same.calibration_id))
    # The camera was bumped by 2 cm and recalibrated.
    res.X = res.X @ make_transform(np.eye(3), [0.02, 0, 0])
    moved = HandEyeCalibration.from_result(res, "front", "base_link")
    save_handeye(folder, moved)
    store.append(_episode(4, moved.calibration_id))

    assert indices_for_calibration(store, moved.calibration_id) == [4]
    assert indices_for_calibration(store, moved.calibration_id, allow_moved=True) == [0, 1, 2, 3, 4]
    assert indices_for_calibration(store, None) == [0, 1, 2, 3, 4]  # simulation: no calibration, no filter
    # Back to the first placement: recalibrations within the drift thresholds count as the same camera.
    save_handeye(folder, old)
    allowed = compatible_ids(folder, "front")
    assert allowed == {old.calibration_id, same.calibration_id}
    assert indices_for_calibration(store, old.calibration_id, allowed) == [0, 1, 3]
    assert indices_for_calibration(store, old.calibration_id, allowed, keep_uncalibrated=True) == [0, 1, 2, 3]
    assert indices_for_calibration(store, {"front": old.calibration_id}, {"front": allowed}, indices=[1, 3, 4]) == [1, 3]
    assert transform_delta(old.T_parent_optical, moved.T_parent_optical)[0] > 19


# ------------------------------------------------------------------------------------------------ helpers
def _episode(seed: int, calibration_id):
    from tests.factories import random_episode

    ep = random_episode(seed=seed)
    if calibration_id is not None:
        ep.info["calibration_id"] = calibration_id  # what the recorder writes (files.episode_calibration_id)
    return ep


def pose_matrix(arm) -> np.ndarray:
    from calibration.geometry import pose_to_matrix

    return pose_to_matrix(arm.read_state().ee_pose)


def _three_poses(rig):
    from calibration.synthetic import view_pose

    return [matrix_to_pose(rig.ee_pose_for(view_pose(rig.board, c, tx, ty, 0.0)))
            for c, tx, ty in (([0.0, 0.0, 0.45], 0, 0), ([0.03, 0.02, 0.5], 20, -10), ([-0.03, -0.02, 0.42], -15, 15))]


def _truth_result(rig):
    """A HandEyeResult holding the rig's true transform (so drift is measured against the truth)."""
    from calibration.handeye import HandEyeResult, MethodResult

    m = MethodResult("truth", rig.X, 0.0, 0.0, 0.0, 0.0)
    return HandEyeResult(rig.kind, rig.X, rig.target, "truth", {"truth": m}, 15, 90.0)
