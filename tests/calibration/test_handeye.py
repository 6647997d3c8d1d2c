"""Hand-eye from 15 rendered, noisy pose pairs (both set-ups), method selection, and the refusals."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.errors import DegenerateMotionError, TooFewViewsError, UnitsError
from calibration.geometry import make_transform, rpy_to_matrix, transform_delta
from calibration.handeye import METHODS, HandEyeConfig, HandEyeSample, solve_handeye
from calibration.samples import load_samples, save_samples
from calibration.synthetic import HandEyeRig


@pytest.mark.parametrize("kind", ["eye_in_hand", "eye_to_hand"])
def test_recovers_hand_eye_from_15_noisy_pairs(kind, request):
    rig, samples, _, _ = request.getfixturevalue(kind)
    assert len(samples) == 15
    res = solve_handeye(samples, HandEyeConfig(kind=kind))
    mm, deg = transform_delta(rig.X, res.X)
    assert mm < 2.0 and deg < 0.2, f"{kind}: {mm:.2f} mm / {deg:.3f} deg"
    tmm, tdeg = transform_delta(rig.target, res.target)
    assert tmm < 2.0 and tdeg < 0.2
    # All five methods ran (method= passed by keyword: a positional 5th argument would silently give Tsai
    # five times), each is accurate here, and they are not all the same solution.
    assert set(res.methods) == set(METHODS)
    for m in res.methods.values():
        assert transform_delta(rig.X, m.X)[0] < 3.0
    assert len({tuple(np.round(m.X[:3, 3], 9)) for m in res.methods.values()}) > 1
    # The kept method has the best held-out score, and held-out residuals are honest (>= in-sample).
    assert res.best.score == min(m.score for m in res.methods.values())
    assert res.best.heldout_mm >= res.best.residual_mm and res.best.heldout_mm < 2.0
    assert not res.warnings and res.rotation_spread_deg > 30


def test_bad_samples_are_dropped_by_reprojection(eye_to_hand):
    rig, samples, _, _ = eye_to_hand
    bad = HandEyeSample(samples[0].T_base_ee, samples[1].T_cam_board, reprojection_px=3.0, image="blurred.png")
    res = solve_handeye(samples + [bad], HandEyeConfig(kind="eye_to_hand"))
    assert res.n_samples == 15 and len(res.dropped) == 1 and "blurred.png" in res.dropped[0]
    assert transform_delta(rig.X, res.X)[0] < 2.0


def test_too_few_pairs(eye_to_hand):
    _, samples, _, _ = eye_to_hand
    with pytest.raises(TooFewViewsError, match="5 usable pose pairs.*need >= 10"):
        solve_handeye(samples[:5], HandEyeConfig(kind="eye_to_hand"))


def _exact_samples(rig: HandEyeRig, flange_poses: list[np.ndarray]) -> list[HandEyeSample]:
    return [HandEyeSample(T, rig.board_pose_at(T)) for T in flange_poses]


def test_pure_translation_is_refused_with_the_fix():
    rig = HandEyeRig.default("eye_to_hand")
    base = rig.ee_pose_for(make_transform(np.eye(3), [-0.13, -0.09, 0.5]))
    poses = [base @ make_transform(np.eye(3), [dx, dy, dz]) for dx, dy, dz in
             np.random.default_rng(0).uniform(-0.05, 0.05, (12, 3))]
    with pytest.raises(DegenerateMotionError, match="pure translations.*two different axes"):
        solve_handeye(_exact_samples(rig, poses), HandEyeConfig(kind="eye_to_hand"))


def test_rotation_about_one_axis_is_refused():
    rig = HandEyeRig.default("eye_in_hand")
    base = rig.ee_pose_for(make_transform(np.eye(3), [-0.13, -0.09, 0.45]))
    poses = [base @ make_transform(rpy_to_matrix(0, 0, np.radians(a)), [0, 0, 0]) for a in np.linspace(-40, 40, 12)]
    with pytest.raises(DegenerateMotionError, match="one axis"):
        solve_handeye(_exact_samples(rig, poses), HandEyeConfig(kind="eye_in_hand"))


def test_small_rotation_spread_is_refused():
    rig = HandEyeRig.default("eye_in_hand")
    base = rig.ee_pose_for(make_transform(np.eye(3), [-0.13, -0.09, 0.45]))
    rng = np.random.default_rng(1)
    poses = [base @ make_transform(rpy_to_matrix(*np.radians(rng.uniform(-6, 6, 3))), rng.uniform(-0.03, 0.03, 3)) for _ in range(12)]
    with pytest.raises(DegenerateMotionError, match="span only"):
        solve_handeye(_exact_samples(rig, poses), HandEyeConfig(kind="eye_in_hand"))


def test_millimetre_robot_poses_are_caught(eye_in_hand):
    _, samples, _, _ = eye_in_hand
    mm = [HandEyeSample(make_transform(s.T_base_ee[:3, :3], s.T_base_ee[:3, 3] * 1000.0), s.T_cam_board, s.reprojection_px)
          for s in samples]
    with pytest.raises(UnitsError, match="millimetres.*divide by 1000"):
        solve_handeye(mm, HandEyeConfig(kind="eye_in_hand"))
    board_mm = [HandEyeSample(s.T_base_ee, make_transform(s.T_cam_board[:3, :3], s.T_cam_board[:3, 3] * 1000.0)) for s in samples]
    with pytest.raises(UnitsError, match="board lengths look like millimetres"):
        solve_handeye(board_mm, HandEyeConfig(kind="eye_in_hand"))


def test_config_validation():
    with pytest.raises(ValueError, match="handeye.kind"):
        HandEyeConfig(kind="eye_on_wall")
    with pytest.raises(ValueError, match="handeye.methods"):
        HandEyeConfig(methods=("tsai", "magic"))
    with pytest.raises(ValueError, match="min_samples"):
        HandEyeConfig(min_samples=2)


def test_samples_file_round_trip_and_units(tmp_path, eye_to_hand, camera, board):
    rig, samples, _, images = eye_to_hand
    path = save_samples(tmp_path / "front.handeye_samples.yaml", "eye_to_hand", samples, images)
    assert (tmp_path / "front.handeye_samples" / "000.png").exists()
    kind, again = load_samples(path, board, rig.camera)  # re-detected from the saved PNGs
    assert kind == "eye_to_hand" and len(again) == 15
    for a, b in zip(samples, again):
        assert transform_delta(a.T_cam_board, b.T_cam_board)[0] < 1e-3  # PNG is lossless: same detection
    res = solve_handeye(again, HandEyeConfig(kind="eye_to_hand"))
    assert transform_delta(rig.X, res.X)[0] < 2.0
    # A file in millimetres without saying so is refused; with `units: mm` it is converted.
    import yaml

    d = yaml.safe_load(path.read_text())
    for e in d["samples"]:
        e["ee_pose"][:3] = [v * 1000 for v in e["ee_pose"][:3]]
    (tmp_path / "mm.yaml").write_text(yaml.safe_dump(d))
    with pytest.raises(UnitsError, match="units: mm"):
        load_samples(tmp_path / "mm.yaml")
    d["units"] = "mm"
    (tmp_path / "mm.yaml").write_text(yaml.safe_dump(d))
    _, conv = load_samples(tmp_path / "mm.yaml")  # stored board poses, no re-detection
    assert np.allclose(conv[3].T_base_ee, samples[3].T_base_ee, atol=1e-6)
    d["samples"][2] = {"image": "x.png"}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(d))
    with pytest.raises(ValueError, match=r"samples\[2\]: needs an 'ee_pose'"):
        load_samples(tmp_path / "bad.yaml")
