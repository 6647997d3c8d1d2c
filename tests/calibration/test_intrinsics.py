"""Intrinsics from rendered ChArUco views: accuracy against the true camera, view gates, bad input, YAML."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from calibration.board import BoardConfig
from calibration.errors import BoardNotFoundError, CalibrationError, TooFewViewsError
from calibration.files import intrinsics_id, load_intrinsics, save_intrinsics
from calibration.intrinsics import CameraIntrinsics, IntrinsicsConfig, calibrate_intrinsics, compare_intrinsics
from calibration.synthetic import render_board, view_pose


def test_recovers_known_intrinsics(intrinsics_views, board, camera):
    views, _ = intrinsics_views
    res = calibrate_intrinsics(views, board, camera_name="front")
    it = res.intrinsics
    focal_err = max(abs(it.fx - camera.fx) / camera.fx, abs(it.fy - camera.fy) / camera.fy)
    pp_err = max(abs(it.cx - camera.cx), abs(it.cy - camera.cy))
    assert focal_err < 0.005, f"focal error {focal_err:.4%}"
    assert pp_err < 2.0, f"principal point error {pp_err:.2f} px"
    assert res.rms_px < 0.3 and res.n_used == 20
    assert all(v.accepted and 0 < v.error_px < 1.0 for v in res.views)
    assert res.coverage >= 0.75 and res.max_tilt_deg > 20 and not res.warnings
    # The solver's own uncertainty is honest: the true values sit within a few standard deviations.
    assert abs(it.fx - camera.fx) < 5 * res.std["fx"] + 0.5
    cmp = compare_intrinsics(camera, it)
    assert cmp["mean_px"] < 2.0 and abs(cmp["fx_pct"]) < 0.5


def test_refuses_blurred_small_and_empty_views_with_reasons(board, camera):
    rng = np.random.default_rng(3)
    sharp = render_board(board, camera, view_pose(board, [0, 0, 0.32], 10, 5, 0), rng=rng)
    blurred = render_board(board, camera, view_pose(board, [0, 0, 0.32], 10, 5, 0), blur_sigma=2.2, rng=rng)
    far = render_board(board, camera, view_pose(board, [0, 0, 0.9], 0, 0, 0), blur_sigma=0.3, rng=rng)
    empty = np.full((480, 640, 3), 90, np.uint8)
    cfg = IntrinsicsConfig(min_views=3, min_area_fraction=0.05)
    with pytest.raises(TooFewViewsError) as e:
        calibrate_intrinsics([("sharp", sharp), ("blurred", blurred), ("far", far), ("empty", empty)], board, cfg)
    msg = str(e.value)
    assert "only 1 of 4 views are usable" in msg
    assert "blurred: 1" in msg and "no board found: 1" in msg and "board covers" in msg
    from calibration.board import BoardDetector
    from calibration.intrinsics import gate_view

    det = BoardDetector(board)
    assert gate_view(det.detect(sharp), cfg) == ""
    assert gate_view(det.detect(blurred), cfg).startswith("blurred")
    assert "move it closer" in gate_view(det.detect(far), cfg)


def test_no_board_anywhere_says_what_to_check(board):
    blank = [(f"b{i}", np.full((120, 160, 3), 200, np.uint8)) for i in range(3)]
    with pytest.raises(BoardNotFoundError, match="no ChArUco board found in any of 3 images.*dictionary"):
        calibrate_intrinsics(blank, board)
    with pytest.raises(TooFewViewsError, match="no images"):
        calibrate_intrinsics([], board)


def test_wrong_board_layout_hint(board, camera):
    # A legacy-printed board (even row count) seen with the modern layout: markers yes, ChArUco corners no.
    legacy = BoardConfig(legacy_pattern=True)
    img = render_board(legacy, camera, view_pose(legacy, [0, 0, 0.4], 0, 0, 0), rng=np.random.default_rng(0))
    with pytest.raises(BoardNotFoundError, match="legacy_pattern"):
        calibrate_intrinsics([("a", img)], board)


def test_mixed_resolutions_are_refused(intrinsics_views, board):
    views, _ = intrinsics_views
    small = views[1][1][::2, ::2].copy()
    with pytest.raises(CalibrationError, match="one resolution at a time"):
        calibrate_intrinsics([views[0], ("half", small)], board)


def test_camera_info_yaml_round_trip(tmp_path, camera):
    path = save_intrinsics(tmp_path / "front.camera_info.yaml", camera, rms_px=0.12, n_views=20)
    d = yaml.safe_load(path.read_text())
    # The layout ROS camera drivers read (camera_calibration_parsers).
    assert d["camera_matrix"]["rows"] == 3 and len(d["projection_matrix"]["data"]) == 12
    assert d["distortion_model"] == "plumb_bob" and d["image_width"] == 640
    back = load_intrinsics(path)
    assert np.allclose(back.K, camera.K) and np.allclose(back.dist, camera.dist)
    assert intrinsics_id(back) == intrinsics_id(camera)
    bad = dict(d)
    del bad["camera_matrix"]
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(ValueError, match="missing 'camera_matrix'"):
        load_intrinsics(tmp_path / "bad.yaml")


def test_intrinsics_validation_and_scaling(camera):
    with pytest.raises(ValueError, match="focal"):
        CameraIntrinsics(640, 480, np.zeros((3, 3)), np.zeros(5))
    with pytest.raises(ValueError, match="distortion"):
        CameraIntrinsics(640, 480, camera.K, np.zeros(3))
    half = camera.scaled(320, 240)
    assert half.fx == pytest.approx(camera.fx / 2)
    assert compare_intrinsics(camera, half)["max_px"] < 1e-6  # the same camera at half resolution
    with pytest.raises(ValueError, match="aspect ratio"):
        camera.scaled(320, 200)
    with pytest.raises(ValueError, match="min_views"):
        IntrinsicsConfig(min_views=1)
