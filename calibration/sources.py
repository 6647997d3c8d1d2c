"""Where calibration images come from: a folder, a video file, a recording (``.episode`` / RealSense ``.db3``),
or a live camera through the `robot.cameras` protocol (RealSense imported only when asked for).

Every source yields ``(name, rgb)`` with rgb (H, W, 3) uint8 — the stack's frame convention.
Live capture keeps a view only when the board is held still and the view is new (position, size or
perspective differs from every kept view), so waving the board slowly in front of the camera is enough.
"""

from __future__ import annotations

import importlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import cv2
import numpy as np

from calibration.board import BoardDetector, Detection
from robot.cameras.base import Camera

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v")
RECORDING_SUFFIXES = (".episode", ".db3")
SOURCE_KINDS = ("folder", "video", "recording", "realsense", "camera")


def folder_images(path: str | Path) -> Iterator[tuple[str, np.ndarray]]:
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"source.path: image folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"source.path: {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    for p in files:
        bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"{p}: not a readable image (corrupt or not an image); remove it from {folder}")
        yield p.name, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def video_frames(path: str | Path, every: int = 1) -> Iterator[tuple[str, np.ndarray]]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"source.path: video {path} does not exist")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"{path}: OpenCV cannot decode this video")
    try:
        i = 0
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            if i % every == 0:
                yield f"{path.name}#{i}", cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            i += 1
    finally:
        cap.release()
    if i == 0:
        raise ValueError(f"{path}: no frames could be decoded")


def camera_frames(camera: Camera, every: int = 1, max_frames: int | None = None,
                  on_connect: Callable[[Camera], None] | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """Frames of a (replay) camera until its recording ends. Connects and disconnects it; ``on_connect(camera)``
    runs once it is connected (e.g. to read a RealSense recording's factory intrinsics)."""
    from robot.cameras.replay import ReplayEndedError
    from robot.errors import StaleFrameError

    camera.connect()
    try:
        if on_connect is not None:
            on_connect(camera)
        i, stale, dup_s = 0, 0, 0.0
        seen: set[int] = set()  # a recording's frame comes once; a frame read again is not a new image
        while max_frames is None or i < max_frames * every:
            try:
                frame = camera.read()
                if frame.index in seen:  # read again before the playback delivered the next one (a loaded CPU)
                    time.sleep(0.005)
                    dup_s += 0.005
                    if dup_s > 10:
                        raise StaleFrameError(f"camera {camera.name}: frame {frame.index} for 10 s")
                    continue
                seen.add(frame.index)
                stale, dup_s = 0, 0.0
            except ReplayEndedError:
                break
            except StaleFrameError:
                # A RealSense playback goes quiet at its end before the driver declares it ended; a live or
                # stuck stream never ends, so give up after a few quiet reads.
                stale += 1
                if stale > 10:
                    log.warning("camera %s: no frames for a while; taking the recording as ended", camera.name)
                    break
                continue
            if i % every == 0:
                yield f"{camera.name}#{frame.index}", frame.rgb
            i += 1
    finally:
        if camera.is_connected:
            camera.disconnect()


def import_factory(spec: str, what: str) -> Callable[..., Any]:
    """``"package.module:function"`` -> the function (how a rig plugs its own arm or camera in)."""
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(f"{what}: expected 'package.module:function', got {spec!r}")
    module, func = spec.split(":", 1)
    try:
        return getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError) as e:
        raise ImportError(f"{what}: cannot import {spec!r} ({e})") from e


@dataclass(frozen=True)
class SourceConfig:
    kind: str = "folder"  # folder | video | recording | realsense | camera
    path: str | None = None  # folder, video file, or recording (.episode / RealSense .db3)
    every: int = 1  # video / recording: use every n-th frame
    camera_factory: str | None = None  # kind=camera: "module:function" returning a robot.cameras Camera
    serial: str | None = None  # kind=realsense: device serial (None: the first device)
    width: int = 640
    height: int = 480
    fps: int = 30
    views: int = 20  # live: views to capture
    timeout_s: float = 180.0  # live: give up after this long

    def __post_init__(self) -> None:
        if self.kind not in SOURCE_KINDS:
            raise ValueError(f"source.kind: {self.kind!r} is not one of {SOURCE_KINDS}")
        if self.kind in ("folder", "video", "recording") and not self.path:
            raise ValueError(f"source.path: required for source.kind={self.kind}")
        if self.kind == "camera" and not self.camera_factory:
            raise ValueError("source.camera_factory: required for source.kind=camera ('package.module:function')")
        if self.every < 1 or self.views < 1 or self.timeout_s <= 0:
            raise ValueError("source.every / source.views must be >= 1 and source.timeout_s > 0")

    @property
    def live(self) -> bool:
        return self.kind in ("realsense", "camera")


def open_camera(src: SourceConfig, name: str) -> Camera:
    """A live camera (not connected yet) for a live source."""
    if src.kind == "realsense":
        from robot.cameras import make_camera

        return make_camera("realsense", name=name, serial=src.serial, width=src.width, height=src.height, fps=src.fps, depth=False)
    if src.kind == "camera":
        cam = import_factory(src.camera_factory, "source.camera_factory")()
        if not isinstance(cam, Camera):
            raise TypeError(f"source.camera_factory {src.camera_factory!r} returned {type(cam).__name__}, not a robot.cameras Camera")
        return cam
    raise ValueError(f"source.kind={src.kind} is not a live camera")


def iter_images(src: SourceConfig, name: str = "camera",
                on_connect: Callable[[Camera], None] | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """The images of a non-live source (``on_connect``: see `camera_frames`, recordings only)."""
    if src.kind == "folder":
        return folder_images(src.path)
    if src.kind == "video":
        return video_frames(src.path, src.every)
    if src.kind == "recording":
        p = Path(src.path)
        if p.suffix not in RECORDING_SUFFIXES:
            raise ValueError(f"source.path: {p} is not a recording ({', '.join(RECORDING_SUFFIXES)}); for a video use source.kind=video")
        if not p.exists():
            raise FileNotFoundError(f"source.path: recording {p} does not exist")
        from robot.cameras import make_camera

        kwargs = {"depth": False} if p.suffix == ".db3" else {}
        return camera_frames(make_camera("replay", path=str(p), name=name, **kwargs), src.every, on_connect=on_connect)
    raise ValueError(f"source.kind={src.kind} is live; use capture_views")


def view_signature(det: Detection) -> np.ndarray:
    """Where and how the board sits in the image: centroid (fraction of width/height), apparent size, and
    the foreshortening of the corner spread (principal axes ratio and direction)."""
    w, h = det.image_size
    p = det.image_points
    c = p.mean(0)
    cov = np.cov((p - c).T) if len(p) > 2 else np.eye(2)
    evals, evecs = np.linalg.eigh(cov)
    aspect = float(np.sqrt(max(evals[0], 1e-9) / max(evals[1], 1e-9)))
    angle = float(np.arctan2(evecs[1, 1], evecs[0, 1]))
    return np.array([c[0] / w, c[1] / h, np.sqrt(det.area_fraction), aspect, np.cos(2 * angle) * (1 - aspect), np.sin(2 * angle) * (1 - aspect)])


def capture_views(camera: Camera, detector: BoardDetector, n: int, timeout_s: float,
                  accept: Callable[[Detection], str] | None = None, min_change: float = 0.08, still_px: float = 0.7,
                  on_view: Callable[[int, str], None] | None = None) -> list[tuple[str, np.ndarray]]:
    """Capture ``n`` distinct, still views of the board from a connected camera. ``accept(det)`` returns a
    refusal reason ('' to accept); a view must differ from all kept ones by ``min_change`` in
    `view_signature` and the board must move < ``still_px`` (mean corner motion) between two frames."""
    from robot.errors import StaleFrameError

    kept: list[tuple[str, np.ndarray]] = []
    sigs: list[np.ndarray] = []
    prev: Detection | None = None
    t_end = time.monotonic() + timeout_s
    while len(kept) < n:
        if time.monotonic() > t_end:
            log.warning("capture: %d of %d views after %.0f s; continuing with what was captured", len(kept), n, timeout_s)
            break
        try:
            frame = camera.read()
        except StaleFrameError:  # a late frame is not a reason to stop; the timeout above bounds the wait
            continue
        det = detector.detect(frame.rgb)
        if len(det) == 0:
            prev = None
            continue
        still = False
        if prev is not None and len(prev) > 0:
            common, ia, ib = np.intersect1d(prev.ids, det.ids, return_indices=True)
            if len(common) >= 4:
                still = float(np.linalg.norm(prev.image_points[ia] - det.image_points[ib], axis=1).mean()) < still_px
        prev = det
        if not still:
            continue
        reason = accept(det) if accept is not None else ""
        if reason:
            continue
        sig = view_signature(det)
        if sigs and min(float(np.abs(sig - s).max()) for s in sigs) < min_change:
            continue
        sigs.append(sig)
        name = f"view_{len(kept):03d}"
        kept.append((name, frame.rgb.copy()))
        if on_view is not None:
            on_view(len(kept), name)
    return kept


def factory_intrinsics(camera: Camera):
    """The camera's own (factory) intrinsics as CameraIntrinsics, or None when it has none to offer.
    A camera may expose ``intrinsics()``; a connected `RealSenseCamera` is read from its running pipeline."""
    from calibration.intrinsics import CameraIntrinsics

    fn = getattr(camera, "intrinsics", None)
    value = fn() if callable(fn) else None
    if value is None and getattr(camera, "_pipe", None) is not None and getattr(camera, "_rs", None) is not None:
        # RealSenseCamera keeps its pyrealsense2 pipeline in _pipe; the colour stream profile carries the
        # factory calibration (the same numbers realsense2_camera publishes as camera_info).
        rs = camera._rs
        value = camera._pipe.get_active_profile().get_stream(rs.stream.color).as_video_stream_profile().get_intrinsics()
    if value is None or isinstance(value, CameraIntrinsics):
        return value
    # pyrealsense2.intrinsics: fx fy ppx ppy width height coeffs (Brown-Conrady k1 k2 p1 p2 k3).
    K = np.array([[value.fx, 0.0, value.ppx], [0.0, value.fy, value.ppy], [0.0, 0.0, 1.0]])
    return CameraIntrinsics(int(value.width), int(value.height), K, np.asarray(list(value.coeffs)[:5], float),
                            camera_name=getattr(camera, "name", "camera"))
