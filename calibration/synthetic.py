"""Synthetic ChArUco views through a known camera, and hand-eye rigs with known ground truth.

Used by the tests and `bench/calibration.py`. Rendering is physical enough that the detector, sub-pixel
refinement, PnP and the calibration all run as they would on real images: each output pixel casts its ray
through the (distorted) camera, hits the board plane, samples a high-resolution board texture (2x2
supersampling, then area averaging), then optical blur and sensor noise are added.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from calibration.board import BoardConfig, make_board
from calibration.geometry import axis_angle_matrix, invert, make_transform, rpy_to_matrix
from calibration.intrinsics import CameraIntrinsics

TEXTURE_PX_PER_SQUARE = 120
BACKGROUND = 110  # gray level around the board (a table top)


def default_camera() -> CameraIntrinsics:
    """A 640x480 camera with an off-centre principal point and mild barrel distortion."""
    K = np.array([[615.0, 0.0, 322.4], [0.0, 612.5, 236.8], [0.0, 0.0, 1.0]])
    return CameraIntrinsics(640, 480, K, np.array([-0.06, 0.08, 0.0006, -0.0004, 0.0]), camera_name="synthetic")


@functools.lru_cache(maxsize=4)
def _rays(fx: float, fy: float, cx: float, cy: float, dist: tuple, width: int, height: int, ss: int) -> np.ndarray:
    """(height*ss, width*ss, 2) undistorted normalised coordinates of each supersample of each pixel."""
    # OpenCV's pixel convention: integer coordinates are pixel centres; sub-samples at (k + 0.5)/ss - 0.5.
    offs = (np.arange(ss) + 0.5) / ss - 0.5
    xs = (np.arange(width)[:, None] + offs[None, :]).reshape(-1)
    ys = (np.arange(height)[:, None] + offs[None, :]).reshape(-1)
    grid = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 1, 2)  # (H*ss*W*ss, 1, 2)
    K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]])
    und = cv2.undistortPointsIter(grid, K, np.array(dist), None, None,
                                  (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 40, 1e-10))
    return und.reshape(height * ss, width * ss, 2)


@functools.lru_cache(maxsize=4)
def _texture(board: BoardConfig) -> tuple[np.ndarray, float, int]:
    sq = TEXTURE_PX_PER_SQUARE
    img = make_board(board).generateImage((board.squares_x * sq, board.squares_y * sq), marginSize=0, borderBits=1)
    margin = sq // 2  # white rim around the printed pattern, as on paper
    img = cv2.copyMakeBorder(img, margin, margin, margin, margin, cv2.BORDER_CONSTANT, value=255)
    return img, sq / board.square_length_m, margin


def render_board(board: BoardConfig, camera: CameraIntrinsics, T_cam_board: np.ndarray, *, noise_sigma: float = 2.0,
                 blur_sigma: float = 0.6, rng: np.random.Generator | None = None, supersample: int = 2) -> np.ndarray:
    """(H, W, 3) uint8 RGB view of the board at pose T_cam_board. ``noise_sigma`` gray levels of Gaussian
    sensor noise; ``blur_sigma`` px of Gaussian optical blur."""
    rng = rng if rng is not None else np.random.default_rng(0)
    K, W, H = camera.K, camera.width, camera.height
    rays = _rays(K[0, 0], K[1, 1], K[0, 2], K[1, 2], tuple(np.asarray(camera.dist, float).tolist()), W, H, supersample)
    tex, px_per_m, margin = _texture(board)
    R, t = T_cam_board[:3, :3], T_cam_board[:3, 3]
    # Ray x = lam * d (camera frame) meets the board plane z_b = 0 where (R^T (lam d - t))_z = 0.
    d = np.concatenate([rays, np.ones(rays.shape[:2] + (1,))], -1)  # (h, w, 3)
    Rt_d = d @ R  # (h, w, 3) = R^T d per pixel
    Rt_t = R.T @ t
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = Rt_t[2] / Rt_d[..., 2]
    pb = lam[..., None] * Rt_d - Rt_t  # (h, w, 3) board-frame hit points
    # Texture pixel j covers board x in [j, j+1)/px_per_m (minus the margin), so its centre is at j + 0.5.
    map_x = (pb[..., 0] * px_per_m + margin - 0.5).astype(np.float32)
    map_y = (pb[..., 1] * px_per_m + margin - 0.5).astype(np.float32)
    behind = ~(lam > 0)
    map_x[behind], map_y[behind] = -1e6, -1e6
    hi = cv2.remap(tex, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=BACKGROUND)
    img = cv2.resize(hi.astype(np.float32), (W, H), interpolation=cv2.INTER_AREA)
    if blur_sigma > 0:
        img = cv2.GaussianBlur(img, (0, 0), blur_sigma)
    if noise_sigma > 0:
        img = img + rng.normal(0.0, noise_sigma, img.shape)
    gray = np.clip(np.round(img), 0, 255).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


def true_corners(board: BoardConfig, camera: CameraIntrinsics, T_cam_board: np.ndarray) -> np.ndarray:
    """(N, 2) exact projections of every ChArUco corner (index = corner id)."""
    obj = make_board(board).getChessboardCorners().reshape(-1, 3)
    rvec = cv2.Rodrigues(T_cam_board[:3, :3])[0]
    proj, _ = cv2.projectPoints(obj, rvec, T_cam_board[:3, 3], camera.K, camera.dist)
    return proj.reshape(-1, 2)


def view_pose(board: BoardConfig, center_cam: np.ndarray, tilt_x_deg: float, tilt_y_deg: float, roll_deg: float) -> np.ndarray:
    """T_cam_board with the board centre at ``center_cam`` (m, camera frame), the board facing the camera
    (identity = fronto-parallel) then rotated by roll about the view axis and tilted about x and y."""
    R = rpy_to_matrix(np.radians(tilt_x_deg), np.radians(tilt_y_deg), np.radians(roll_deg))
    return make_transform(R, np.asarray(center_cam, float) - R @ board.center)


def random_view_poses(board: BoardConfig, camera: CameraIntrinsics, n: int, rng: np.random.Generator, *,
                      distance_m: tuple[float, float] = (0.38, 0.6), max_tilt_deg: float = 35.0,
                      max_roll_deg: float = 30.0, min_visible: float = 0.8) -> list[np.ndarray]:
    """``n`` board poses spread over the image with tilts, each leaving >= ``min_visible`` of the corners
    inside the image (what a person waving a board in front of a camera produces)."""
    out: list[np.ndarray] = []
    n_corners = board.n_corners
    while len(out) < n:
        z = rng.uniform(*distance_m)
        # Aim the centre anywhere in the central 70 % of the image at that depth.
        u = rng.uniform(0.15, 0.85) * camera.width
        v = rng.uniform(0.15, 0.85) * camera.height
        c = np.array([(u - camera.K[0, 2]) / camera.K[0, 0] * z, (v - camera.K[1, 2]) / camera.K[1, 1] * z, z])
        T = view_pose(board, c, rng.uniform(-max_tilt_deg, max_tilt_deg), rng.uniform(-max_tilt_deg, max_tilt_deg),
                      rng.uniform(-max_roll_deg, max_roll_deg))
        px = true_corners(board, camera, T)
        inside = (px[:, 0] > 2) & (px[:, 0] < camera.width - 3) & (px[:, 1] > 2) & (px[:, 1] < camera.height - 3)
        if inside.sum() >= min_visible * n_corners:
            out.append(T)
    return out


@dataclass
class HandEyeRig:
    """A synthetic robot + camera + board with ground truth.

    eye_in_hand: camera on the flange (X = T_ee_cam), board fixed on the table (T_base_board).
    eye_to_hand: camera fixed (X = T_base_cam), board on the flange (T_ee_board).
    """

    kind: str
    board: BoardConfig
    camera: CameraIntrinsics
    X: np.ndarray  # the unknown: T_ee_cam (eye_in_hand) or T_base_cam (eye_to_hand)
    target: np.ndarray  # T_base_board (eye_in_hand) or T_ee_board (eye_to_hand)

    @classmethod
    def default(cls, kind: str, board: BoardConfig | None = None, camera: CameraIntrinsics | None = None) -> "HandEyeRig":
        board, camera = board or BoardConfig(), camera or default_camera()
        if kind == "eye_in_hand":
            # A wrist camera 6 cm off the flange axis, 4 cm forward, looking roughly along the tool z axis.
            X = make_transform(axis_angle_matrix([0.2, -0.1, 1.0], np.radians(88.0)), [0.06, -0.015, 0.045])
            target = make_transform(rpy_to_matrix(np.pi, 0.0, np.radians(12.0)), [0.55, -0.12, 0.01])
        elif kind == "eye_to_hand":
            # A third-person camera 1 m from the base looking back and down at the workspace.
            R = rpy_to_matrix(-np.radians(125.0), 0.0, np.radians(95.0))
            X = make_transform(R, [0.45, -0.85, 0.62])
            target = make_transform(rpy_to_matrix(0.0, np.pi, np.radians(30.0)), [-0.12, -0.09, 0.03])
        else:
            raise ValueError(f"kind: {kind!r} is not eye_in_hand or eye_to_hand")
        return cls(kind, board, camera, X, target)

    def ee_pose_for(self, T_cam_board: np.ndarray) -> np.ndarray:
        """The flange pose T_base_ee at which the camera sees the board at T_cam_board."""
        if self.kind == "eye_in_hand":
            T_base_cam = self.target @ invert(T_cam_board)
            return T_base_cam @ invert(self.X)
        return self.X @ T_cam_board @ invert(self.target)

    def board_pose_at(self, T_base_ee: np.ndarray) -> np.ndarray:
        """T_cam_board seen with the flange at T_base_ee."""
        if self.kind == "eye_in_hand":
            return invert(self.X) @ invert(T_base_ee) @ self.target
        return invert(self.X) @ T_base_ee @ self.target

    def view(self, T_base_ee: np.ndarray, rng: np.random.Generator, noise_sigma: float = 2.0, blur_sigma: float = 0.6) -> np.ndarray:
        return render_board(self.board, self.camera, self.board_pose_at(T_base_ee), noise_sigma=noise_sigma,
                            blur_sigma=blur_sigma, rng=rng)


def perturb_pose(T: np.ndarray, rng: np.random.Generator, trans_sigma_m: float, rot_sigma_deg: float) -> np.ndarray:
    """T with Gaussian noise: translation sigma (m) per axis and a rotation of sigma (deg) per axis."""
    if trans_sigma_m <= 0 and rot_sigma_deg <= 0:
        return T.copy()
    dR = cv2.Rodrigues(rng.normal(0.0, np.radians(rot_sigma_deg), 3).reshape(3, 1))[0]
    return make_transform(T[:3, :3] @ dR, T[:3, 3] + rng.normal(0.0, trans_sigma_m, 3))


# ---------------------------------------------------------------------------------------------- on disk
def write_intrinsics_views(folder: str | Path, n: int = 20, seed: int = 0, board: BoardConfig | None = None,
                           camera: CameraIntrinsics | None = None, noise_sigma: float = 2.0) -> list[np.ndarray]:
    """PNG views of the board for `wvl calibrate intrinsics source.path=<folder>`; returns the true poses."""
    board, camera = board or BoardConfig(), camera or default_camera()
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    poses = random_view_poses(board, camera, n, rng)
    for i, T in enumerate(poses):
        img = render_board(board, camera, T, noise_sigma=noise_sigma, rng=rng)
        cv2.imwrite(str(folder / f"view_{i:03d}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return poses


def handeye_rig_poses(rig: HandEyeRig, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``n`` true flange poses at which the camera sees the board from diverse angles (rolls up to 90 deg)."""
    return [rig.ee_pose_for(T) for T in random_view_poses(rig.board, rig.camera, n, rng, max_roll_deg=90.0)]


def write_handeye_samples(path: str | Path, rig: HandEyeRig, n: int = 15, seed: int = 0, robot_noise_m: float = 0.0002,
                          robot_noise_deg: float = 0.02, noise_sigma: float = 2.0, units: str = "m") -> list[np.ndarray]:
    """A samples YAML + PNGs (calibration/samples.py format) of ``rig``: measured flange poses with robot noise.
    Returns the true flange poses."""
    import yaml

    from calibration.geometry import matrix_to_pose

    rng = np.random.default_rng(seed)
    path = Path(path)
    img_dir = path.with_suffix("")
    img_dir.mkdir(parents=True, exist_ok=True)
    truth = handeye_rig_poses(rig, n, rng)
    entries = []
    for i, T in enumerate(truth):
        img = rig.view(T, rng, noise_sigma=noise_sigma)
        name = img_dir / f"{i:03d}.png"
        cv2.imwrite(str(name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        pose = matrix_to_pose(perturb_pose(T, rng, robot_noise_m, robot_noise_deg))
        if units == "mm":
            pose[:3] *= 1000.0
        entries.append({"ee_pose": [float(x) for x in pose], "image": str(name.relative_to(path.parent))})
    doc = {"format": "wvl-handeye-samples/1", "calibration_type": rig.kind, "samples": entries}
    if units != "m":
        doc["units"] = units
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return truth
