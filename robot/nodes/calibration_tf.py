"""ROS 2 node: publish the hand-eye calibrations of a folder on /tf_static (ee -> camera_link or
base -> camera_link), once, latched (transient-local), as easy_handeye2's publisher does at every start-up.

    python -m robot.nodes.calibration_tf --ros-args -p calibration_dir:=data/calibration -p cameras:="['front']"

Thin shell: parameters in, `calibration.files` loads and validates, `calibration.ros` builds the messages.
rclpy, tf2_ros and geometry_msgs are imported inside main() only (nothing else in the stack needs ROS).
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    import rclpy
    from builtin_interfaces.msg import Time
    from geometry_msgs.msg import Quaternion, Transform, TransformStamped, Vector3
    from rclpy.node import Node
    from std_msgs.msg import Header
    from tf2_ros.static_transform_broadcaster import StaticTransformBroadcaster

    from calibration.files import load_handeye, load_rig_calibration
    from calibration.ros import static_transform

    types = {"geometry_msgs/msg/TransformStamped": TransformStamped, "geometry_msgs/msg/Transform": Transform,
             "geometry_msgs/msg/Vector3": Vector3, "geometry_msgs/msg/Quaternion": Quaternion,
             "std_msgs/msg/Header": Header, "builtin_interfaces/msg/Time": Time}
    rclpy.init(args=argv if argv is not None else sys.argv)
    node = Node("calibration_tf")
    folder = Path(node.declare_parameter("calibration_dir", "data/calibration").value)
    cameras = list(node.declare_parameter("cameras", [""]).value or [])
    cameras = [c for c in cameras if c]
    try:
        if cameras:
            calibs = [load_handeye(folder / f"{c}.handeye.yaml") for c in cameras]
        else:
            calibs = [cal.extrinsics for cal in load_rig_calibration(folder).values() if cal.extrinsics is not None]
        if not calibs:
            raise FileNotFoundError(f"no <camera>.handeye.yaml in {folder}; run `wvl calibrate handeye` first")
    except (OSError, ValueError) as e:
        node.get_logger().error(str(e))
        node.destroy_node()
        rclpy.shutdown()
        return 2
    now = node.get_clock().now().to_msg()
    broadcaster = StaticTransformBroadcaster(node)
    broadcaster.sendTransform([static_transform(c, types, now.sec, now.nanosec) for c in calibs])
    for c in calibs:
        node.get_logger().info(f"{c.camera}: {c.parent} -> {c.child} (calibration {c.calibration_id}, {c.method}, "
                               f"held-out {c.residuals.get('heldout_translation_mm', float('nan')):.1f} mm)")
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
