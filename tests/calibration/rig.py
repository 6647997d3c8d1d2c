"""A synthetic calibration rig behind the real device protocols: an arm in free-drive (the operator puts the
flange where the guide says; it can also be commanded to a pose) and a camera that renders the ChArUco board
as seen from the arm's current pose. `make_arm` / `make_camera` are the factories `wvl calibrate` imports
(handeye.arm_factory=tests.calibration.rig:make_arm, source.camera_factory=tests.calibration.rig:make_camera).
"""

from __future__ import annotations

import time

import numpy as np

from calibration.geometry import matrix_to_pose, pose_to_matrix
from calibration.synthetic import HandEyeRig, perturb_pose, render_board
from robot.arms.base import Arm, ArmState
from robot.cameras.base import Camera, Frame
from robot.errors import DeviceNotConnectedError

# The rig the factories hand out (a test sets it up before running the CLI).
CURRENT: dict[str, object] = {}


class FreeDriveArm(Arm):
    """Reports the flange pose with encoder-level noise (0.2 mm / 0.02 deg); `move_to_pose` = the operator
    (or a motion planner) moving it there. It does not move on its own."""

    name = "free_drive"

    def __init__(self, start: np.ndarray, rng: np.random.Generator, noise_m: float = 0.0002, noise_deg: float = 0.02) -> None:
        self.T = np.asarray(start, float)
        self.rng, self.noise_m, self.noise_deg = rng, noise_m, noise_deg
        self._measured = perturb_pose(self.T, rng, noise_m, noise_deg)
        self._connected = False

    def connect(self) -> None:
        self._connected = True

    def disconnect(self) -> None:
        self._connected = False

    @property
    def is_connected(self) -> bool:
        return self._connected

    def read_state(self) -> ArmState:
        if not self._connected:
            raise DeviceNotConnectedError("free_drive arm: not connected")
        # A still arm reads the same pose twice (encoders do not jitter by 0.2 mm); the error is a fixed bias
        # per pose, drawn when the arm arrives there.
        return ArmState(np.zeros(7), matrix_to_pose(self._measured), 1.0, time.monotonic())

    def send_action(self, action: np.ndarray) -> np.ndarray:
        raise NotImplementedError("free_drive arm: moved by hand or by move_to_pose, not by actions")

    def move_to_pose(self, pose: np.ndarray) -> None:
        self.T = pose_to_matrix(pose)
        self._measured = perturb_pose(self.T, self.rng, self.noise_m, self.noise_deg)


class RigCamera(Camera):
    """Renders what the rig's camera sees with the arm where it is (the board moves with the flange for
    eye_to_hand, the camera does for eye_in_hand). ``moved``: an extra camera displacement (a bump)."""

    def __init__(self, rig: HandEyeRig, arm: FreeDriveArm, rng: np.random.Generator, name: str = "front",
                 noise_sigma: float = 2.0) -> None:
        self.rig, self.arm, self.rng, self.name, self.noise_sigma = rig, arm, rng, name, noise_sigma
        self.bump = np.eye(4)
        self._connected = False
        self._i = 0

    def connect(self) -> None:
        self._connected = True

    def disconnect(self) -> None:
        self._connected = False

    @property
    def is_connected(self) -> bool:
        return self._connected

    def read(self) -> Frame:
        if not self._connected:
            raise DeviceNotConnectedError(f"camera {self.name}: not connected")
        from calibration.geometry import invert

        T_cam_board = invert(self.bump) @ self.rig.board_pose_at(self.arm.T)
        rgb = render_board(self.rig.board, self.rig.camera, T_cam_board, noise_sigma=self.noise_sigma, rng=self.rng)
        self._i += 1
        return Frame(rgb=rgb, stamp=time.monotonic(), index=self._i)


def setup(kind: str, seed: int = 0) -> tuple[HandEyeRig, FreeDriveArm, RigCamera]:
    """A rig with the arm at a pose from which the board is fully in view, registered for the factories."""
    from calibration.synthetic import view_pose

    rig = HandEyeRig.default(kind)
    rng = np.random.default_rng(seed)
    start = rig.ee_pose_for(view_pose(rig.board, [0.0, 0.0, 0.45], 0.0, 0.0, 0.0))
    arm = FreeDriveArm(start, rng)
    cam = RigCamera(rig, arm, rng)
    CURRENT.update(rig=rig, arm=arm, camera=cam)
    return rig, arm, cam


def make_arm() -> FreeDriveArm:
    return CURRENT["arm"]


def make_camera() -> RigCamera:
    return CURRENT["camera"]


class WavingBoardCamera(Camera):
    """A person waving the board in front of a fixed camera: each pose of ``poses`` (T_cam_board) is held
    for ``hold`` frames (the board is still there), then the next one; the recording then ends."""

    def __init__(self, board, camera_model, poses: list[np.ndarray], hold: int = 3, seed: int = 0, name: str = "front") -> None:
        self.board, self.model, self.poses, self.hold, self.name = board, camera_model, poses, hold, name
        self.rng = np.random.default_rng(seed)
        self._i = 0
        self._connected = False
        self._cache: tuple[int, np.ndarray] | None = None

    def connect(self) -> None:
        self._connected = True

    def disconnect(self) -> None:
        self._connected = False

    @property
    def is_connected(self) -> bool:
        return self._connected

    def read(self) -> Frame:
        from robot.cameras.replay import ReplayEndedError

        if not self._connected:
            raise DeviceNotConnectedError(f"camera {self.name}: not connected")
        k = self._i // self.hold
        if k >= len(self.poses):
            raise ReplayEndedError(f"camera {self.name}: the board went away")
        if self._cache is None or self._cache[0] != k:  # a held board: same scene, fresh sensor noise is not needed
            self._cache = (k, render_board(self.board, self.model, self.poses[k], noise_sigma=2.0, rng=self.rng))
        self._i += 1
        return Frame(rgb=self._cache[1], stamp=time.monotonic(), index=self._i)


def make_waving_camera() -> WavingBoardCamera:
    return CURRENT["waving"]
