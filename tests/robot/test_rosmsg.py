"""numpy <-> ROS 2 message conversions against rosbags' real message definitions (and CDR round trips)."""

import array
from types import SimpleNamespace

import numpy as np
import pytest

from robot import rosmsg
from robot.rosmsg import MsgTypes, RosMessageError

T = MsgTypes.rosbags()


def cdr_roundtrip(msg):
    ts = T.typestore
    return ts.deserialize_cdr(ts.serialize_cdr(msg, msg.__msgtype__), msg.__msgtype__)


def test_image_rgb_and_depth_roundtrip_through_cdr():
    rgb = np.random.default_rng(0).integers(0, 255, (6, 5, 3), dtype=np.uint8)
    m = cdr_roundtrip(rosmsg.image_msg(rgb, 12.25, "camera_color_optical_frame", types=T))
    assert m.encoding == "rgb8" and m.step == 15 and m.header.frame_id == "camera_color_optical_frame"
    assert rosmsg.stamp_to_float(m.header.stamp) == pytest.approx(12.25)
    np.testing.assert_array_equal(rosmsg.image_from_msg(m), rgb)
    depth = np.arange(30, dtype=np.uint16).reshape(6, 5) * 100
    d = cdr_roundtrip(rosmsg.image_msg(depth, 1.0, "cam", types=T))
    assert d.encoding == "16UC1"
    np.testing.assert_array_equal(rosmsg.image_from_msg(d), depth)


def test_image_reader_handles_bgr_padding_and_big_endian():
    rgb = np.random.default_rng(1).integers(0, 255, (3, 4, 3), dtype=np.uint8)
    padded = np.zeros((3, 16), np.uint8)
    padded[:, :12] = rgb[..., ::-1].reshape(3, 12)
    msg = SimpleNamespace(encoding="bgr8", height=3, width=4, step=16, is_bigendian=0, data=array.array("B", padded.tobytes()))
    np.testing.assert_array_equal(rosmsg.image_from_msg(msg), rgb)  # an rclpy-style message (array.array data)
    depth = np.array([[1, 258]], np.uint16)
    big = SimpleNamespace(encoding="16UC1", height=1, width=2, step=4, is_bigendian=1, data=depth.astype(">u2").tobytes())
    np.testing.assert_array_equal(rosmsg.image_from_msg(big), depth)
    with pytest.raises(RosMessageError, match="encoding"):
        rosmsg.image_from_msg(SimpleNamespace(encoding="yuv422", height=1, width=1, step=2, is_bigendian=0, data=b"00"))
    with pytest.raises(RosMessageError, match="too small"):
        rosmsg.image_from_msg(SimpleNamespace(encoding="rgb8", height=2, width=2, step=6, is_bigendian=0, data=b"0" * 6))


def test_camera_info_joint_state_joy():
    K = np.array([[600, 0, 320], [0, 601, 240], [0, 0, 1.0]])
    ci = cdr_roundtrip(rosmsg.camera_info_msg(640, 480, K, [0.1, -0.2, 0, 0, 0.01], 3.0, "cam", types=T))
    K2, D2, w, h = rosmsg.camera_info_from_msg(ci)
    np.testing.assert_allclose(K2, K)
    assert (w, h) == (640, 480) and D2.shape == (5,) and np.asarray(ci.p).reshape(3, 4)[0, 0] == 600
    js = cdr_roundtrip(rosmsg.joint_state_msg([f"panda_joint{i}" for i in range(1, 8)], np.arange(7) * 0.1, 5.5, types=T))
    names, pos, vel, eff, t = rosmsg.joint_state_from_msg(js)
    assert names[0] == "panda_joint1" and t == pytest.approx(5.5) and vel.size == 0
    np.testing.assert_allclose(pos, np.arange(7) * 0.1)
    with pytest.raises(RosMessageError, match="position"):
        rosmsg.joint_state_msg(["a"], [1.0, 2.0], 0.0, types=T)
    joy = cdr_roundtrip(rosmsg.joy_msg([0.5, -1.0], [0, 1, 1], 2.0, types=T))
    axes, buttons, _ = rosmsg.joy_from_msg(joy)
    np.testing.assert_allclose(axes, [0.5, -1.0])
    np.testing.assert_array_equal(buttons, [0, 1, 1])


def test_twist_pose_trajectory_and_std_msgs():
    tw = cdr_roundtrip(rosmsg.twist_stamped_msg([0.1, 0, -0.2, 0, 0.3, 0], 1.0, "base_link", types=T))
    np.testing.assert_allclose(rosmsg.twist_from_msg(tw), [0.1, 0, -0.2, 0, 0.3, 0])
    with pytest.raises(RosMessageError, match="finite"):
        rosmsg.twist_stamped_msg([np.nan, 0, 0, 0, 0, 0], 1.0, "base_link", types=T)
    pose = [0.4, 0.1, 0.3, 0, 1, 0, 0]
    np.testing.assert_allclose(rosmsg.pose_from_msg(cdr_roundtrip(rosmsg.pose_stamped_msg(pose, 0.5, "base", types=T))), pose)
    chunk = np.random.default_rng(2).normal(size=(4, 7))
    jt = cdr_roundtrip(rosmsg.joint_trajectory_msg([f"j{i}" for i in range(7)], chunk, 0.1, 10.0, types=T))
    names, pos, times = rosmsg.joint_trajectory_from_msg(jt)
    np.testing.assert_allclose(pos, chunk)
    np.testing.assert_allclose(times, [0.1, 0.2, 0.3, 0.4])  # time_from_start = (i + 1) / policy_hz
    with pytest.raises(RosMessageError, match="positions"):
        rosmsg.joint_trajectory_msg(["a", "b"], np.zeros((3, 7)), 0.1, 0.0, types=T)
    assert cdr_roundtrip(rosmsg.string_msg("success", types=T)).data == "success"
    np.testing.assert_allclose(rosmsg.float64_array_from_msg(cdr_roundtrip(rosmsg.float64_array_msg([1, 2, 3], types=T))), [1, 2, 3])


def test_rclpy_flavour_stores_sequences_as_array_array():
    """rclpy's unbounded sequences want array.array; build with a stand-in class table."""

    def lookup(name):
        return lambda **kw: SimpleNamespace(__msgtype__=name, **kw)

    rc = MsgTypes(lookup, "rclpy")
    js = rosmsg.joint_state_msg(["a", "b"], [1.0, 2.0], 1.0, types=rc)
    assert isinstance(js.position, array.array) and js.position.typecode == "d"
    img = rosmsg.image_msg(np.zeros((2, 2, 3), np.uint8), 1.0, "c", types=rc)
    assert isinstance(img.data, array.array) and img.data.typecode == "B"
    np.testing.assert_array_equal(rosmsg.image_from_msg(img), np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(ValueError, match="flavor"):
        MsgTypes(lookup, "ros1")
