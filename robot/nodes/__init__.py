"""ROS 2 node shells (the only place that imports rclpy): declare parameters -> build our config dataclass
(`robot.nodes.config`) -> publishers / subscriptions -> delegate to rclpy-free classes.

Run one with ``python -m robot.nodes.<name> --ros-args --params-file launch/params/collect.yaml``, or all of
them with ``ros2 launch launch/collect.launch.py`` / ``launch/deploy.launch.py``.

=================  =====================================================================================
camera_node        a camera of the registry (RealSense, replay, synthetic) -> Image + CameraInfo (+ depth)
teleop_node        SpaceMouse / keyboard / gamepad / joy -> TwistStamped (MoveIt Servo) + 7-d action + events
collector_node     images + JointState + EE pose + action + events -> labelled SANS episodes -> outbox
policy_node        images + state -> ONNX policy -> safety filter -> TwistStamped or JointTrajectory
=================  =====================================================================================
"""
