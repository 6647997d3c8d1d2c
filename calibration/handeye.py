"""Hand-eye calibration: all five cv2.calibrateHandEye methods, the one with the best held-out consistency kept.

Both set-ups reduce to one equation, A_i @ X @ B_i = C for every sample i, with B_i = T_cam_board (PnP):

    eye_in_hand  camera on the flange, board fixed:   A_i = T_base_ee_i,       X = T_ee_cam,   C = T_base_board
    eye_to_hand  camera fixed, board on the flange:   A_i = inv(T_base_ee_i),  X = T_base_cam, C = T_ee_board

OpenCV solves the first form; the second is the same call with inverted robot poses (what easy_handeye2
does). Held-out consistency: leave one sample out, solve X and C from the rest, and measure how far the
left-out sample's A_i X B_i lands from C — a board-pose error in mm and degrees that needs no ground truth.
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from calibration.errors import CalibrationError, DegenerateMotionError, TooFewViewsError, UnitsError
from calibration.geometry import invert, make_transform, mean_transform, rotation_angle_deg, transform_delta

log = logging.getLogger(__name__)

METHODS: dict[str, int] = {
    "tsai": cv2.CALIB_HAND_EYE_TSAI,
    "park": cv2.CALIB_HAND_EYE_PARK,
    "horaud": cv2.CALIB_HAND_EYE_HORAUD,
    "andreff": cv2.CALIB_HAND_EYE_ANDREFF,
    "daniilidis": cv2.CALIB_HAND_EYE_DANIILIDIS,
}
KINDS = ("eye_in_hand", "eye_to_hand")
# The score converts a rotation error to the displacement it causes 10 cm away, so one number ranks methods.
SCORE_LEVER_MM = 100.0
# The largest camera-to-flange / board-to-flange distance the units check allows for (a rig is smaller).
MAX_LEVER_M = 1.0


@dataclass(frozen=True)
class HandEyeSample:
    """One pose pair. ``T_base_ee`` (4, 4) the flange in the robot base (m); ``T_cam_board`` (4, 4) the board in
    the camera's optical frame (m); ``reprojection_px`` the PnP RMS of that board pose; ``image`` its file."""

    T_base_ee: np.ndarray
    T_cam_board: np.ndarray
    reprojection_px: float = 0.0
    n_corners: int = 0
    image: str | None = None


@dataclass(frozen=True)
class HandEyeConfig:
    kind: str = "eye_to_hand"
    methods: tuple[str, ...] = tuple(METHODS)
    min_samples: int = 10  # research: >= 10 pose pairs with rotations about non-parallel axes
    max_reprojection_px: float = 1.0  # samples whose board pose fits worse are dropped (blur, moving board)
    min_rotation_deg: float = 30.0  # required spread of flange orientations (largest relative rotation)
    min_axis_angle_deg: float = 15.0  # rotation axes of the motions must span at least this angle

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"handeye.kind: {self.kind!r} is not one of {KINDS}")
        methods = tuple(self.methods)
        object.__setattr__(self, "methods", methods)
        unknown = [m for m in methods if m not in METHODS]
        if not methods or unknown:
            raise ValueError(f"handeye.methods: {unknown or methods!r} not in {tuple(METHODS)}")
        if not isinstance(self.min_samples, int) or self.min_samples < 3:
            raise ValueError(f"handeye.min_samples: must be an integer >= 3 (the maths needs 3), got {self.min_samples!r}")
        if not self.max_reprojection_px > 0:
            raise ValueError(f"handeye.max_reprojection_px: must be > 0, got {self.max_reprojection_px}")
        if self.min_rotation_deg < 0 or self.min_axis_angle_deg < 0:
            raise ValueError("handeye.min_rotation_deg / min_axis_angle_deg: must be >= 0")


@dataclass
class MethodResult:
    name: str
    X: np.ndarray  # (4, 4)
    residual_mm: float  # in-sample RMS of A_i X B_i about their mean (board position)
    residual_deg: float
    heldout_mm: float  # leave-one-out RMS
    heldout_deg: float

    @property
    def score(self) -> float:
        return self.heldout_mm + SCORE_LEVER_MM * math.radians(self.heldout_deg)


@dataclass
class HandEyeResult:
    kind: str
    X: np.ndarray  # T_ee_cam (eye_in_hand) or T_base_cam (eye_to_hand): the camera's optical frame in parent
    target: np.ndarray  # T_base_board (eye_in_hand) or T_ee_board (eye_to_hand)
    method: str
    methods: dict[str, MethodResult]
    n_samples: int
    rotation_spread_deg: float
    dropped: list[str] = field(default_factory=list)  # why samples were left out
    warnings: list[str] = field(default_factory=list)

    @property
    def best(self) -> MethodResult:
        return self.methods[self.method]

    @property
    def parent_frame_role(self) -> str:
        return "ee" if self.kind == "eye_in_hand" else "base"


def robot_side(samples: list[HandEyeSample], kind: str) -> list[np.ndarray]:
    """The A_i of the shared equation (see the module docstring)."""
    return [s.T_base_ee if kind == "eye_in_hand" else invert(s.T_base_ee) for s in samples]


def _solve(A: list[np.ndarray], B: list[np.ndarray], method: str) -> np.ndarray:
    R, t = cv2.calibrateHandEye(
        [a[:3, :3] for a in A], [a[:3, 3].reshape(3, 1) for a in A],
        [b[:3, :3] for b in B], [b[:3, 3].reshape(3, 1) for b in B],
        method=METHODS[method],  # keyword: a 5th positional argument lands in an output slot (opencv #27625)
    )
    X = make_transform(R, t)
    if not np.all(np.isfinite(X)):
        raise CalibrationError(f"hand-eye method {method} returned NaN (degenerate motions)")
    return X


def _consistency(A: list[np.ndarray], X: np.ndarray, B: list[np.ndarray]) -> tuple[np.ndarray, list[tuple[float, float]]]:
    C = [a @ X @ b for a, b in zip(A, B)]
    C_mean = mean_transform(C)
    return C_mean, [transform_delta(C_mean, c) for c in C]


def _rms(values: list[float]) -> float:
    return float(np.sqrt(np.mean(np.square(values)))) if values else float("nan")


def check_motion(samples: list[HandEyeSample], cfg: HandEyeConfig) -> tuple[float, list[str]]:
    """Refuse motions that cannot determine X and units that do not match. Returns (rotation spread in
    degrees, warnings)."""
    warnings: list[str] = []
    Rs = [s.T_base_ee[:3, :3] for s in samples]
    pairs = list(itertools.combinations(range(len(samples)), 2))
    # Relative rotations in the base frame: their angles (spread) and axes (must not all be parallel).
    rel = [Rs[j] @ Rs[i].T for i, j in pairs]
    angles = [rotation_angle_deg(r) for r in rel]
    spread = max(angles) if angles else 0.0
    fix = "rotate the wrist 20-45 deg about at least two different axes between samples (tilt and roll the flange)"
    if spread < 2.0:
        raise DegenerateMotionError(f"the flange orientation barely changes between samples (largest relative "
                                    f"rotation {spread:.1f} deg): pure translations cannot determine the camera's "
                                    f"rotation offset; {fix}")
    axes = [cv2.Rodrigues(r)[0].reshape(3) / math.radians(a) for r, a in zip(rel, angles) if a > 5.0]
    axis_span = 0.0
    for u, v in itertools.combinations(axes, 2):
        axis_span = max(axis_span, math.degrees(math.acos(min(1.0, abs(float(np.dot(u, v)))))))
    if axis_span < cfg.min_axis_angle_deg:
        raise DegenerateMotionError(f"all rotations between samples are about (nearly) one axis (axes span "
                                    f"{axis_span:.1f} deg < {cfg.min_axis_angle_deg}); the offset along that axis "
                                    f"is unobservable; {fix}")
    if spread < cfg.min_rotation_deg:
        raise DegenerateMotionError(f"flange orientations span only {spread:.1f} deg (need >= {cfg.min_rotation_deg} "
                                    f"deg for a trustworthy result); {fix}")
    # Units: between two samples the camera (eye_in_hand) or the board (eye_to_hand) moves as far as the
    # flange does, give or take the lever arm: | |dt_flange| - |dt_other| | <= angle * lever. Levers on a real
    # rig are < 1 m, so a gap far beyond that means one side is not in metres.
    if cfg.kind == "eye_in_hand":
        other = [invert(s.T_cam_board)[:3, 3] for s in samples]  # camera positions in the board frame
    else:
        other = [s.T_cam_board[:3, 3] for s in samples]  # board positions in the camera frame
    robot = [s.T_base_ee[:3, 3] for s in samples]
    d_robot = np.array([np.linalg.norm(robot[i] - robot[j]) for i, j in pairs])
    d_other = np.array([np.linalg.norm(other[i] - other[j]) for i, j in pairs])
    gap = np.abs(d_robot - d_other) - np.radians(angles) * MAX_LEVER_M
    if np.median(gap) > 0.1:
        factor = float(np.median(d_robot) / max(float(np.median(d_other)), 1e-12))
        if factor > 1:
            raise UnitsError(f"the flange moves ~{factor:.0f}x farther than the {'camera' if cfg.kind == 'eye_in_hand' else 'board'} "
                             f"between samples: the robot poses look like {'millimetres' if factor > 300 else 'another unit'}; "
                             f"give them in metres{' (divide by 1000)' if factor > 300 else ''}")
        raise UnitsError(f"the {'camera' if cfg.kind == 'eye_in_hand' else 'board'} moves ~{1 / factor:.0f}x farther than the "
                         f"flange between samples: the board lengths look like millimetres (board.square_length_m / "
                         f"board.marker_length_m must be metres), or the robot poses are not in metres")
    return spread, warnings


def solve_handeye(samples: list[HandEyeSample], cfg: HandEyeConfig = HandEyeConfig()) -> HandEyeResult:
    """Solve X with every configured method, rank them by leave-one-out consistency, keep the best."""
    dropped = [f"sample {i} ({s.image or 'no image'}): board reprojection {s.reprojection_px:.2f} px > "
               f"{cfg.max_reprojection_px} px" for i, s in enumerate(samples) if s.reprojection_px > cfg.max_reprojection_px]
    kept = [s for s in samples if s.reprojection_px <= cfg.max_reprojection_px]
    for d in dropped:  # in result.dropped: the caller shows them (`wvl calibrate handeye` prints each once)
        log.debug("dropped %s", d)
    if len(kept) < cfg.min_samples:
        raise TooFewViewsError(f"{len(kept)} usable pose pairs ({len(samples)} taken, {len(dropped)} dropped for "
                               f"reprojection error), need >= {cfg.min_samples}; take more samples")
    spread, warnings = check_motion(kept, cfg)
    A = robot_side(kept, cfg.kind)
    B = [s.T_cam_board for s in kept]
    n = len(kept)
    results: dict[str, MethodResult] = {}
    for method in cfg.methods:
        try:
            X = _solve(A, B, method)
        except (cv2.error, CalibrationError) as e:
            warnings.append(f"method {method} failed: {str(e).splitlines()[0]}")
            continue
        _, res = _consistency(A, X, B)
        held: list[tuple[float, float]] = []
        for i in range(n):
            rest = [k for k in range(n) if k != i]
            try:
                Xi = _solve([A[k] for k in rest], [B[k] for k in rest], method)
            except (cv2.error, CalibrationError):
                held.append((float("inf"), float("inf")))
                continue
            C_rest, _ = _consistency([A[k] for k in rest], Xi, [B[k] for k in rest])
            held.append(transform_delta(C_rest, A[i] @ Xi @ B[i]))
        results[method] = MethodResult(method, X, _rms([r[0] for r in res]), _rms([r[1] for r in res]),
                                       _rms([h[0] for h in held]), _rms([h[1] for h in held]))
    if not results:
        raise CalibrationError("every hand-eye method failed: " + "; ".join(warnings))
    best = min(results.values(), key=lambda r: r.score)
    target, _ = _consistency(A, best.X, B)
    spread_mm = max(transform_delta(best.X, r.X)[0] for r in results.values())
    if spread_mm > 10.0:
        warnings.append(f"the methods disagree by up to {spread_mm:.0f} mm: the data is poorly conditioned; add "
                        "samples with larger rotations and keep the board close to the camera")
    if best.heldout_mm > 5.0 or best.heldout_deg > 1.0:
        warnings.append(f"held-out consistency {best.heldout_mm:.1f} mm / {best.heldout_deg:.2f} deg is worse than "
                        "5 mm / 1 deg (good practice with a RealSense); check that the board and camera are rigid, "
                        "the robot is still when sampling, and the intrinsics are right")
    for w in warnings:  # in result.warnings: the caller shows them (`wvl calibrate handeye` prints each once)
        log.debug(w)
    return HandEyeResult(cfg.kind, best.X, target, best.name, results, n, spread, dropped, warnings)
