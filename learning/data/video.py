"""MP4 encode/decode with PyAV for the episode store.

Default: H.264 (libx264) with full-resolution chroma (yuv444p) at high quality: at 64x64 the cube is a few
pixels wide and 4:2:0 chroma subsampling would smear its colour into the table. For bit-exact frames use
``codec="libx264rgb"`` with ``crf=0`` (lossless RGB H.264). AV1 (LeRobot's default) needs even sizes.
"""

from __future__ import annotations

import fractions
from pathlib import Path

import av
import numpy as np

CODECS = ("libx264", "libx264rgb", "libsvtav1")
PIX_FMTS = {"libx264": "yuv444p", "libx264rgb": "rgb24", "libsvtav1": "yuv420p"}


def encode_video(frames: np.ndarray, path: Path, fps: float, codec: str = "libx264", crf: int = 12, pix_fmt: str | None = None) -> None:
    """frames (T, H, W, 3) uint8 RGB -> MP4 at ``path``."""
    if codec not in CODECS:
        raise ValueError(f"video codec: {codec!r} is not one of {CODECS}")
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"video frames: expected (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    T, H, W, _ = frames.shape
    pix_fmt = pix_fmt or PIX_FMTS[codec]
    with av.open(str(path), mode="w", format="mp4") as container:
        rate = fractions.Fraction(fps).limit_denominator(1000)
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = W, H
        stream.pix_fmt = pix_fmt
        stream.time_base = 1 / rate
        opts = {"crf": str(crf)}
        if codec.startswith("libx264"):
            opts.update({"preset": "veryfast", "g": "30"})
        stream.options = opts
        for i in range(T):
            frame = av.VideoFrame.from_ndarray(frames[i], format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def decode_video(path: Path, expected_frames: int | None = None) -> np.ndarray:
    """MP4 -> (T, H, W, 3) uint8 RGB. Raises ValueError naming the file when it is unreadable or short."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    except (av.error.FFmpegError, IndexError, OSError) as e:
        raise ValueError(f"video {path}: cannot be decoded ({e}); the store file is corrupt") from e
    if not frames:
        raise ValueError(f"video {path}: contains no frames; the store file is corrupt")
    if expected_frames is not None and len(frames) != expected_frames:
        raise ValueError(f"video {path}: has {len(frames)} frames, the episode index says {expected_frames}; the store file is corrupt")
    return np.stack(frames)
