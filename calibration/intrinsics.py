"""Camera intrinsics from ChArUco views: per-view quality gates, cv2.calibrateCamera, honest error report.

    views --detect--> Detection --gate (corners, coverage, blur)--> calibrateCameraExtended
          --drop per-view outliers, solve again--> IntrinsicsResult (K, dist, RMS, per-view errors, coverage)
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import cv2
import numpy as np

from calibration.board import BoardConfig, BoardDetector, Detection, is_collinear
from calibration.errors import BoardNotFoundError, CalibrationError, TooFewViewsError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole + plumb_bob (OpenCV k1 k2 p1 p2 k3) model of one camera at one resolution.
    ``K`` (3, 3) px; ``dist`` (5,) (more for rational models); ``width``/``height`` px."""

    width: int
    height: int
    K: np.ndarray
    dist: np.ndarray
    camera_name: str = "camera"
    distortion_model: str = "plumb_bob"

    def __post_init__(self) -> None:
        K = np.asarray(self.K, np.float64).reshape(3, 3)
        dist = np.asarray(self.dist, np.float64).reshape(-1)
        object.__setattr__(self, "K", K)
        object.__setattr__(self, "dist", dist)
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise ValueError(f"image_width/image_height: must be positive, got {self.width}x{self.height}")
        if not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
            raise ValueError(f"camera_matrix: focal lengths must be positive and finite, got fx={K[0, 0]} fy={K[1, 1]}")
        if dist.shape[0] not in (4, 5, 8, 12, 14) or not np.all(np.isfinite(dist)):
            raise ValueError(f"distortion_coefficients: expected 4, 5, 8, 12 or 14 finite numbers, got {dist.tolist()}")

    @property
    def fx(self) -> float:
        return float(self.K[0, 0])

    @property
    def fy(self) -> float:
        return float(self.K[1, 1])

    @property
    def cx(self) -> float:
        return float(self.K[0, 2])

    @property
    def cy(self) -> float:
        return float(self.K[1, 2])

    @property
    def size(self) -> tuple[int, int]:
        return int(self.width), int(self.height)

    def to_camera_info(self) -> dict[str, Any]:
        """ROS camera_calibration_parsers YAML layout (what camera drivers' ``camera_info_url`` reads)."""
        P = np.zeros((3, 4))
        P[:3, :3] = self.K
        return {
            "image_width": int(self.width), "image_height": int(self.height), "camera_name": self.camera_name,
            "camera_matrix": {"rows": 3, "cols": 3, "data": [float(x) for x in self.K.reshape(-1)]},
            "distortion_model": self.distortion_model,
            "distortion_coefficients": {"rows": 1, "cols": int(self.dist.shape[0]), "data": [float(x) for x in self.dist]},
            "rectification_matrix": {"rows": 3, "cols": 3, "data": [float(x) for x in np.eye(3).reshape(-1)]},
            "projection_matrix": {"rows": 3, "cols": 4, "data": [float(x) for x in P.reshape(-1)]},
        }

    @classmethod
    def from_camera_info(cls, d: dict[str, Any], source: str = "camera_info") -> "CameraIntrinsics":
        def matrix(key: str, shape: tuple[int, ...]) -> np.ndarray:
            if key not in d:
                raise ValueError(f"{source}: missing {key!r}")
            m = d[key]
            data = m.get("data") if isinstance(m, dict) else m
            arr = np.asarray(data, np.float64)
            if shape and arr.size != int(np.prod(shape)):
                raise ValueError(f"{source}: {key} has {arr.size} numbers, expected {int(np.prod(shape))}")
            return arr.reshape(shape) if shape else arr.reshape(-1)

        for key in ("image_width", "image_height"):
            if key not in d:
                raise ValueError(f"{source}: missing {key!r}")
        model = d.get("distortion_model", "plumb_bob")
        if model not in ("plumb_bob", "rational_polynomial"):
            raise ValueError(f"{source}: distortion_model {model!r} is not supported (plumb_bob, rational_polynomial)")
        return cls(int(d["image_width"]), int(d["image_height"]), matrix("camera_matrix", (3, 3)),
                   matrix("distortion_coefficients", ()), str(d.get("camera_name", "camera")), model)

    def scaled(self, width: int, height: int) -> "CameraIntrinsics":
        """The same camera at another resolution of the same field of view (e.g. 1280x720 -> 640x360)."""
        sx, sy = width / self.width, height / self.height
        if abs(sx - sy) > 1e-3:
            raise ValueError(f"cannot rescale {self.width}x{self.height} to {width}x{height}: the aspect ratio differs (a crop, not a scale)")
        K = self.K.copy()
        K[0, :] *= sx
        K[1, :] *= sy
        # Pixel centres: x_new + 0.5 = s (x_old + 0.5).
        K[0, 2] += 0.5 * sx - 0.5
        K[1, 2] += 0.5 * sy - 0.5
        return CameraIntrinsics(width, height, K, self.dist.copy(), self.camera_name, self.distortion_model)


@dataclass(frozen=True)
class IntrinsicsConfig:
    min_views: int = 10  # accepted views needed (research: 15-30 covering the image and tilts is good practice)
    min_corners: int = 12  # ChArUco corners per view
    min_area_fraction: float = 0.03  # board hull / image area: smaller boards say little about distortion
    max_blur_px: float = 1.5  # board.blur_px() of the view; sharp views measure ~0.9 px, 2 px of blur ~1.8-1.9
    outlier_factor: float = 3.0  # drop views whose error exceeds this many times the median (and 0.5 px)
    fix_k3: bool = True  # k3 is poorly constrained by a flat board on low-distortion lenses (RealSense)
    rational_model: bool = False  # 8-coefficient model for wide-angle lenses

    def __post_init__(self) -> None:
        if not isinstance(self.min_views, int) or self.min_views < 3:
            raise ValueError(f"intrinsics.min_views: must be an integer >= 3, got {self.min_views!r}")
        if not isinstance(self.min_corners, int) or self.min_corners < 6:
            raise ValueError(f"intrinsics.min_corners: must be an integer >= 6, got {self.min_corners!r}")
        if not 0 <= self.min_area_fraction < 1:
            raise ValueError(f"intrinsics.min_area_fraction: must be in [0, 1), got {self.min_area_fraction}")
        if not self.max_blur_px > 0:
            raise ValueError(f"intrinsics.max_blur_px: must be > 0, got {self.max_blur_px}")
        if self.outlier_factor <= 1:
            raise ValueError(f"intrinsics.outlier_factor: must be > 1, got {self.outlier_factor}")


@dataclass
class ViewReport:
    """What happened to one view. ``error_px`` is its RMS reprojection error in the final solve."""

    name: str
    accepted: bool
    reason: str = ""
    n_corners: int = 0
    n_markers: int = 0
    area_fraction: float = 0.0
    blur_px: float = float("nan")
    error_px: float = float("nan")


@dataclass
class IntrinsicsResult:
    intrinsics: CameraIntrinsics
    rms_px: float
    views: list[ViewReport]
    coverage: float  # share of a 4x4 grid of image cells holding at least one accepted corner
    max_tilt_deg: float  # the largest angle between the board normal and the optical axis over the views
    std: dict[str, float]  # standard deviations of fx, fy, cx, cy (px) from the solver's covariance
    warnings: list[str] = field(default_factory=list)

    @property
    def n_used(self) -> int:
        return sum(v.accepted for v in self.views)


def gate_view(det: Detection, cfg: IntrinsicsConfig) -> str:
    """The reason a view is refused ('' when accepted)."""
    if len(det) == 0:
        return "no board found" + (f" ({det.n_markers} markers but no ChArUco corners)" if det.n_markers else "")
    if len(det) < cfg.min_corners:
        return f"only {len(det)} corners (need >= {cfg.min_corners}): show more of the board"
    if is_collinear(det.object_points):
        return "corners on one line: show more of the board"
    if det.area_fraction < cfg.min_area_fraction:
        return f"board covers {det.area_fraction:.1%} of the image (need >= {cfg.min_area_fraction:.0%}): move it closer"
    if det.blur_px > cfg.max_blur_px:
        return f"blurred (edge blur {det.blur_px:.2f} px > {cfg.max_blur_px} px): hold the board still, check focus"
    return ""


def _coverage(points: list[np.ndarray], size: tuple[int, int], cells: int = 4) -> float:
    w, h = size
    hit = np.zeros((cells, cells), bool)
    for p in points:
        ix = np.clip((p[:, 0] / w * cells).astype(int), 0, cells - 1)
        iy = np.clip((p[:, 1] / h * cells).astype(int), 0, cells - 1)
        hit[iy, ix] = True
    return float(hit.mean())


def calibrate_intrinsics(views: Iterable[tuple[str, np.ndarray]], board: BoardConfig,
                         cfg: IntrinsicsConfig = IntrinsicsConfig(), camera_name: str = "camera") -> IntrinsicsResult:
    """Calibrate from (name, image) pairs (RGB or gray uint8; a `Detection` in place of an image is used as
    is). Raises BoardNotFoundError when no view shows the board, TooFewViewsError when fewer than
    ``cfg.min_views`` views pass the gates."""
    detector = BoardDetector(board)
    reports: list[ViewReport] = []
    dets: list[Detection] = []
    size: tuple[int, int] | None = None
    markers_seen = 0
    for name, image in views:
        det = image if isinstance(image, Detection) else detector.detect(image)
        if size is None:
            size = det.image_size
        elif det.image_size != size:
            raise CalibrationError(f"view {name!r} is {det.image_size[0]}x{det.image_size[1]}, earlier views are "
                                   f"{size[0]}x{size[1]}; calibrate one resolution at a time")
        markers_seen += det.n_markers
        reason = gate_view(det, cfg)
        reports.append(ViewReport(name, not reason, reason, len(det), det.n_markers, det.area_fraction, det.blur_px))
        if not reason:
            dets.append(det)
        else:
            log.debug("view %s refused: %s", name, reason)  # in result.views (`wvl calibrate intrinsics` tables them)
    if not reports:
        raise TooFewViewsError("no images to calibrate from; check the image source (folder path, camera, recording)")
    if not any(r.n_corners for r in reports):
        hint = (f"ArUco markers were seen ({markers_seen}) but no ChArUco corners: check board.squares_x / "
                "board.squares_y and board.legacy_pattern against the printed board") if markers_seen else (
                f"no {board.dictionary} marker was seen: check board.dictionary, lighting and focus")
        raise BoardNotFoundError(f"no ChArUco board found in any of {len(reports)} images; {hint}")
    if len(dets) < cfg.min_views:
        reasons: dict[str, int] = {}
        for r in reports:
            if not r.accepted:
                key = r.reason.split(" (")[0].split(":")[0]
                reasons[key] = reasons.get(key, 0) + 1
        detail = ", ".join(f"{k}: {v}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1]))
        raise TooFewViewsError(f"only {len(dets)} of {len(reports)} views are usable, need >= {cfg.min_views} "
                               f"(refused - {detail or 'none'}); take more views with the whole board in sharp focus")

    flags = cv2.CALIB_FIX_K3 if cfg.fix_k3 and not cfg.rational_model else 0
    if cfg.rational_model:
        flags |= cv2.CALIB_RATIONAL_MODEL
    used = [i for i, r in enumerate(reports) if r.accepted]
    det_of = dict(zip(used, dets))

    def solve(idx: list[int]):
        objs = [det_of[i].object_points.astype(np.float32) for i in idx]
        imgs = [det_of[i].image_points.astype(np.float32) for i in idx]
        return cv2.calibrateCameraExtended(objs, imgs, size, None, None, flags=flags,
                                           criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12))

    rms, K, dist, rvecs, tvecs, std_int, _std_ext, per_view = solve(used)
    per_view = per_view.reshape(-1)
    # One pass of outlier rejection: a view far worse than the rest is a mis-detection or a moving board.
    limit = max(cfg.outlier_factor * float(np.median(per_view)), 0.5)
    bad = [i for i, e in zip(used, per_view) if e > limit]
    if bad and len(used) - len(bad) >= cfg.min_views:
        for i, e in zip(used, per_view):
            if e > limit:
                reports[i].accepted = False
                reports[i].reason = f"outlier: reprojection error {e:.2f} px > {limit:.2f} px"
                reports[i].error_px = float(e)
        used = [i for i in used if i not in bad]
        rms, K, dist, rvecs, tvecs, std_int, _std_ext, per_view = solve(used)
        per_view = per_view.reshape(-1)
    for i, e in zip(used, per_view):
        reports[i].error_px = float(e)

    intr = CameraIntrinsics(size[0], size[1], K, dist.reshape(-1), camera_name)
    coverage = _coverage([det_of[i].image_points for i in used], size)
    tilts = [math.degrees(math.acos(min(1.0, abs(float(cv2.Rodrigues(r)[0][2, 2]))))) for r in rvecs]
    std = {k: float(v) for k, v in zip(("fx", "fy", "cx", "cy"), std_int.reshape(-1)[:4])}
    warnings = []
    if rms > 1.0:
        warnings.append(f"RMS reprojection error {rms:.2f} px is high (good: < 0.5 px); check the board is flat and "
                        "its square_length_m is measured, and that views are sharp")
    if coverage < 0.6:
        warnings.append(f"accepted corners cover {coverage:.0%} of the image (4x4 cells); add views with the board "
                        "near the edges and corners, or distortion is extrapolated there")
    if max(tilts) < 20:
        warnings.append(f"largest board tilt is {max(tilts):.0f} deg; tilt the board 20-45 deg in some views or the "
                        "focal length is poorly determined")
    for w in warnings:  # in result.warnings: the caller shows them (`wvl calibrate intrinsics` prints each once)
        log.debug(w)
    return IntrinsicsResult(intr, float(rms), reports, coverage, max(tilts), std, warnings)


def compare_intrinsics(a: CameraIntrinsics, b: CameraIntrinsics) -> dict[str, float]:
    """How far model b is from model a: focal differences in %, principal-point differences in px, and the
    mean / max displacement (px) of the same ray projected by both models over the image."""
    if a.size != b.size:
        b = b.scaled(*a.size)
    xs, ys = np.meshgrid(np.linspace(0, a.width - 1, 17), np.linspace(0, a.height - 1, 13))
    px = np.stack([xs, ys], -1).reshape(-1, 1, 2)
    rays = cv2.undistortPoints(px, a.K, a.dist).reshape(-1, 2)
    pts = np.concatenate([rays, np.ones((len(rays), 1))], 1)
    proj, _ = cv2.projectPoints(pts, np.zeros(3), np.zeros(3), b.K, b.dist)
    d = np.linalg.norm(proj.reshape(-1, 2) - px.reshape(-1, 2), axis=1)
    return {
        "fx_pct": 100.0 * (b.fx - a.fx) / a.fx, "fy_pct": 100.0 * (b.fy - a.fy) / a.fy,
        "cx_px": b.cx - a.cx, "cy_px": b.cy - a.cy,
        "mean_px": float(d.mean()), "max_px": float(d.max()),
    }
