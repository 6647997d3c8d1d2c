"""Cameras: reader-thread recipe, faults (unplug, stall), multi-camera alignment, replay, RealSense recordings."""

import time

import numpy as np
import pytest

from robot.cameras import make_camera
from robot.cameras.fake import SyntheticCamera, SyntheticCameraConfig
from robot.cameras.group import CameraGroup
from robot.cameras.replay import EpisodeReplayCamera, ReplayEndedError, make_replay_camera
from robot.errors import DeviceNotConnectedError, StaleFrameError
from robot.sinks import FolderSink
from tests.factories import random_episode


def test_synthetic_camera_delivers_fresh_frames_at_its_rate():
    with SyntheticCamera(SyntheticCameraConfig(fps=100, width=32, height=24, depth=True)) as cam:
        frames = [cam.read() for _ in range(10)]
    idx = [f.index for f in frames]
    assert idx == sorted(set(idx))  # never the same frame twice
    assert frames[0].rgb.shape == (24, 32, 3) and frames[0].depth.shape == (24, 32) and frames[0].depth.dtype == np.uint16
    assert np.all(np.diff([f.stamp for f in frames]) > 0)


def test_unplugged_camera_raises_a_clear_error():
    cam = SyntheticCamera(SyntheticCameraConfig(fps=100))
    cam.connect()
    cam.read()
    cam.unplug()
    with pytest.raises(DeviceNotConnectedError, match="front.*unplugged"):
        for _ in range(20):
            cam.read()
    assert not cam.is_connected
    cam.disconnect()


def test_stalled_stream_is_detected_not_silently_reused():
    cam = SyntheticCamera(SyntheticCameraConfig(fps=100))
    cam.connect()
    cam.read()
    cam.stall()
    time.sleep(0.05)
    try:  # a frame grabbed just before the stall may still be waiting: take it
        cam.read(timeout_s=0.01)
    except StaleFrameError:
        pass
    t0 = time.monotonic()
    with pytest.raises(StaleFrameError, match="no new frame"):
        cam.read(timeout_s=0.1)
    assert time.monotonic() - t0 < 0.5
    time.sleep(0.06)
    with pytest.raises(StaleFrameError, match="max age"):
        cam.peek(max_age_s=0.05)
    cam.disconnect()


def test_group_aligns_cameras_and_flags_repeats_and_stalls():
    a = SyntheticCamera(SyntheticCameraConfig(name="a", fps=50))
    b = SyntheticCamera(SyntheticCameraConfig(name="b", fps=50))
    g = CameraGroup({"a": a, "b": b}, max_age_s=0.05, timeout_s=0.2, max_skew_s=0.015)
    g.connect()
    try:
        reads = []
        for _ in range(5):
            reads.append(g.read())
            time.sleep(0.02)
        assert all(set(r.frames) == {"a", "b"} for r in reads)
        assert max(r.skew_s for r in reads) <= 0.025
        r1, r2 = g.read(), g.read()  # back to back: same latest frames -> reported as repeats
        assert any(r2.repeated.values()) and sum(g.repeats.values()) >= 1
        b.stall()
        time.sleep(0.08)
        with pytest.raises(StaleFrameError, match="camera b"):
            g.read()
    finally:
        g.disconnect()


def test_episode_replay_camera_from_an_outbox_file(tmp_path):
    ep = random_episode(T=5, depth=True)
    sink = FolderSink(tmp_path)
    sink(ep)
    cam = make_camera("replay", path=str(sink.written[0]))
    with cam:
        frames = [cam.read() for _ in range(5)]
        with pytest.raises(ReplayEndedError):
            cam.read()
    np.testing.assert_array_equal(np.stack([f.rgb for f in frames]), ep.images["front"])
    np.testing.assert_array_equal(frames[2].depth, ep.depth["front"][2])
    assert [f.stamp for f in frames] == pytest.approx(list(ep.timestamps))
    looped = EpisodeReplayCamera(ep, loop=True)
    with looped:
        stamps = [looped.read().stamp for _ in range(7)]
    assert np.all(np.diff(stamps) > 0)


def test_unknown_camera_kind_and_keys_are_refused():
    with pytest.raises(ValueError, match="kind 'webcam'.*valid kinds"):
        make_camera("webcam")
    with pytest.raises(ValueError, match="unknown keys.*exposure"):
        make_camera("synthetic", exposure=3)


@pytest.fixture(scope="module")
def rs_recording(tmp_path_factory):
    from robot.cameras.realsense import import_pyrealsense2, write_synthetic_recording

    try:
        import_pyrealsense2()
    except ImportError as e:
        pytest.skip(f"pyrealsense2 unavailable: {e}")
    return write_synthetic_recording(tmp_path_factory.mktemp("rs") / "session.db3", n_frames=12, width=64, height=48, fps=30)


def test_realsense_plays_a_db3_recording_with_aligned_depth(rs_recording):
    cam = make_replay_camera(rs_recording, name="wrist")
    cam.connect()
    frames = []
    try:
        with pytest.raises(ReplayEndedError, match="ended"):
            while True:
                frames.append(cam.read(timeout_s=3.0))
    finally:
        cam.disconnect()
    assert len(frames) >= 10  # librealsense may drop the first frameset while syncing
    f = frames[3]
    assert f.rgb.shape == (48, 64, 3) and f.rgb.dtype == np.uint8
    assert f.depth.shape == (48, 64) and f.depth.dtype == np.uint16
    # Depth was written as 500 + i + ramp(mm): aligned with identity extrinsics it comes back unchanged.
    assert all(fr.depth[0, 10] == 500 + fr.index for fr in frames)  # colour and depth of the same frameset
    idx = [fr.index for fr in frames]
    assert idx == sorted(set(idx))
    dt = np.diff([fr.stamp for fr in frames])
    np.testing.assert_allclose(dt[dt < 0.05], 1 / 30, atol=2e-3)  # hardware-clock spacing is kept


def test_realsense_config_is_validated():
    from robot.cameras.realsense import RealSenseConfig

    with pytest.raises(ValueError, match="db3"):
        RealSenseConfig(playback_file="session.bag")
    with pytest.raises(ValueError, match="width/height/fps"):
        RealSenseConfig(fps=0)


class _SilentPipe:
    """A pipeline whose device fell off the USB bus: no framesets any more."""

    def try_wait_for_frames(self, timeout_ms):
        time.sleep(timeout_ms / 1000)
        return False, None

    def stop(self):
        pass


def test_realsense_reconnects_after_a_usb_drop_then_fails_with_a_clear_error(monkeypatch):
    from robot.cameras.realsense import RealSenseCamera, RealSenseConfig

    cam = RealSenseCamera(RealSenseConfig(serial="123456", frame_timeout_s=0.05, reconnect_attempts=2, reconnect_backoff_s=0.01))
    attempts = []

    def restart_fails():
        attempts.append(time.monotonic())
        raise RuntimeError("No device connected")

    cam._pipe, cam._last_frame_at = _SilentPipe(), time.monotonic() - 1.0
    monkeypatch.setattr(cam, "_start_pipeline", restart_fails)
    with pytest.raises(DeviceNotConnectedError, match=r"123456.*2 reconnect attempts failed.*No device connected.*USB"):
        cam._grab(0.01)
    assert len(attempts) == 2

    def restart_works():  # the device re-enumerated: the pipeline comes back
        cam._pipe, cam._last_frame_at = _SilentPipe(), time.monotonic()

    monkeypatch.setattr(cam, "_start_pipeline", restart_works)
    cam._pipe, cam._last_frame_at = _SilentPipe(), time.monotonic() - 1.0
    assert cam._grab(0.01) is None and cam.reconnects == 1
