"""Calibration files and the loader the rest of the stack uses.

One folder (default ``data/calibration``) holds, per camera name (the Episode image key):

    <camera>.camera_info.yaml        intrinsics, ROS camera_calibration_parsers layout (camera drivers read it)
    <camera>.handeye.yaml            hand-eye result: parent -> child static transform + how good it is
    <camera>.handeye_samples.yaml    the raw pose pairs (+ images) the result came from, to reproduce it
    <camera>.drift_reference.yaml    optional: a static board's pose for `wvl calibrate check` without the robot
    history/<camera>.handeye.<id>.yaml   every hand-eye result ever saved (episodes carry their id)

The calibration id (12 hex digits) is a hash of the numbers that say where the camera is (and how it
projects). Episodes store it in ``Episode.info["calibration_id"]``; `calibration.selection` filters by it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from calibration.geometry import R_LINK_OPTICAL, invert, make_transform, matrix_to_pose, pose_to_matrix
from calibration.handeye import KINDS, HandEyeResult
from calibration.intrinsics import CameraIntrinsics

log = logging.getLogger(__name__)

HANDEYE_FORMAT = "wvl-handeye/1"
DEFAULT_DIR = "data/calibration"


def write_yaml(path: Path, data: dict[str, Any], header: str = "") -> None:
    """Atomic write (tmp + rename): a crash mid-write never leaves a half calibration behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = header + yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=120)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; calibration files are meant to be read by other users/nodes
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError as e:
        raise FileNotFoundError(f"calibration file {path} does not exist") from e
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a YAML mapping at the top level")
    return data


def _hash(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def _rounded(values, digits: int) -> list[float]:
    # Rounding makes the id survive a YAML round trip and ignore float noise far below calibration accuracy.
    return [round(float(v), digits) + 0.0 for v in np.asarray(values).reshape(-1)]


# ---------------------------------------------------------------------------------------------- intrinsics
def intrinsics_id(intr: CameraIntrinsics) -> str:
    return _hash({"size": [intr.width, intr.height], "K": _rounded(intr.K, 4), "dist": _rounded(intr.dist, 6)})


def intrinsics_path(folder: str | os.PathLike, camera: str) -> Path:
    return Path(folder) / f"{camera}.camera_info.yaml"


def save_intrinsics(path: str | os.PathLike, intr: CameraIntrinsics, rms_px: float | None = None, n_views: int | None = None) -> Path:
    path = Path(path)
    header = (f"# {intr.camera_name} intrinsics, wvl calibrate intrinsics, {dt.datetime.now().isoformat(timespec='seconds')}"
              + (f", RMS {rms_px:.3f} px over {n_views} views" if rms_px is not None else "") + "\n")
    write_yaml(path, intr.to_camera_info(), header)
    return path


def load_intrinsics(path: str | os.PathLike) -> CameraIntrinsics:
    return CameraIntrinsics.from_camera_info(read_yaml(path), source=str(path))


# ---------------------------------------------------------------------------------------------- hand-eye
@dataclass(frozen=True)
class HandEyeCalibration:
    """Where a camera is: the static transform parent -> child (what /tf_static carries), plus the optical
    frame the images and intrinsics live in. Transforms are (4, 4), metres.

    ``T_parent_optical`` is what `cv2.calibrateHandEye` solved; ``T_child_optical`` is the camera driver's
    own camera_link -> optical frame transform (a frame has one parent in TF, so when a RealSense node
    already publishes camera_link -> camera_color_optical_frame we publish parent -> camera_link)."""

    camera: str
    kind: str
    parent: str
    child: str
    optical_frame: str
    T_parent_optical: np.ndarray
    T_child_optical: np.ndarray
    target: np.ndarray  # the board: T_base_board (eye_in_hand) or T_ee_board (eye_to_hand)
    method: str
    residuals: dict[str, float]
    n_samples: int
    date: str
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    board: dict[str, Any] = field(default_factory=dict)
    rotation_spread_deg: float = float("nan")
    intrinsics_file: str | None = None
    samples_file: str | None = None
    warnings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"calibration_type: {self.kind!r} is not one of {KINDS}")
        for name in ("parent", "child", "optical_frame", "camera"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name}: must be a non-empty string")
        if self.parent == self.child:
            raise ValueError(f"parent and child are both {self.parent!r}")

    @property
    def T_parent_child(self) -> np.ndarray:
        return self.T_parent_optical @ invert(self.T_child_optical)

    @property
    def calibration_id(self) -> str:
        return _hash({"camera": self.camera, "kind": self.kind, "parent": self.parent,
                      "T": _rounded(self.T_parent_optical[:3, :4], 6)})

    @classmethod
    def from_result(cls, result: HandEyeResult, camera: str, parent: str, child: str = "camera_link",
                    optical_frame: str = "camera_color_optical_frame", T_child_optical: np.ndarray | None = None,
                    board: dict[str, Any] | None = None, intrinsics_file: str | None = None,
                    samples_file: str | None = None) -> "HandEyeCalibration":
        if T_child_optical is None:
            T_child_optical = np.eye(4) if child == optical_frame else make_transform(R_LINK_OPTICAL, np.zeros(3))
        best = result.best
        return cls(
            camera=camera, kind=result.kind, parent=parent, child=child, optical_frame=optical_frame,
            T_parent_optical=result.X, T_child_optical=np.asarray(T_child_optical, float), target=result.target,
            method=result.method,
            residuals={"translation_mm": best.residual_mm, "rotation_deg": best.residual_deg,
                       "heldout_translation_mm": best.heldout_mm, "heldout_rotation_deg": best.heldout_deg},
            n_samples=result.n_samples, date=dt.datetime.now().isoformat(timespec="seconds"),
            methods={m.name: {**_pose_dict(m.X), "translation_mm": m.residual_mm, "rotation_deg": m.residual_deg,
                              "heldout_translation_mm": m.heldout_mm, "heldout_rotation_deg": m.heldout_deg}
                     for m in result.methods.values()},
            board=board or {}, rotation_spread_deg=result.rotation_spread_deg, intrinsics_file=intrinsics_file,
            samples_file=samples_file, warnings=tuple(result.warnings),
        )

    @property
    def frames(self) -> dict[str, str]:
        """Which transform of the file is which, as 'parent -> child' (each maps child coordinates into the
        parent frame): the top-level pose ends at the camera body, the solver's results at the optical frame."""
        to_optical = f"{self.parent} -> {self.optical_frame}"
        return {
            "xyz, quaternion_xyzw": f"{self.parent} -> {self.child}",
            "child_to_optical": f"{self.child} -> {self.optical_frame}",
            "parent_to_optical": to_optical,
            "methods": f"{to_optical} (every method's xyz, quaternion_xyzw)",
            "target": f"{'base' if self.kind == 'eye_in_hand' else 'ee'} -> board",
        }

    def to_dict(self) -> dict[str, Any]:
        T = self.T_parent_child
        return {
            "format": HANDEYE_FORMAT,
            "camera": self.camera,
            "calibration_id": self.calibration_id,
            "calibration_type": self.kind,
            "parent": self.parent,
            "child": self.child,
            "xyz": _floats(T[:3, 3]),
            "quaternion_xyzw": _floats(matrix_to_pose(T)[3:]),
            "frames": self.frames,  # parent -> child of every transform below (read only by people)
            "method": self.method,
            "residuals": {k: float(v) for k, v in self.residuals.items()},
            "n_samples": int(self.n_samples),
            "date": self.date,
            "optical_frame": self.optical_frame,
            "child_to_optical": _pose_dict(self.T_child_optical),
            "parent_to_optical": _pose_dict(self.T_parent_optical),
            "target": {"frame": "base" if self.kind == "eye_in_hand" else "ee", **_pose_dict(self.target)},
            "rotation_spread_deg": float(self.rotation_spread_deg),
            "methods": self.methods,
            "board": self.board,
            "intrinsics_file": self.intrinsics_file,
            "samples_file": self.samples_file,
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "hand-eye file") -> "HandEyeCalibration":
        if d.get("format") != HANDEYE_FORMAT:
            raise ValueError(f"{source}: format {d.get('format')!r} is not {HANDEYE_FORMAT!r} (not a wvl hand-eye file?)")
        for key in ("camera", "calibration_type", "parent", "child", "xyz", "quaternion_xyzw", "child_to_optical", "target"):
            if key not in d:
                raise ValueError(f"{source}: missing {key!r}")
        try:
            T_parent_child = pose_to_matrix(list(d["xyz"]) + list(d["quaternion_xyzw"]))
            T_child_optical = _pose_from(d["child_to_optical"])
            target = _pose_from(d["target"])
        except (TypeError, ValueError) as e:
            raise ValueError(f"{source}: bad pose ({e})") from e
        calib = cls(
            camera=str(d["camera"]), kind=d["calibration_type"], parent=str(d["parent"]), child=str(d["child"]),
            optical_frame=str(d.get("optical_frame", "camera_color_optical_frame")),
            T_parent_optical=T_parent_child @ T_child_optical, T_child_optical=T_child_optical, target=target,
            method=str(d.get("method", "?")), residuals=dict(d.get("residuals") or {}), n_samples=int(d.get("n_samples", 0)),
            date=str(d.get("date", "")), methods=dict(d.get("methods") or {}), board=dict(d.get("board") or {}),
            rotation_spread_deg=float(d.get("rotation_spread_deg", float("nan"))), intrinsics_file=d.get("intrinsics_file"),
            samples_file=d.get("samples_file"), warnings=tuple(d.get("warnings") or ()),
        )
        stored = d.get("calibration_id")
        if stored is not None and stored != calib.calibration_id:
            log.warning("%s: stored calibration_id %s does not match its numbers (edited by hand?); using %s",
                        source, stored, calib.calibration_id)
        return calib


def _floats(a) -> list[float]:
    return [float(x) for x in np.asarray(a).reshape(-1)]


def _pose_dict(T: np.ndarray) -> dict[str, list[float]]:
    p = matrix_to_pose(T)
    return {"xyz": _floats(p[:3]), "quaternion_xyzw": _floats(p[3:])}


def _pose_from(d: dict[str, Any]) -> np.ndarray:
    return pose_to_matrix(list(d["xyz"]) + list(d["quaternion_xyzw"]))


def handeye_path(folder: str | os.PathLike, camera: str) -> Path:
    return Path(folder) / f"{camera}.handeye.yaml"


def save_handeye(folder: str | os.PathLike, calib: HandEyeCalibration) -> Path:
    """Write <camera>.handeye.yaml and a copy under history/ (so old episodes' ids stay resolvable)."""
    folder = Path(folder)
    d = calib.to_dict()
    header = (f"# {calib.camera}: {calib.kind} hand-eye, {calib.parent} -> {calib.child}, method {calib.method}, "
              f"{calib.n_samples} samples, held-out {calib.residuals.get('heldout_translation_mm', float('nan')):.2f} mm / "
              f"{calib.residuals.get('heldout_rotation_deg', float('nan')):.3f} deg. Written by wvl calibrate handeye.\n"
              f"# Frames (parent -> child; metres, quaternions xyzw): the top-level xyz / quaternion_xyzw is "
              f"{calib.parent} -> {calib.child} (publish it on /tf_static);\n"
              f"# parent_to_optical and every entry under methods: are {calib.parent} -> {calib.optical_frame} "
              f"(what the solver returns); child_to_optical is {calib.child} -> {calib.optical_frame}.\n")
    path = handeye_path(folder, calib.camera)
    write_yaml(path, d, header)
    write_yaml(folder / "history" / f"{calib.camera}.handeye.{calib.calibration_id}.yaml", d, header)
    return path


def load_handeye(path: str | os.PathLike) -> HandEyeCalibration:
    return HandEyeCalibration.from_dict(read_yaml(path), source=str(path))


def handeye_history(folder: str | os.PathLike, camera: str) -> dict[str, HandEyeCalibration]:
    """Every hand-eye calibration of ``camera`` saved in ``folder`` (id -> calibration)."""
    out = {}
    for p in sorted((Path(folder) / "history").glob(f"{camera}.handeye.*.yaml")):
        try:
            c = load_handeye(p)
        except ValueError as e:
            log.warning("skipping %s: %s", p, e)
            continue
        out[c.calibration_id] = c
    return out


# ---------------------------------------------------------------------------------------------- drift reference
def drift_reference_path(folder: str | os.PathLike, camera: str) -> Path:
    return Path(folder) / f"{camera}.drift_reference.yaml"


def save_drift_reference(folder: str | os.PathLike, calib: HandEyeCalibration, T_parent_board: np.ndarray) -> Path:
    path = drift_reference_path(folder, calib.camera)
    write_yaml(path, {"camera": calib.camera, "calibration_id": calib.calibration_id, "frame": calib.parent,
                       "board": _pose_dict(T_parent_board), "date": dt.datetime.now().isoformat(timespec="seconds")},
                "# A board fixed in the scene, seen when the camera was known to be right (wvl calibrate check).\n")
    return path


def load_drift_reference(folder: str | os.PathLike, calib: HandEyeCalibration) -> np.ndarray | None:
    """T_parent_board of the static reference board, or None when there is none for this calibration."""
    path = drift_reference_path(folder, calib.camera)
    if not path.exists():
        return None
    d = read_yaml(path)
    if d.get("calibration_id") != calib.calibration_id:
        log.warning("%s belongs to calibration %s, not the current %s; ignoring it (save a new reference)",
                    path, d.get("calibration_id"), calib.calibration_id)
        return None
    return _pose_from(d["board"])


# ---------------------------------------------------------------------------------------------- the loader
@dataclass(frozen=True)
class CameraCalibration:
    """Everything known about one camera. Either part may be missing (intrinsics-only rigs are common)."""

    camera: str
    intrinsics: CameraIntrinsics | None
    extrinsics: HandEyeCalibration | None

    @property
    def calibration_id(self) -> str | None:
        """The id episodes carry: the hand-eye id (where the camera is) when there is one, else the intrinsics'."""
        if self.extrinsics is not None:
            return self.extrinsics.calibration_id
        if self.intrinsics is not None:
            return intrinsics_id(self.intrinsics)
        return None


def load_camera_calibration(folder: str | os.PathLike, camera: str) -> CameraCalibration:
    """The calibration of ``camera`` in ``folder``; FileNotFoundError naming the command when nothing is there."""
    folder = Path(folder)
    ip, hp = intrinsics_path(folder, camera), handeye_path(folder, camera)
    intr = load_intrinsics(ip) if ip.exists() else None
    ext = load_handeye(hp) if hp.exists() else None
    if intr is None and ext is None:
        raise FileNotFoundError(f"no calibration for camera {camera!r} in {folder} (expected {ip.name} and/or "
                                f"{hp.name}); run `wvl calibrate intrinsics camera={camera}` and `wvl calibrate handeye camera={camera}`")
    return CameraCalibration(camera, intr, ext)


def load_rig_calibration(folder: str | os.PathLike) -> dict[str, CameraCalibration]:
    """Every camera calibrated in ``folder`` (name -> CameraCalibration)."""
    folder = Path(folder)
    names = {p.name.split(".")[0] for p in folder.glob("*.camera_info.yaml")} | {p.name.split(".")[0] for p in folder.glob("*.handeye.yaml")}
    return {n: load_camera_calibration(folder, n) for n in sorted(names)}


def episode_calibration_id(folder: str | os.PathLike, cameras: list[str] | tuple[str, ...] | None = None) -> str | dict[str, str] | None:
    """What a recorder puts in ``Episode.info["calibration_id"]``: the id string for a one-camera rig, a
    {camera: id} dict for several, None when the folder holds no calibration."""
    if not Path(folder).is_dir():
        return None
    rig = load_rig_calibration(folder)
    if cameras is not None:
        rig = {c: rig[c] for c in cameras if c in rig}
    ids = {c: cal.calibration_id for c, cal in rig.items() if cal.calibration_id is not None}
    if not ids:
        return None
    return next(iter(ids.values())) if len(ids) == 1 else ids
