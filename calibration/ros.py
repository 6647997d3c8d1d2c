"""Hand-eye calibrations as ROS 2 messages, without importing ROS: message classes are passed in.

The classes may be rclpy's (``geometry_msgs.msg.TransformStamped``) or rosbags' dataclasses (the tests use
the real ROS 2 definitions from ``rosbags.typesys``); only attribute access and keyword construction are
used, so both work. rosbags classes need every field, hence the explicit construction below.
"""

from __future__ import annotations

from typing import Any

from calibration.files import HandEyeCalibration
from calibration.geometry import matrix_to_pose


def static_transform(calib: HandEyeCalibration, types: dict[str, Any], sec: int = 0, nanosec: int = 0) -> Any:
    """``geometry_msgs/msg/TransformStamped`` parent -> child for ``calib``. ``types`` maps the ROS type
    names (``geometry_msgs/msg/TransformStamped``, ``.../Transform``, ``.../Vector3``, ``.../Quaternion``,
    ``std_msgs/msg/Header``, ``builtin_interfaces/msg/Time``) to classes."""
    p = matrix_to_pose(calib.T_parent_child)
    t = types
    header = t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=int(sec), nanosec=int(nanosec)), frame_id=calib.parent)
    transform = t["geometry_msgs/msg/Transform"](
        translation=t["geometry_msgs/msg/Vector3"](x=float(p[0]), y=float(p[1]), z=float(p[2])),
        rotation=t["geometry_msgs/msg/Quaternion"](x=float(p[3]), y=float(p[4]), z=float(p[5]), w=float(p[6])),
    )
    return t["geometry_msgs/msg/TransformStamped"](header=header, child_frame_id=calib.child, transform=transform)


def static_transform_args(calib: HandEyeCalibration) -> list[str]:
    """Arguments for ``ros2 run tf2_ros static_transform_publisher`` publishing the same transform."""
    p = matrix_to_pose(calib.T_parent_child)
    names = ("--x", "--y", "--z", "--qx", "--qy", "--qz", "--qw")
    args = [a for n, v in zip(names, p) for a in (n, f"{float(v):.9f}")]
    return args + ["--frame-id", calib.parent, "--child-frame-id", calib.child]
