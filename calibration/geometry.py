"""Rigid transforms as 4x4 float64 matrices, quaternions xyzw, and the few statistics calibration needs.

Naming: ``T_a_b`` is the pose of frame b expressed in frame a (it maps points from b to a), so
``T_a_c = T_a_b @ T_b_c``. Translations are metres. numpy + OpenCV only (no scipy on the robot PC).
"""

from __future__ import annotations

import math

import cv2
import numpy as np


def make_transform(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(4, 4) from a (3, 3) rotation and a (3,) translation in metres."""
    T = np.eye(4)
    T[:3, :3] = np.asarray(R, np.float64).reshape(3, 3)
    T[:3, 3] = np.asarray(t, np.float64).reshape(3)
    return T


def invert(T: np.ndarray) -> np.ndarray:
    R, t = T[:3, :3], T[:3, 3]
    return make_transform(R.T, -R.T @ t)


def rvec_to_matrix(rvec: np.ndarray) -> np.ndarray:
    return cv2.Rodrigues(np.asarray(rvec, np.float64).reshape(3, 1))[0]


def matrix_to_rvec(R: np.ndarray) -> np.ndarray:
    return cv2.Rodrigues(np.asarray(R, np.float64))[0].reshape(3)


def from_rvec_tvec(rvec: np.ndarray, tvec: np.ndarray) -> np.ndarray:
    """OpenCV's (rvec, tvec) of a PnP solution (object -> camera) as T_cam_object."""
    return make_transform(rvec_to_matrix(rvec), tvec)


def quat_to_matrix(q_xyzw: np.ndarray) -> np.ndarray:
    x, y, z, w = np.asarray(q_xyzw, np.float64).reshape(4)
    n = math.sqrt(x * x + y * y + z * z + w * w)
    if not math.isfinite(n) or n < 1e-9:
        raise ValueError(f"quaternion {q_xyzw!r} has no direction (norm {n:g})")
    x, y, z, w = x / n, y / n, z / n, w / n
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def matrix_to_quat(R: np.ndarray) -> np.ndarray:
    """Quaternion xyzw (w >= 0) of a rotation matrix, through the axis-angle form (stable near 0 and pi)."""
    rvec = matrix_to_rvec(R)
    angle = float(np.linalg.norm(rvec))
    if angle < 1e-12:
        return np.array([0.0, 0.0, 0.0, 1.0])
    axis = rvec / angle
    q = np.concatenate([axis * math.sin(angle / 2), [math.cos(angle / 2)]])
    return q if q[3] >= 0 else -q


def pose_to_matrix(pose: np.ndarray) -> np.ndarray:
    """(7,) xyz (m) + quaternion xyzw -> (4, 4). The Episode/ArmState ``ee_pose`` convention."""
    pose = np.asarray(pose, np.float64).reshape(-1)
    if pose.shape != (7,):
        raise ValueError(f"pose must have 7 numbers (x y z qx qy qz qw), got {pose.shape[0]}")
    return make_transform(quat_to_matrix(pose[3:]), pose[:3])


def matrix_to_pose(T: np.ndarray) -> np.ndarray:
    """(4, 4) -> (7,) xyz + quaternion xyzw."""
    return np.concatenate([T[:3, 3], matrix_to_quat(T[:3, :3])])


def rpy_to_matrix(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """ROS convention: R = Rz(yaw) @ Ry(pitch) @ Rx(roll), radians."""
    cr, sr, cp, sp, cy, sy = math.cos(roll), math.sin(roll), math.cos(pitch), math.sin(pitch), math.cos(yaw), math.sin(yaw)
    Rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    Ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    Rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    return Rz @ Ry @ Rx


def axis_angle_matrix(axis: np.ndarray, angle_rad: float) -> np.ndarray:
    axis = np.asarray(axis, np.float64)
    return rvec_to_matrix(axis / np.linalg.norm(axis) * angle_rad)


def rotation_angle_deg(R: np.ndarray) -> float:
    """Angle of a rotation matrix in degrees (clipped trace formula; exact enough above 1e-4 deg)."""
    c = (np.trace(R[:3, :3]) - 1.0) / 2.0
    return math.degrees(math.acos(min(1.0, max(-1.0, c))))


def transform_delta(T_a: np.ndarray, T_b: np.ndarray) -> tuple[float, float]:
    """How far T_b is from T_a: (translation in mm, rotation in degrees) of inv(T_a) @ T_b."""
    D = invert(T_a) @ T_b
    return float(np.linalg.norm(D[:3, 3]) * 1000.0), rotation_angle_deg(D)


def project_to_rotation(M: np.ndarray) -> np.ndarray:
    """The rotation matrix nearest (Frobenius) to a 3x3 matrix."""
    U, _, Vt = np.linalg.svd(M)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    return U @ D @ Vt


def mean_transform(Ts: list[np.ndarray] | np.ndarray) -> np.ndarray:
    """Mean of rigid transforms: arithmetic mean translation, chordal L2 mean rotation."""
    Ts = np.asarray(Ts, np.float64)  # (N, 4, 4)
    if Ts.ndim != 3 or Ts.shape[0] == 0:
        raise ValueError("mean_transform needs at least one (4, 4) transform")
    return make_transform(project_to_rotation(Ts[:, :3, :3].sum(0)), Ts[:, :3, 3].mean(0))


# The optical frame (z forward, x right, y down: what OpenCV and every PnP result use) seen from a ROS
# camera_link-style body frame (x forward, y left, z up; REP 103): rpy (-pi/2, 0, -pi/2).
R_LINK_OPTICAL = rpy_to_matrix(-math.pi / 2, 0.0, -math.pi / 2)
