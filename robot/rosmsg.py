"""numpy <-> ROS 2 messages, without rclpy.

Readers (``*_from_msg``) use attribute access only, so they take real rclpy messages (number sequences
arrive as ``array.array`` / lists) and `rosbags` messages (numpy arrays) alike. Writers build messages
through a `MsgTypes` table: `MsgTypes.rosbags()` (the default: real ROS 2 definitions from rosbags'
typestore, serialisable to CDR for bags and MCAP) or `MsgTypes.rclpy()` (inside the node shells). The
table also knows how each flavour stores number sequences (numpy arrays for rosbags, ``array.array`` for
rclpy's unbounded sequences).

Conventions: times are float seconds <-> ``builtin_interfaces/Time`` (sec, nanosec); images ``rgb8``
(H, W, 3) uint8 and depth ``16UC1`` (H, W) uint16 millimetres (realsense2_camera's aligned depth); EE poses
(7,) xyz + quaternion xyzw; twists (6,) linear xyz (m/s) + angular xyz (rad/s).
"""

from __future__ import annotations

import array
import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np

_ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3), "bgr8": (np.dtype(np.uint8), 3), "rgba8": (np.dtype(np.uint8), 4),
    "bgra8": (np.dtype(np.uint8), 4), "mono8": (np.dtype(np.uint8), 1), "8UC1": (np.dtype(np.uint8), 1),
    "8UC3": (np.dtype(np.uint8), 3), "mono16": (np.dtype(np.uint16), 1), "16UC1": (np.dtype(np.uint16), 1),
    "32FC1": (np.dtype(np.float32), 1),
}
_ARRAY_CODES = {np.dtype(np.float64): "d", np.dtype(np.float32): "f", np.dtype(np.int32): "i", np.dtype(np.uint8): "B",
                np.dtype(np.int8): "b", np.dtype(np.uint16): "H", np.dtype(np.int64): "q"}


class RosMessageError(ValueError):
    """A message cannot be converted; the message names the field."""


class MsgTypes:
    """Message classes by ROS 2 type name (``sensor_msgs/msg/Image``) and the flavour's sequence storage."""

    def __init__(self, lookup: Mapping[str, type] | Callable[[str], type], flavor: str, typestore: Any = None) -> None:
        if flavor not in ("rosbags", "rclpy"):
            raise ValueError(f"flavor: {flavor!r} is not 'rosbags' or 'rclpy'")
        self._lookup, self.flavor, self.typestore = lookup, flavor, typestore

    @classmethod
    def rosbags(cls, distro: str = "ROS2_HUMBLE") -> "MsgTypes":
        from rosbags.typesys import Stores, get_typestore

        ts = get_typestore(getattr(Stores, distro))
        return cls(ts.types, "rosbags", ts)

    @classmethod
    def rclpy(cls) -> "MsgTypes":
        """rclpy message classes (only importable where ROS 2 is installed: the node shells)."""
        import importlib

        def lookup(name: str) -> type:
            pkg, _, msg = name.split("/")
            return getattr(importlib.import_module(f"{pkg}.msg"), msg)

        return cls(lookup, "rclpy")

    def get(self, name: str) -> type:
        try:
            return self._lookup(name) if callable(self._lookup) else self._lookup[name]
        except (KeyError, AttributeError, ImportError) as e:
            raise RosMessageError(f"message type {name!r} is not available ({self.flavor}): {e}") from e

    def new(self, msgtype: str, /, **fields: Any) -> Any:
        return self.get(msgtype)(**fields)

    def seq(self, values: Any, dtype: Any) -> Any:
        """An unbounded number sequence in this flavour's storage."""
        arr = np.ascontiguousarray(values, dtype=dtype).reshape(-1)
        if self.flavor == "rosbags":
            return arr
        return array.array(_ARRAY_CODES[np.dtype(dtype)], arr.tobytes())

    def fixed(self, values: Any, n: int) -> np.ndarray:
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
        if arr.shape != (n,):
            raise RosMessageError(f"expected {n} values, got {arr.shape}")
        return arr


_DEFAULT: MsgTypes | None = None


def default_types() -> MsgTypes:
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = MsgTypes.rosbags()
    return _DEFAULT


# ---------------------------------------------------------------------------------------------- time
def stamp_msg(t: float, types: MsgTypes | None = None) -> Any:
    types = types or default_types()
    if not math.isfinite(t) or t < 0:
        raise RosMessageError(f"stamp: {t!r} is not a non-negative finite time")
    sec = int(math.floor(t))
    nanosec = int(round((t - sec) * 1e9))
    if nanosec >= 1_000_000_000:
        sec, nanosec = sec + 1, nanosec - 1_000_000_000
    return types.new("builtin_interfaces/msg/Time", sec=sec, nanosec=nanosec)


def stamp_to_float(stamp: Any) -> float:
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def duration_msg(t: float, types: MsgTypes | None = None) -> Any:
    types = types or default_types()
    s = stamp_msg(t, types)
    return types.new("builtin_interfaces/msg/Duration", sec=s.sec, nanosec=s.nanosec)


def header_msg(t: float, frame_id: str, types: MsgTypes | None = None) -> Any:
    types = types or default_types()
    return types.new("std_msgs/msg/Header", stamp=stamp_msg(t, types), frame_id=frame_id)


# ---------------------------------------------------------------------------------------------- images
def image_msg(img: np.ndarray, t: float, frame_id: str, encoding: str | None = None, types: MsgTypes | None = None) -> Any:
    """(H, W, 3) uint8 -> rgb8; (H, W) uint16 -> 16UC1; (H, W) uint8 -> mono8 (or ``encoding``)."""
    types = types or default_types()
    img = np.ascontiguousarray(img)
    if encoding is None:
        if img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8:
            encoding = "rgb8"
        elif img.ndim == 2 and img.dtype == np.uint16:
            encoding = "16UC1"
        elif img.ndim == 2 and img.dtype == np.uint8:
            encoding = "mono8"
        else:
            raise RosMessageError(f"image: no ROS encoding for shape {img.shape} dtype {img.dtype}")
    if encoding not in _ENCODINGS:
        raise RosMessageError(f"image.encoding: {encoding!r} is not supported; supported: {sorted(_ENCODINGS)}")
    dtype, ch = _ENCODINGS[encoding]
    if img.dtype != dtype or (img.shape[2] if img.ndim == 3 else 1) != ch:
        raise RosMessageError(f"image: {encoding} needs {ch} channel(s) of {dtype}, got shape {img.shape} dtype {img.dtype}")
    h, w = img.shape[:2]
    little = np.little_endian if dtype.itemsize > 1 else True
    return types.new(
        "sensor_msgs/msg/Image", header=header_msg(t, frame_id, types), height=h, width=w, encoding=encoding,
        is_bigendian=0 if little else 1, step=w * ch * dtype.itemsize, data=types.seq(np.frombuffer(img.tobytes(), np.uint8), np.uint8),
    )


def image_from_msg(msg: Any) -> np.ndarray:
    """ROS Image -> (H, W, 3) uint8 RGB for colour encodings (bgr/bgra converted), (H, W) for one channel."""
    enc = str(msg.encoding)
    if enc not in _ENCODINGS:
        raise RosMessageError(f"image.encoding: {enc!r} is not supported; supported: {sorted(_ENCODINGS)}")
    dtype, ch = _ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    raw = np.frombuffer(bytes(msg.data) if not isinstance(msg.data, np.ndarray) else msg.data.tobytes(), np.uint8)
    row = w * ch * dtype.itemsize
    if step < row or raw.size < step * h:
        raise RosMessageError(f"image.data: {raw.size} bytes / step {step} is too small for {w}x{h} {enc}")
    rows = raw[: step * h].reshape(h, step)[:, :row]  # drop row padding
    dt = dtype.newbyteorder(">" if msg.is_bigendian else "<") if dtype.itemsize > 1 else dtype
    img = np.frombuffer(np.ascontiguousarray(rows).tobytes(), dt).astype(dtype).reshape((h, w, ch) if ch > 1 else (h, w))
    if enc in ("bgr8", "bgra8"):
        img = img[..., [2, 1, 0]]
    elif enc == "rgba8":
        img = img[..., :3]
    return np.ascontiguousarray(img)


def camera_info_msg(width: int, height: int, K: np.ndarray, D: Sequence[float], t: float, frame_id: str,
                    distortion_model: str = "plumb_bob", types: MsgTypes | None = None) -> Any:
    types = types or default_types()
    K = np.asarray(K, dtype=np.float64).reshape(3, 3)
    P = np.concatenate([K, np.zeros((3, 1))], axis=1)
    roi = types.new("sensor_msgs/msg/RegionOfInterest", x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return types.new(
        "sensor_msgs/msg/CameraInfo", header=header_msg(t, frame_id, types), height=int(height), width=int(width),
        distortion_model=distortion_model, d=types.seq(D, np.float64), k=types.fixed(K, 9), r=types.fixed(np.eye(3), 9),
        p=types.fixed(P, 12), binning_x=0, binning_y=0, roi=roi,
    )


def camera_info_from_msg(msg: Any) -> tuple[np.ndarray, np.ndarray, int, int]:
    """(K (3, 3), D (n,), width, height)."""
    return np.asarray(msg.k, np.float64).reshape(3, 3), np.asarray(msg.d, np.float64), int(msg.width), int(msg.height)


# ---------------------------------------------------------------------------------------------- state / commands
def joint_state_msg(names: Sequence[str], position: np.ndarray, t: float, velocity: np.ndarray | None = None,
                    effort: np.ndarray | None = None, frame_id: str = "", types: MsgTypes | None = None) -> Any:
    types = types or default_types()
    n = len(names)
    position = np.asarray(position, np.float64).reshape(-1)
    if position.shape != (n,):
        raise RosMessageError(f"joint_state.position: {position.shape[0]} values for {n} joint names")
    return types.new("sensor_msgs/msg/JointState", header=header_msg(t, frame_id, types), name=list(names),
                     position=types.seq(position, np.float64), velocity=types.seq([] if velocity is None else velocity, np.float64),
                     effort=types.seq([] if effort is None else effort, np.float64))


def joint_state_from_msg(msg: Any) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, float]:
    """(names, position, velocity, effort, stamp seconds)."""
    return (list(msg.name), np.asarray(msg.position, np.float64), np.asarray(msg.velocity, np.float64),
            np.asarray(msg.effort, np.float64), stamp_to_float(msg.header.stamp))


def joy_msg(axes: Sequence[float], buttons: Sequence[int], t: float, types: MsgTypes | None = None) -> Any:
    types = types or default_types()
    return types.new("sensor_msgs/msg/Joy", header=header_msg(t, "", types), axes=types.seq(axes, np.float32),
                     buttons=types.seq(buttons, np.int32))


def joy_from_msg(msg: Any) -> tuple[np.ndarray, np.ndarray, float]:
    """(axes float32, buttons int32, stamp seconds)."""
    return np.asarray(msg.axes, np.float32), np.asarray(msg.buttons, np.int32), stamp_to_float(msg.header.stamp)


def _vec3(types: MsgTypes, name: str, v: Sequence[float]) -> Any:
    return types.new(name, x=float(v[0]), y=float(v[1]), z=float(v[2]))


def twist_stamped_msg(twist: np.ndarray, t: float, frame_id: str, types: MsgTypes | None = None) -> Any:
    """(6,) linear m/s + angular rad/s -> TwistStamped (MoveIt Servo's delta_twist_cmds)."""
    types = types or default_types()
    tw = np.asarray(twist, np.float64).reshape(-1)
    if tw.shape != (6,) or not np.all(np.isfinite(tw)):
        raise RosMessageError(f"twist: expected 6 finite values, got {tw}")
    inner = types.new("geometry_msgs/msg/Twist", linear=_vec3(types, "geometry_msgs/msg/Vector3", tw[:3]),
                      angular=_vec3(types, "geometry_msgs/msg/Vector3", tw[3:]))
    return types.new("geometry_msgs/msg/TwistStamped", header=header_msg(t, frame_id, types), twist=inner)


def twist_from_msg(msg: Any) -> np.ndarray:
    tw = msg.twist if hasattr(msg, "twist") else msg
    return np.array([tw.linear.x, tw.linear.y, tw.linear.z, tw.angular.x, tw.angular.y, tw.angular.z], np.float64)


def pose_stamped_msg(ee_pose: np.ndarray, t: float, frame_id: str, types: MsgTypes | None = None) -> Any:
    """(7,) xyz + quaternion xyzw -> PoseStamped."""
    types = types or default_types()
    p = np.asarray(ee_pose, np.float64).reshape(-1)
    if p.shape != (7,):
        raise RosMessageError(f"pose: expected 7 values (xyz + quaternion xyzw), got {p.shape}")
    q = types.new("geometry_msgs/msg/Quaternion", x=p[3], y=p[4], z=p[5], w=p[6])
    pose = types.new("geometry_msgs/msg/Pose", position=_vec3(types, "geometry_msgs/msg/Point", p[:3]), orientation=q)
    return types.new("geometry_msgs/msg/PoseStamped", header=header_msg(t, frame_id, types), pose=pose)


def pose_from_msg(msg: Any) -> np.ndarray:
    pose = msg.pose if hasattr(msg, "pose") else msg
    o = pose.orientation
    return np.array([pose.position.x, pose.position.y, pose.position.z, o.x, o.y, o.z, o.w], np.float64)


def joint_trajectory_msg(joint_names: Sequence[str], positions: np.ndarray, dt: float, t: float, frame_id: str = "",
                         velocities: np.ndarray | None = None, types: MsgTypes | None = None) -> Any:
    """A (K, J) chunk of joint positions -> JointTrajectory with ``time_from_start = (i + 1) * dt``
    (what joint_trajectory_controller expects for a policy's action chunk)."""
    types = types or default_types()
    pos = np.asarray(positions, np.float64)
    if pos.ndim != 2 or pos.shape[1] != len(joint_names) or pos.shape[0] < 1:
        raise RosMessageError(f"joint_trajectory.positions: expected (K, {len(joint_names)}), got {pos.shape}")
    if not np.all(np.isfinite(pos)):
        raise RosMessageError("joint_trajectory.positions: contain NaN or inf")
    if dt <= 0:
        raise RosMessageError(f"joint_trajectory.dt: must be > 0, got {dt}")
    vel = None if velocities is None else np.asarray(velocities, np.float64).reshape(pos.shape)
    points = [
        types.new("trajectory_msgs/msg/JointTrajectoryPoint", positions=types.seq(pos[i], np.float64),
                  velocities=types.seq([] if vel is None else vel[i], np.float64), accelerations=types.seq([], np.float64),
                  effort=types.seq([], np.float64), time_from_start=duration_msg((i + 1) * dt, types))
        for i in range(pos.shape[0])
    ]
    return types.new("trajectory_msgs/msg/JointTrajectory", header=header_msg(t, frame_id, types), joint_names=list(joint_names), points=points)


def joint_trajectory_from_msg(msg: Any) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(names, positions (K, J), time_from_start (K,) seconds)."""
    pos = np.array([np.asarray(p.positions, np.float64) for p in msg.points]).reshape(len(msg.points), -1)
    times = np.array([stamp_to_float(p.time_from_start) for p in msg.points], np.float64)
    return list(msg.joint_names), pos, times


def string_msg(text: str, types: MsgTypes | None = None) -> Any:
    return (types or default_types()).new("std_msgs/msg/String", data=str(text))


def float64_array_msg(values: Sequence[float], label: str = "", types: MsgTypes | None = None) -> Any:
    types = types or default_types()
    v = np.asarray(values, np.float64).reshape(-1)
    dim = types.new("std_msgs/msg/MultiArrayDimension", label=label, size=v.size, stride=v.size)
    layout = types.new("std_msgs/msg/MultiArrayLayout", dim=[dim], data_offset=0)
    return types.new("std_msgs/msg/Float64MultiArray", layout=layout, data=types.seq(v, np.float64))


def float64_array_from_msg(msg: Any) -> np.ndarray:
    return np.asarray(msg.data, np.float64)


def load_camera_info_yaml(path: str) -> tuple[np.ndarray, np.ndarray, int, int]:
    """A ROS camera_info YAML (camera_calibration_parsers format) -> (K (3, 3), D, width, height)."""
    import yaml

    with open(path) as f:
        d = yaml.safe_load(f) or {}
    try:
        K = np.asarray(d["camera_matrix"]["data"], np.float64).reshape(3, 3)
        D = np.asarray(d["distortion_coefficients"]["data"], np.float64)
        return K, D, int(d["image_width"]), int(d["image_height"])
    except (KeyError, TypeError, ValueError) as e:
        raise RosMessageError(f"{path}: not a camera_info YAML (camera_matrix, distortion_coefficients, image_width, image_height): {e}") from e
