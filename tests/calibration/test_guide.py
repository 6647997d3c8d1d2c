"""The guided hand-eye session on a synthetic rig: following the suggestions gives a good calibration."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.geometry import pose_to_matrix, rotation_angle_deg, transform_delta
from calibration.guide import GuideConfig, HandEyeSession, PoseSuggester, candidate_rotations, orbit
from calibration.handeye import HandEyeConfig
from tests.calibration import rig as rigmod


@pytest.mark.parametrize("kind", ["eye_in_hand", "eye_to_hand"])
def test_following_suggestions_calibrates(kind):
    rig, arm, cam = rigmod.setup(kind, seed=3)
    session = HandEyeSession(rig.board, rig.camera, HandEyeConfig(kind=kind))
    arm.connect()
    cam.connect()
    assert session.suggest() is None  # first sample: wherever the board is in view
    refused = 0
    while len(session.samples) < 15:
        verdict = session.add(arm.read_state().ee_pose, cam.read().rgb)
        refused += not verdict.accepted
        assert refused <= 2, verdict.reason
        sug = session.suggest()
        assert sug.novelty_deg > 5.0  # always somewhere new
        arm.move_to_pose(sug.pose)
    ready, status = session.status()
    assert ready, status
    res = session.solve()
    mm, deg = transform_delta(rig.X, res.X)
    assert mm < 2.0 and deg < 0.2, f"{kind}: {mm:.2f} mm / {deg:.3f} deg"
    assert res.rotation_spread_deg >= 45  # the suggestions spread the orientations


def test_session_refuses_repeats_no_board_and_mm(tmp_path):
    rig, arm, cam = rigmod.setup("eye_to_hand", seed=4)
    session = HandEyeSession(rig.board, rig.camera, HandEyeConfig(kind="eye_to_hand"))
    arm.connect()
    cam.connect()
    img = cam.read().rgb
    pose = arm.read_state().ee_pose
    assert session.add(pose, img).accepted
    again = session.add(pose, img)
    assert not again.accepted and "adds little" in again.reason
    blank = session.add(pose, np.full_like(img, 100))
    assert not blank.accepted and "no usable board view" in blank.reason
    mm_pose = pose.copy()
    mm_pose[:3] *= 1000
    bad = session.add(mm_pose, img)
    assert not bad.accepted and "metres" in bad.reason
    ready, status = session.status()
    assert not ready and "1/10 samples" in status
    session.remove_last()
    assert not session.samples
    # Samples are saved with their images so the result can be re-solved offline.
    for _ in range(3):
        assert session.add(arm.read_state().ee_pose, cam.read().rgb).accepted
        arm.move_to_pose(session.suggest().pose)
    path = session.save_samples(tmp_path / "front.handeye_samples.yaml")
    assert len(list((tmp_path / "front.handeye_samples").glob("*.png"))) == len(session.samples) == 3


def test_suggester_spreads_rotations_about_several_axes():
    cfg = GuideConfig()
    sug = PoseSuggester(cfg)
    ref = pose_to_matrix([0.4, 0.0, 0.3, 1.0, 0.0, 0.0, 0.0])
    pivot = ref[:3, 3] + ref[:3, 2] * 0.4
    taken = [ref]
    picks = []
    for _ in range(6):
        s = sug.suggest(ref, taken, pivot)
        taken.append(s.T_base_ee)
        picks.append((s.tilt_x_deg, s.tilt_y_deg, s.roll_deg))
        # Orbiting keeps the pivot at the same place in the tool frame (the board stays in view).
        p_tool_ref = np.linalg.inv(ref) @ np.append(pivot, 1)
        p_tool_new = np.linalg.inv(s.T_base_ee) @ np.append(pivot, 1)
        assert np.allclose(p_tool_ref, p_tool_new, atol=1e-9)
    assert len(set(picks)) == 6
    assert any(p[0] != 0 for p in picks) and any(p[1] != 0 for p in picks) and any(p[2] != 0 for p in picks)
    # Farthest-point: the first pick is the largest rotation on offer.
    first = orbit(ref, pivot, *picks[0])
    assert rotation_angle_deg(first[:3, :3].T @ ref[:3, :3]) > 45
    assert len(candidate_rotations(cfg)) == 74
    with pytest.raises(ValueError, match="max_tilt_deg"):
        GuideConfig(max_tilt_deg=80)
