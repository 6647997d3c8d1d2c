"""Shared synthetic calibration data: ChArUco views rendered through a known camera (module-scoped: the
renders are the slow part, ~0.2 s each)."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.board import BoardConfig, BoardDetector, estimate_pose
from calibration.handeye import HandEyeSample
from calibration.synthetic import HandEyeRig, default_camera, handeye_rig_poses, perturb_pose, random_view_poses, render_board

# Default noise of the tests and of bench/calibration.py: 2 gray levels of sensor noise, 0.6 px optical blur,
# and robot pose readings off by 0.2 mm / 0.02 deg per axis (a good arm's repeatability).
IMAGE_NOISE = 2.0
ROBOT_NOISE_M = 0.0002
ROBOT_NOISE_DEG = 0.02


@pytest.fixture(scope="session")
def board() -> BoardConfig:
    return BoardConfig()


@pytest.fixture(scope="session")
def camera():
    return default_camera()


@pytest.fixture(scope="session")
def intrinsics_views(board, camera):
    """20 noisy views of the board: [(name, rgb)], and their true poses."""
    rng = np.random.default_rng(7)
    poses = random_view_poses(board, camera, 20, rng)
    return [(f"v{i:02d}", render_board(board, camera, T, noise_sigma=IMAGE_NOISE, rng=rng)) for i, T in enumerate(poses)], poses


def make_handeye_samples(kind: str, n: int = 15, seed: int = 0):
    """(rig, samples, true flange poses, images): n pose pairs with image and robot noise."""
    rig = HandEyeRig.default(kind)
    rng = np.random.default_rng(seed)
    det = BoardDetector(rig.board)
    truth = handeye_rig_poses(rig, n, rng)
    samples, images = [], []
    for T in truth:
        img = rig.view(T, rng, noise_sigma=IMAGE_NOISE)
        T_cam_board, rms = estimate_pose(det.detect(img), rig.camera.K, rig.camera.dist)
        samples.append(HandEyeSample(perturb_pose(T, rng, ROBOT_NOISE_M, ROBOT_NOISE_DEG), T_cam_board, rms))
        images.append(img)
    return rig, samples, truth, images


@pytest.fixture(scope="session")
def eye_in_hand():
    return make_handeye_samples("eye_in_hand", seed=11)


@pytest.fixture(scope="session")
def eye_to_hand():
    return make_handeye_samples("eye_to_hand", seed=12)
