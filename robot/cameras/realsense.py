"""Intel RealSense (D4xx) camera on pyrealsense2: colour + depth aligned to colour, hardware timestamps,
reconnect on USB drop, and playback of ``.db3`` recordings through the same pipeline.

Install with the ``[realsense]`` extra. pyrealsense2 needs the system's ``libusb-1.0.so.0`` even without a
camera; when the system has none, ``tools/setup_libusb.sh`` unpacks Debian's into ``.libusb/`` and it is
preloaded from there (the same project-local approach as the software Vulkan driver).

Timestamps: ``Frame.stamp`` is on the host's monotonic clock so frames of several cameras (and the control
loop) compare directly. Frames in the ``global_time`` / ``system_time`` domains (host wall time) are
shifted by the wall-to-monotonic offset; ``hardware_clock`` frames keep the device's spacing and are
anchored to the host time at which the first frame arrived.

Depth: ``z16`` aligned to colour (``rs.align(rs.stream.color)``), returned in millimetres (uint16).

Tests need no hardware: `write_synthetic_recording` uses pyrealsense2's ``software_device`` + ``recorder``
to write a real ``.db3`` that `RealSenseCamera(RealSenseConfig(playback_file=...))` then plays.
"""

from __future__ import annotations

import ctypes
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robot.cameras.base import Frame
from robot.cameras.replay import ReplayEndedError
from robot.cameras.threaded import ThreadedCamera
from robot.errors import DeviceNotConnectedError

log = logging.getLogger(__name__)

_LIBUSB_DIRS = (
    os.environ.get("WVL_LIBUSB_DIR", ""),
    str(Path(__file__).resolve().parents[2] / ".libusb" / "lib"),
)


def import_pyrealsense2() -> Any:
    """``import pyrealsense2``, preloading a project-local libusb when the system lacks one."""
    try:
        import pyrealsense2 as rs

        return rs
    except ImportError as e:
        if "libusb" not in str(e):
            raise ImportError(f"RealSense cameras need pyrealsense2: pip install 'world-vla-loop[realsense]' ({e})") from e
        for d in _LIBUSB_DIRS:
            lib = Path(d) / "libusb-1.0.so.0" if d else None
            if lib is not None and lib.exists():
                ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
                import pyrealsense2 as rs

                return rs
        raise ImportError(
            "pyrealsense2 needs libusb-1.0.so.0: `apt-get install libusb-1.0-0`, or run tools/setup_libusb.sh "
            f"to unpack it into .libusb/ ({e})"
        ) from e


@dataclass(frozen=True)
class RealSenseConfig:
    name: str = "front"
    serial: str | None = None  # None: the first device found
    width: int = 640
    height: int = 480
    fps: int = 30
    depth: bool = True  # aligned depth (mm)
    playback_file: str | None = None  # a .db3 recording instead of a device
    playback_realtime: bool = False  # pace playback at the recorded rate
    frame_timeout_s: float = 1.0  # no frameset for this long = the device is in trouble
    reconnect_attempts: int = 3
    reconnect_backoff_s: float = 0.5  # doubled per attempt, capped at 4 s
    warmup_s: float = 5.0
    rt_priority: int | None = None  # SCHED_FIFO priority of the reader thread (below the control loop's)

    def __post_init__(self) -> None:
        if self.width < 1 or self.height < 1 or self.fps < 1:
            raise ValueError(f"camera {self.name}: width/height/fps must be positive, got {self.width}x{self.height}@{self.fps}")
        if self.playback_file is not None and not str(self.playback_file).endswith(".db3"):
            raise ValueError(f"camera {self.name}: playback_file {self.playback_file!r} is not a .db3 recording (pyrealsense2 >= 2.59)")
        if self.reconnect_attempts < 0 or self.frame_timeout_s <= 0:
            raise ValueError(f"camera {self.name}: reconnect_attempts must be >= 0 and frame_timeout_s > 0")


class RealSenseCamera(ThreadedCamera):
    def __init__(self, config: RealSenseConfig = RealSenseConfig()) -> None:
        # A recording played faster than real time must not drop frames: the reader waits for each to be read.
        lossless = config.playback_file is not None and not config.playback_realtime
        super().__init__(config.name, warmup_s=config.warmup_s, read_timeout_s=max(0.5, 3.0 / config.fps), lossless=lossless,
                         rt_priority=config.rt_priority)
        self.config = config
        self._rs: Any = None
        self._pipe: Any = None
        self._align: Any = None
        self._depth_to_mm = 1.0
        self._hw_offset: float | None = None
        self._wall_offset = 0.0
        self._last_frame_at = 0.0
        self._last_color_number: int | None = None
        self.reconnects = 0
        self.K: np.ndarray | None = None  # (3, 3) colour intrinsics from the device / recording
        self.D: np.ndarray | None = None

    # ------------------------------------------------------------------ device
    def _open(self) -> None:
        self._rs = import_pyrealsense2()
        c = self.config
        if c.playback_file is not None and not Path(c.playback_file).exists():
            raise FileNotFoundError(f"camera {self.name}: recording {c.playback_file} does not exist")
        self._start_pipeline()

    def _start_pipeline(self) -> None:
        rs, c = self._rs, self.config
        cfg = rs.config()
        if c.playback_file is not None:
            cfg.enable_device_from_file(str(c.playback_file), repeat_playback=False)
        else:
            devices = [d.get_info(rs.camera_info.serial_number) for d in rs.context().query_devices()]
            if not devices:
                raise DeviceNotConnectedError(f"camera {self.name}: no RealSense device found (USB cable? udev rules?)")
            if c.serial is not None and c.serial not in devices:
                raise DeviceNotConnectedError(f"camera {self.name}: RealSense {c.serial} not found; connected: {devices}")
            if c.serial is not None:
                cfg.enable_device(c.serial)
            cfg.enable_stream(rs.stream.color, c.width, c.height, rs.format.rgb8, c.fps)
            if c.depth:
                cfg.enable_stream(rs.stream.depth, c.width, c.height, rs.format.z16, c.fps)
        pipe = rs.pipeline()
        profile = pipe.start(cfg)
        dev = profile.get_device()
        if c.playback_file is not None:
            pb = dev.as_playback()
            pb.pause()  # playback starts with pipe.start(); switch the mode before more frames go by
            pb.set_real_time(bool(c.playback_realtime))
            pb.resume()
        else:
            for s in dev.query_sensors():  # host-comparable timestamps where the firmware offers them
                if s.supports(rs.option.global_time_enabled):
                    s.set_option(rs.option.global_time_enabled, 1)
        self._align = rs.align(rs.stream.color) if c.depth else None
        intr = profile.get_stream(rs.stream.color).as_video_stream_profile().get_intrinsics()
        self.K = np.array([[intr.fx, 0, intr.ppx], [0, intr.fy, intr.ppy], [0, 0, 1]], np.float64)
        self.D = np.asarray(intr.coeffs, np.float64)  # (5,) brown-conrady as plumb_bob
        depth_sensors = [s for s in dev.query_sensors() if s.is_depth_sensor()]
        scale = depth_sensors[0].as_depth_sensor().get_depth_scale() if depth_sensors else 0.001
        self._depth_to_mm = float(scale) * 1000.0
        self._pipe = pipe
        self._hw_offset = None
        self._wall_offset = time.time() - time.monotonic()
        self._last_frame_at = time.monotonic()
        self._last_color_number = None

    def _close(self) -> None:
        if self._pipe is not None:
            try:
                self._pipe.stop()
            finally:
                self._pipe = None

    def _stamp(self, f: Any) -> float:
        rs = self._rs
        ms = f.get_timestamp()
        domain = f.get_frame_timestamp_domain()
        if domain in (rs.timestamp_domain.global_time, rs.timestamp_domain.system_time):
            return ms / 1000.0 - self._wall_offset
        if self._hw_offset is None:
            self._hw_offset = time.monotonic() - ms / 1000.0
        return ms / 1000.0 + self._hw_offset

    def _grab(self, timeout_s: float) -> Frame | None:
        c = self.config
        ok, fs = self._pipe.try_wait_for_frames(int(timeout_s * 1000))
        if not ok:
            silent = time.monotonic() - self._last_frame_at
            if silent < c.frame_timeout_s:
                return None
            if c.playback_file is not None:
                raise ReplayEndedError(f"recording {c.playback_file} ended")
            self._reconnect(silent)
            return None
        self._last_frame_at = time.monotonic()
        if self._align is not None:
            fs = self._align.process(fs)
        color = fs.get_color_frame()
        if not color:
            return None
        # The syncer can hand out the same colour frame twice (seen in playback on a loaded machine, when the
        # depth frame arrives late): a repeated observation would be recorded as a step where the scene stood still.
        number = int(color.get_frame_number())
        if number == self._last_color_number:
            return None
        self._last_color_number = number
        rgb = np.asanyarray(color.get_data()).copy()  # librealsense recycles the buffer
        depth = None
        if c.depth:
            d = fs.get_depth_frame()
            if not d:
                return None
            depth = np.asanyarray(d.get_data())
            depth = depth.copy() if abs(self._depth_to_mm - 1.0) < 1e-6 else np.clip(depth * self._depth_to_mm, 0, 65535).astype(np.uint16)
        return Frame(rgb=rgb, stamp=self._stamp(color), depth=depth, index=number)

    def _reconnect(self, silent_s: float) -> None:
        """No frames for ``frame_timeout_s``: restart the pipeline (a USB drop re-enumerates the device)."""
        c = self.config
        last: Exception | None = None
        backoff = c.reconnect_backoff_s
        for attempt in range(1, c.reconnect_attempts + 1):
            log.warning("camera %s: no frames for %.1f s; reconnect attempt %d/%d", self.name, silent_s, attempt, c.reconnect_attempts)
            try:
                self._close()
            except Exception as e:
                log.debug("camera %s: stop failed: %s", self.name, e)
            if self._stop.wait(backoff):
                return
            backoff = min(backoff * 2, 4.0)
            try:
                self._start_pipeline()
                self.reconnects += 1
                return
            except Exception as e:
                last = e
        raise DeviceNotConnectedError(
            f"RealSense {c.serial or '(first device)'} delivered no frames for {silent_s:.1f} s and "
            f"{c.reconnect_attempts} reconnect attempts failed (last error: {last}); check the USB 3 cable and port"
        )


def write_synthetic_recording(path: str | Path, n_frames: int = 30, width: int = 640, height: int = 480, fps: int = 30,
                              depth: bool = True, paced: bool = True) -> Path:
    """Record ``n_frames`` synthetic colour (+ depth) framesets to a RealSense ``.db3`` with pyrealsense2's
    software device: a real recording (the format a D435 session produces) for tests and benchmarks.
    Colour frame i is a smooth pattern shifted by i pixels; depth is 500 + i mm plus a ramp.
    ``paced``: feed frames at ``fps`` in wall time. Playback replays the pace of the recording session (not
    the frame timestamps): an unpaced file is one burst, and librealsense drops the frames it emits before
    ``set_real_time(False)`` takes effect; a paced one plays like a live 30 fps camera."""
    rs = import_pyrealsense2()
    path = Path(path)
    if path.suffix != ".db3":
        raise ValueError(f"path: RealSense recordings must end in .db3, got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    intr = rs.intrinsics()
    intr.width, intr.height, intr.ppx, intr.ppy, intr.fx, intr.fy = width, height, width / 2, height / 2, 600.0, 600.0
    intr.model, intr.coeffs = rs.distortion.brown_conrady, [0.0] * 5

    def stream(kind, uid, bpp, fmt):
        vs = rs.video_stream()
        vs.type, vs.index, vs.uid, vs.width, vs.height, vs.fps, vs.bpp, vs.fmt, vs.intrinsics = kind, 0, uid, width, height, fps, bpp, fmt, intr
        return vs

    sdev = rs.software_device()
    color_s = sdev.add_sensor("Color")
    cprof = color_s.add_video_stream(stream(rs.stream.color, 1, 3, rs.format.rgb8))
    sensors = [(color_s, cprof)]
    if depth:
        depth_s = sdev.add_sensor("Depth")
        dprof = depth_s.add_video_stream(stream(rs.stream.depth, 0, 2, rs.format.z16))
        depth_s.add_read_only_option(rs.option.depth_units, 0.001)
        ext = rs.extrinsics()
        ext.rotation, ext.translation = [1, 0, 0, 0, 1, 0, 0, 0, 1], [0, 0, 0]
        dprof.register_extrinsics_to(cprof, ext)  # alignment needs depth->colour extrinsics
        sensors.insert(0, (depth_s, dprof))
    sdev.create_matcher(rs.matchers.default)
    recorder = rs.recorder(str(path), sdev)
    queue = rs.frame_queue()  # the recorder taps the sensors; nobody reads this queue
    for s, p in sensors:
        s.open(p)
        s.start(queue)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 255 // max(width - 1, 1), yy * 255 // max(height - 1, 1), np.full_like(xx, 64)], -1).astype(np.uint8)
    ramp = (yy * 1000 // max(height - 1, 1)).astype(np.uint16)
    t_start = time.monotonic()
    for i in range(n_frames):
        if paced:
            delay = t_start + i / fps - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        ts = 1000.0 * i / fps
        frames = [(cprof, np.ascontiguousarray(np.roll(base, i, axis=1)), 3)]
        if depth:
            frames.insert(0, (dprof, (500 + i + ramp).astype(np.uint16), 2))
        for (s, _), (prof, pixels, bpp) in zip(sensors, frames):
            f = rs.software_video_frame()
            f.pixels, f.bpp, f.stride, f.timestamp = pixels, bpp, bpp * width, ts
            f.domain, f.frame_number, f.profile = rs.timestamp_domain.hardware_clock, i, prof.as_video_stream_profile()
            s.on_video_frame(f)
    for s, _ in sensors:
        s.stop()
        s.close()
    del recorder  # flushes and closes the file
    return path
