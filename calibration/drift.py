"""Has the camera moved since it was calibrated? A fresh board view against the stored calibration.

For each view the board pose seen now (PnP, T_cam_board) and where the calibration says the board is give
an observed camera pose; the report is the difference from the calibrated pose, in mm and degrees:

    eye_to_hand, board on the flange:  T_base_cam_obs = T_base_ee @ T_ee_board @ inv(T_cam_board)
    eye_to_hand, static board:         T_base_cam_obs = T_base_board_ref @ inv(T_cam_board)
    eye_in_hand, board on the table:   T_ee_cam_obs   = inv(T_base_ee) @ T_base_board @ inv(T_cam_board)

A single view has noise too (about 0.5 mm / 0.05 deg with a 640x480 camera at 0.5 m); several views are
averaged. The default thresholds (5 mm, 0.5 deg) sit well above that noise and below what breaks a policy.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from calibration.board import BoardConfig, BoardDetector, estimate_pose
from calibration.errors import BoardNotFoundError, CalibrationError
from calibration.files import HandEyeCalibration
from calibration.geometry import invert, mean_transform, transform_delta
from calibration.intrinsics import CameraIntrinsics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DriftThresholds:
    translation_mm: float = 5.0
    rotation_deg: float = 0.5

    def __post_init__(self) -> None:
        if not self.translation_mm > 0 or not self.rotation_deg > 0:
            raise ValueError(f"check.max_translation_mm / check.max_rotation_deg: must be > 0, got "
                             f"{self.translation_mm} / {self.rotation_deg}")


@dataclass
class DriftReport:
    camera: str
    calibration_id: str
    moved: bool
    translation_mm: float  # camera displacement from its calibrated pose (views averaged)
    rotation_deg: float
    threshold_mm: float
    threshold_deg: float
    n_views: int
    reprojection_px: float  # RMS of the board fit with the stored intrinsics (large = intrinsics changed too)
    per_view: list[tuple[float, float]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def observed_camera_pose(calib: HandEyeCalibration, T_cam_board: np.ndarray, T_base_ee: np.ndarray | None,
                         reference: np.ndarray | None = None) -> np.ndarray:
    """The camera's optical-frame pose in the calibration's parent frame implied by one board view."""
    if calib.kind == "eye_to_hand":
        if T_base_ee is not None:
            T_parent_board = T_base_ee @ calib.target
        elif reference is not None:
            T_parent_board = reference
        else:
            raise CalibrationError(f"camera {calib.camera} is eye_to_hand: the drift check needs the flange pose "
                                   "(board on the flange) or a static reference board (check.save_reference=true once)")
        return T_parent_board @ invert(T_cam_board)
    if T_base_ee is None:
        raise CalibrationError(f"camera {calib.camera} is eye_in_hand: the drift check needs the flange pose of each view")
    return invert(T_base_ee) @ calib.target @ invert(T_cam_board)


def check_drift_poses(calib: HandEyeCalibration, board_poses: list[tuple[np.ndarray, float]],
                      ee_poses: list[np.ndarray | None], thresholds: DriftThresholds = DriftThresholds(),
                      reference: np.ndarray | None = None) -> DriftReport:
    """The drift report from already-estimated board poses ((T_cam_board, reprojection px) per view)."""
    if not board_poses:
        raise BoardNotFoundError(f"camera {calib.camera}: no view showed the board; the drift check needs at least one")
    obs = [observed_camera_pose(calib, T, ee, reference) for (T, _), ee in zip(board_poses, ee_poses)]
    per_view = [transform_delta(calib.T_parent_optical, T) for T in obs]
    mm, deg = transform_delta(calib.T_parent_optical, mean_transform(obs))
    reproj = float(np.sqrt(np.mean([r ** 2 for _, r in board_poses])))
    moved = mm > thresholds.translation_mm or deg > thresholds.rotation_deg
    verdict = "MOVED" if moved else "in place"
    message = (f"camera {calib.camera} {verdict}: {mm:.1f} mm / {deg:.2f} deg from calibration {calib.calibration_id} "
               f"(thresholds {thresholds.translation_mm:g} mm / {thresholds.rotation_deg:g} deg, {len(obs)} views)")
    if moved:
        message += ("; recalibrate (`wvl calibrate handeye`) — episodes recorded from now on must not be mixed "
                    "with older ones in the world model's training set")
    if reproj > 2.0:
        message += f"; the board fits the stored intrinsics poorly ({reproj:.1f} px): check resolution / focus / intrinsics"
    return DriftReport(calib.camera, calib.calibration_id, moved, mm, deg, thresholds.translation_mm,
                       thresholds.rotation_deg, len(obs), reproj, per_view, [], message)


def check_drift(calib: HandEyeCalibration, intrinsics: CameraIntrinsics, board: BoardConfig,
                views: list[tuple[np.ndarray, np.ndarray | None]], thresholds: DriftThresholds = DriftThresholds(),
                reference: np.ndarray | None = None) -> DriftReport:
    """Compare fresh views with the stored calibration. ``views``: (RGB image, T_base_ee or None) pairs;
    ``reference``: T_parent_board of a static board (eye_to_hand without the robot). Views without the board
    are skipped (and listed in ``report.skipped``); none with the board is an error."""
    detector = BoardDetector(board)
    poses, ees, skipped = [], [], []
    for i, (image, ee) in enumerate(views):
        det = detector.detect(image)
        if det.image_size != intrinsics.size:
            raise CalibrationError(f"view {i} is {det.image_size[0]}x{det.image_size[1]} but the intrinsics are for "
                                   f"{intrinsics.width}x{intrinsics.height}; use the calibrated resolution")
        try:
            poses.append(estimate_pose(det, intrinsics.K, intrinsics.dist))
            ees.append(ee)
        except BoardNotFoundError as e:
            skipped.append(f"view {i}: {e}")
    if not poses:
        raise BoardNotFoundError(f"camera {calib.camera}: the board is in none of the {len(views)} views "
                                 f"({'; '.join(skipped)}); put it where the camera sees it")
    report = check_drift_poses(calib, poses, ees, thresholds, reference)
    report.skipped = skipped
    log.debug(report.message)  # report.message is the caller's to show (`wvl calibrate check` prints it once)
    return report
