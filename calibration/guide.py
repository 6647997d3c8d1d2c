"""A guided hand-eye session: take samples, be told where to go next, know when there is enough.

The suggester picks, among tilts/rolls of the flange about a pivot, the orientation farthest (in rotation
angle) from every sample taken so far — farthest-point sampling on SO(3), which gives the rotation
diversity about several axes that hand-eye needs. The pivot keeps the board in view: a point in front of
the camera for a wrist camera, the flange for a board held by the robot; once a preliminary solution exists
(>= 4 diverse samples), the pivot is the board's centre and suggestions that would push the board out of
the image are skipped.

`HandEyeSession` holds no device: a caller (the CLI, a test rig, a ROS node) feeds it flange poses and
images. That keeps the logic testable and the devices swappable.
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from calibration.board import BoardConfig, BoardDetector, estimate_pose
from calibration.errors import BoardNotFoundError, CalibrationError
from calibration.geometry import (
    invert, make_transform, matrix_to_pose, pose_to_matrix, rotation_angle_deg, rpy_to_matrix, transform_delta,
)
from calibration.handeye import HandEyeConfig, HandEyeResult, HandEyeSample, check_motion, solve_handeye
from calibration.intrinsics import CameraIntrinsics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GuideConfig:
    max_tilt_deg: float = 30.0  # tilt of the flange about its x / y axes in suggestions
    max_roll_deg: float = 45.0  # roll about the flange z axis
    pivot_distance_m: float = 0.4  # eye_in_hand, before a first solve: orbit a point this far along the tool z
    min_new_rotation_deg: float = 5.0  # a sample closer than this in rotation to an earlier one adds little
    visible_margin_px: float = 10.0

    def __post_init__(self) -> None:
        if not 5 <= self.max_tilt_deg <= 60:
            raise ValueError(f"guide.max_tilt_deg: must be in [5, 60], got {self.max_tilt_deg}")
        if not 0 <= self.max_roll_deg <= 180:
            raise ValueError(f"guide.max_roll_deg: must be in [0, 180], got {self.max_roll_deg}")
        if self.pivot_distance_m < 0 or self.pivot_distance_m > 3:
            raise ValueError(f"guide.pivot_distance_m: must be in [0, 3] metres, got {self.pivot_distance_m}")
        if self.min_new_rotation_deg < 0:
            raise ValueError("guide.min_new_rotation_deg: must be >= 0")


@dataclass(frozen=True)
class Suggestion:
    """Where to move the flange next. ``T_base_ee`` (4, 4); ``pose`` (7,) xyz + quaternion xyzw."""

    T_base_ee: np.ndarray
    tilt_x_deg: float
    tilt_y_deg: float
    roll_deg: float
    novelty_deg: float  # rotation to the nearest sample already taken

    @property
    def pose(self) -> np.ndarray:
        return matrix_to_pose(self.T_base_ee)

    def describe(self, current: np.ndarray | None = None) -> str:
        p = self.pose
        text = (f"tilt {self.tilt_x_deg:+.0f} deg about tool x, {self.tilt_y_deg:+.0f} deg about tool y, roll "
                f"{self.roll_deg:+.0f} deg (from the first sample) -> xyz [{p[0]:.3f} {p[1]:.3f} {p[2]:.3f}] m, "
                f"quat xyzw [{p[3]:.3f} {p[4]:.3f} {p[5]:.3f} {p[6]:.3f}]")
        if current is not None:
            mm, deg = transform_delta(current, self.T_base_ee)
            text += f"; {mm:.0f} mm / {deg:.0f} deg from here"
        return text


def candidate_rotations(cfg: GuideConfig) -> list[tuple[float, float, float]]:
    """(tilt_x, tilt_y, roll) in degrees: a grid of the tilts/rolls a person can reach with the board in view."""
    t, r = cfg.max_tilt_deg, cfg.max_roll_deg
    tilts = (-t, -t / 2, 0.0, t / 2, t)
    rolls = (-r, 0.0, r) if r > 0 else (0.0,)
    return [c for c in itertools.product(tilts, tilts, rolls) if c != (0.0, 0.0, 0.0)]


def orbit(T_ref: np.ndarray, pivot: np.ndarray, tilt_x: float, tilt_y: float, roll: float) -> np.ndarray:
    """T_ref rotated about the point ``pivot`` (base frame) by a rotation given in T_ref's tool axes (deg)."""
    R_local = rpy_to_matrix(math.radians(tilt_x), math.radians(tilt_y), math.radians(roll))
    R_ref = T_ref[:3, :3]
    R_delta = R_ref @ R_local @ R_ref.T  # the same rotation in base axes
    return make_transform(R_delta @ R_ref, pivot + R_delta @ (T_ref[:3, 3] - pivot))


class PoseSuggester:
    def __init__(self, cfg: GuideConfig = GuideConfig()) -> None:
        self.cfg = cfg
        self.candidates = candidate_rotations(cfg)

    def suggest(self, reference: np.ndarray, taken: list[np.ndarray], pivot: np.ndarray, visible=None,
                scale: float = 1.0) -> Suggestion:
        """The candidate orbit pose farthest in rotation from every taken flange pose. ``visible(T_base_ee)``
        (optional) says whether the board would stay in view there; ``scale`` shrinks every rotation (gentle
        moves while the pivot is only a guess)."""
        best: Suggestion | None = None
        for tx, ty, rz in ((scale * a, scale * b, scale * c) for a, b, c in self.candidates):
            T = orbit(reference, pivot, tx, ty, rz)
            if visible is not None and not visible(T):
                continue
            novelty = min((rotation_angle_deg(T[:3, :3].T @ t[:3, :3]) for t in taken), default=180.0)
            if best is None or novelty > best.novelty_deg + 1e-9:
                best = Suggestion(T, tx, ty, rz, novelty)
        if best is None:
            raise CalibrationError("no suggested pose keeps the board in view; reduce guide.max_tilt_deg or move the "
                                   "board/robot so the board sits in the middle of the image")
        return best


@dataclass
class SampleVerdict:
    accepted: bool
    reason: str
    sample: HandEyeSample | None = None


class HandEyeSession:
    """Collects pose pairs for one camera. Feed it with `add(T_base_ee, image)`; ask `suggest()` where to go
    next and `status()` whether it is enough; `solve()` at the end."""

    def __init__(self, board: BoardConfig, intrinsics: CameraIntrinsics, cfg: HandEyeConfig = HandEyeConfig(),
                 guide: GuideConfig = GuideConfig()) -> None:
        self.board, self.intrinsics, self.cfg, self.guide = board, intrinsics, cfg, guide
        self.detector = BoardDetector(board)
        self.suggester = PoseSuggester(guide)
        self.samples: list[HandEyeSample] = []
        self.images: list[np.ndarray] = []
        self._prelim: HandEyeResult | None = None

    # ------------------------------------------------------------------ samples
    def add(self, T_base_ee: np.ndarray, image: np.ndarray, name: str | None = None) -> SampleVerdict:
        T_base_ee = np.asarray(T_base_ee, float)
        if T_base_ee.shape == (7,):
            T_base_ee = pose_to_matrix(T_base_ee)
        if np.linalg.norm(T_base_ee[:3, 3]) > 10.0:
            return SampleVerdict(False, f"flange position {T_base_ee[:3, 3].round(1).tolist()} is > 10 m from the base: "
                                        "robot poses must be metres (millimetres divided by 1000)")
        det = self.detector.detect(image)
        if det.image_size != self.intrinsics.size:
            return SampleVerdict(False, f"image is {det.image_size[0]}x{det.image_size[1]}, intrinsics are "
                                        f"{self.intrinsics.width}x{self.intrinsics.height}")
        try:
            T_cam_board, rms = estimate_pose(det, self.intrinsics.K, self.intrinsics.dist)
        except BoardNotFoundError as e:
            return SampleVerdict(False, f"no usable board view: {e}")
        if rms > self.cfg.max_reprojection_px:
            return SampleVerdict(False, f"board fit {rms:.2f} px > {self.cfg.max_reprojection_px} px (blur or motion): "
                                        "hold still and retake")
        for i, s in enumerate(self.samples):
            mm, deg = transform_delta(s.T_base_ee, T_base_ee)
            if deg < self.guide.min_new_rotation_deg and mm < 20.0:
                return SampleVerdict(False, f"only {deg:.1f} deg / {mm:.0f} mm from sample {i}: it adds little; "
                                            "move to the suggested pose")
        sample = HandEyeSample(T_base_ee, T_cam_board, rms, len(det), name)
        self.samples.append(sample)
        self.images.append(image)
        self._prelim = None
        return SampleVerdict(True, f"sample {len(self.samples) - 1}: {len(det)} corners, fit {rms:.2f} px", sample)

    def remove_last(self) -> None:
        if self.samples:
            self.samples.pop()
            self.images.pop()
            self._prelim = None

    # ------------------------------------------------------------------ guidance
    def preliminary(self) -> HandEyeResult | None:
        """A rough solution from the samples so far (None while they cannot determine one)."""
        if self._prelim is None and len(self.samples) >= 4:
            loose = HandEyeConfig(kind=self.cfg.kind, methods=("park",), min_samples=3,
                                  max_reprojection_px=self.cfg.max_reprojection_px, min_rotation_deg=10.0,
                                  min_axis_angle_deg=10.0)
            try:
                self._prelim = solve_handeye(self.samples, loose)
            except CalibrationError:
                self._prelim = None
        return self._prelim

    def _pivot(self) -> np.ndarray:
        ref = self.samples[0].T_base_ee
        prelim = self.preliminary()
        centre = np.append(self.board.center, 1.0)
        if prelim is not None:
            # The board centre in the base frame: on the table (eye_in_hand) or on the first flange pose.
            return (prelim.target @ centre)[:3] if self.cfg.kind == "eye_in_hand" else (ref @ prelim.target @ centre)[:3]
        if self.cfg.kind == "eye_in_hand":
            return ref[:3, 3] + ref[:3, 2] * self.guide.pivot_distance_m
        return ref[:3, 3].copy()

    def _visible_fn(self):
        prelim = self.preliminary()
        if prelim is None:
            return None
        w, h = self.board.size_m
        corners = np.array([[0, 0, 0, 1], [w, 0, 0, 1], [w, h, 0, 1], [0, h, 0, 1]], float).T  # (4, 4) board outline
        m, K, dist = self.guide.visible_margin_px, self.intrinsics.K, self.intrinsics.dist

        def visible(T_base_ee: np.ndarray) -> bool:
            if self.cfg.kind == "eye_in_hand":
                T_cam_board = invert(prelim.X) @ invert(T_base_ee) @ prelim.target
            else:
                T_cam_board = invert(prelim.X) @ T_base_ee @ prelim.target
            pts = (T_cam_board @ corners)[:3].T
            if np.any(pts[:, 2] < 0.05):
                return False
            # The board must face the camera (its +z points away from the camera) and stay inside the image.
            if T_cam_board[2, 2] < 0.3:
                return False
            px, _ = cv2.projectPoints(pts, np.zeros(3), np.zeros(3), K, dist)
            px = px.reshape(-1, 2)
            return bool(np.all((px[:, 0] > m) & (px[:, 0] < self.intrinsics.width - m) & (px[:, 1] > m) & (px[:, 1] < self.intrinsics.height - m)))

        return visible

    def suggest(self) -> Suggestion | None:
        """Where to go next (None before the first sample: start anywhere the board is fully in view)."""
        if not self.samples:
            return None
        # Until a preliminary solution says where the board is, the pivot is a guess and a large rotation
        # about it can swing the board out of view: suggest half-size rotations until then.
        scale = 1.0 if self.preliminary() is not None else 0.5
        return self.suggester.suggest(self.samples[0].T_base_ee, [s.T_base_ee for s in self.samples], self._pivot(),
                                      self._visible_fn(), scale)

    def status(self) -> tuple[bool, str]:
        """(ready to solve, what is still missing)."""
        n = len(self.samples)
        if n < self.cfg.min_samples:
            return False, f"{n}/{self.cfg.min_samples} samples"
        try:
            spread, _ = check_motion(self.samples, self.cfg)
        except CalibrationError as e:
            return False, f"{n} samples, not yet solvable: {e}"
        return True, f"{n} samples, rotations span {spread:.0f} deg: ready (more samples still help)"

    def solve(self) -> HandEyeResult:
        return solve_handeye(self.samples, self.cfg)

    # ------------------------------------------------------------------ persistence
    def save_samples(self, path: str | Path) -> Path:
        """Write the samples (YAML) and their images (PNG, next to it) so the result can be reproduced."""
        from calibration.samples import save_samples

        return save_samples(path, self.cfg.kind, self.samples, self.images)
