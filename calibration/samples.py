"""Hand-eye sample files: the raw pose pairs, kept next to a result so it can be reproduced or re-solved.

    format: wvl-handeye-samples/1
    calibration_type: eye_to_hand
    units: m                          # of the robot translations: m (default) or mm (converted on load)
    samples:
      - ee_pose: [x, y, z, qx, qy, qz, qw]     # flange in the robot base (ArmState.ee_pose convention)
        image: front.handeye_samples/000.png   # relative to this file; the board pose is detected in it
      - ee_pose: [...]
        board_pose: [x, y, z, qx, qy, qz, qw]  # or the board in the camera optical frame (another tracker)

Images are PNG (lossless: JPEG artefacts move sub-pixel corners).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from calibration.board import BoardConfig, BoardDetector, estimate_pose
from calibration.errors import BoardNotFoundError, UnitsError
from calibration.files import write_yaml, read_yaml
from calibration.geometry import matrix_to_pose, pose_to_matrix
from calibration.handeye import KINDS, HandEyeSample
from calibration.intrinsics import CameraIntrinsics

log = logging.getLogger(__name__)

SAMPLES_FORMAT = "wvl-handeye-samples/1"


def save_samples(path: str | os.PathLike, kind: str, samples: list[HandEyeSample], images: list[np.ndarray] | None = None) -> Path:
    path = Path(path)
    img_dir = path.with_suffix("")  # <camera>.handeye_samples.yaml -> <camera>.handeye_samples/
    entries = []
    for i, s in enumerate(samples):
        e: dict[str, Any] = {"ee_pose": [float(x) for x in matrix_to_pose(s.T_base_ee)]}
        if images is not None and i < len(images):
            img_dir.mkdir(parents=True, exist_ok=True)
            name = img_dir / f"{i:03d}.png"
            if not cv2.imwrite(str(name), cv2.cvtColor(images[i], cv2.COLOR_RGB2BGR)):
                raise OSError(f"could not write {name}")
            e["image"] = str(name.relative_to(path.parent))
        e["board_pose"] = [float(x) for x in matrix_to_pose(s.T_cam_board)]
        e["reprojection_px"] = float(s.reprojection_px)
        entries.append(e)
    write_yaml(path, {"format": SAMPLES_FORMAT, "calibration_type": kind, "units": "m", "samples": entries})
    return path


def load_samples(path: str | os.PathLike, board: BoardConfig | None = None, intrinsics: CameraIntrinsics | None = None,
                 redetect: bool = True) -> tuple[str | None, list[HandEyeSample]]:
    """(calibration_type or None, samples). With ``board`` and ``intrinsics`` the board pose is re-detected in
    each image (``redetect``); otherwise the stored ``board_pose`` is used. Each bad entry is an error naming
    it; an image without the board is skipped with a warning (the rest still calibrate)."""
    path = Path(path)
    d = read_yaml(path)
    if d.get("format") not in (None, SAMPLES_FORMAT):
        raise ValueError(f"{path}: format {d.get('format')!r} is not {SAMPLES_FORMAT!r}")
    kind = d.get("calibration_type")
    if kind is not None and kind not in KINDS:
        raise ValueError(f"{path}: calibration_type {kind!r} is not one of {KINDS}")
    units = d.get("units", "m")
    if units not in ("m", "mm"):
        raise UnitsError(f"{path}: units {units!r} must be 'm' or 'mm'")
    scale = 0.001 if units == "mm" else 1.0
    entries = d.get("samples")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: 'samples' must be a non-empty list of {{ee_pose, image | board_pose}}")
    detector = BoardDetector(board) if board is not None and intrinsics is not None and redetect else None
    out = []
    for i, e in enumerate(entries):
        where = f"{path}: samples[{i}]"
        if not isinstance(e, dict) or "ee_pose" not in e:
            raise ValueError(f"{where}: needs an 'ee_pose' [x, y, z, qx, qy, qz, qw]")
        try:
            pose = np.asarray(e["ee_pose"], float).reshape(-1)
            if pose.shape != (7,):
                raise ValueError(f"has {pose.size} numbers, expected 7")
            pose[:3] *= scale
            T_base_ee = pose_to_matrix(pose)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}: ee_pose {err}") from err
        if units == "m" and np.linalg.norm(T_base_ee[:3, 3]) > 10.0:
            raise UnitsError(f"{where}: ee_pose position {np.round(T_base_ee[:3, 3], 1).tolist()} is > 10 m from the "
                             "base; the file's robot poses look like millimetres: add `units: mm` to it")
        image = e.get("image")
        if detector is not None and image is not None:
            img_path = (path.parent / image) if not Path(image).is_absolute() else Path(image)
            bgr = cv2.imread(str(img_path), cv2.IMREAD_COLOR)
            if bgr is None:
                raise FileNotFoundError(f"{where}: image {img_path} is missing or not an image")
            det = detector.detect(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            try:
                T_cam_board, rms = estimate_pose(det, intrinsics.K, intrinsics.dist)
            except BoardNotFoundError as err:
                log.warning("%s: %s; skipped", where, err)
                continue
            out.append(HandEyeSample(T_base_ee, T_cam_board, rms, len(det), str(img_path)))
        elif "board_pose" in e:
            try:
                T_cam_board = pose_to_matrix(e["board_pose"])
            except (TypeError, ValueError) as err:
                raise ValueError(f"{where}: board_pose {err}") from err
            out.append(HandEyeSample(T_base_ee, T_cam_board, float(e.get("reprojection_px", 0.0)), 0, image))
        else:
            raise ValueError(f"{where}: needs an 'image' (with board and intrinsics) or a 'board_pose'")
    return kind, out
