"""Simulated arm driver node: a simulated arm (kinematic, or ManiSkill's Panda) behind the topics a real arm's
driver stack and camera driver publish -- ``TwistStamped`` in on MoveIt Servo's ``delta_twist_cmds``, the gripper
target in; ``JointState``, the EE ``PoseStamped`` (franka_robot_state_broadcaster's ``current_pose``) and the
camera's ``Image`` + ``CameraInfo`` (realsense2_camera's layout) out, once per driver period. The policy and
collector nodes run against it exactly as against a rig. All logic is `robot.arms.sim_driver.SimArmDriver`."""

from __future__ import annotations

import numpy as np
from geometry_msgs.msg import PoseStamped, TwistStamped
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float64MultiArray, String

from robot import rosmsg
from robot.arms.sim_driver import make_sim_driver
from robot.nodes._shell import load_config, rclpy_types, spin
from robot.nodes.config import SimArmNodeConfig


class SimArmNode(Node):
    def __init__(self) -> None:
        super().__init__("sim_arm_node")
        self.cfg: SimArmNodeConfig = load_config(self, SimArmNodeConfig)
        c, self.types = self.cfg, rclpy_types()
        self.driver = make_sim_driver(c)
        self.pub_joints = self.create_publisher(JointState, c.joint_state_topic, 10)
        self.pub_pose = self.create_publisher(PoseStamped, c.ee_pose_topic, qos_profile_sensor_data)
        self.pub_rgb = self.create_publisher(Image, f"{c.topic_prefix}/color/image_raw", qos_profile_sensor_data)
        self.pub_info = self.create_publisher(CameraInfo, f"{c.topic_prefix}/color/camera_info", qos_profile_sensor_data)
        self.pub_status = self.create_publisher(String, c.status_topic, 10)
        # the gripper first: a command's gripper target (published before its twist) is taken before the twist that
        # steps the simulator when both wait (an executor serves ready subscriptions in creation order)
        self.create_subscription(Float64MultiArray, c.gripper_topic, self._on_gripper, 10)
        self.create_subscription(TwistStamped, c.twist_topic, self._on_twist, 10)
        self.create_subscription(String, c.event_topic, self._on_event, 10)
        self._K = None
        self.create_timer(1.0 / c.rate_hz, self._on_timer)
        self.get_logger().info(f"sim arm ({c.kind}) at {c.rate_hz:g} Hz, stepping on {c.step_on}; twists on {c.twist_topic}")

    def _on_twist(self, msg: TwistStamped) -> None:
        self.driver.on_twist(rosmsg.twist_from_msg(msg))
        if self.cfg.step_on == "command":
            self._publish(self.driver.tick(move=True))

    def _on_gripper(self, msg: Float64MultiArray) -> None:
        v = rosmsg.float64_array_from_msg(msg)
        if v.size:
            self.driver.on_gripper(float(v[0]))

    def _on_event(self, msg: String) -> None:
        self.get_logger().info(f"event {msg.data!r}: {self.driver.on_event(msg.data)}")
        self._publish(self.driver.tick(move=False))  # the scene after a reset, at once

    def _on_timer(self) -> None:
        # timer: the driver period steps the arm; command: it only republishes while no command comes (a camera
        # streams whether or not the arm moves)
        self._publish(self.driver.tick(move=self.cfg.step_on == "timer"))

    def _publish(self, out) -> None:
        c, T = self.cfg, self.types
        names = list(c.joint_names)
        joints = np.asarray(out.state.joints, np.float64)
        if len(names) != len(joints):  # the kinematic arm's "joints" are xyz + rpy + two fingers
            names = [f"sim_joint{i}" for i in range(len(joints) - 2)] + names[-2:]
        self.pub_joints.publish(rosmsg.joint_state_msg(names, joints, out.stamp, types=T))
        self.pub_pose.publish(rosmsg.pose_stamped_msg(out.state.ee_pose, out.stamp, c.frame_id, types=T))
        if out.rgb is not None:
            h, w = out.rgb.shape[:2]
            if self._K is None:
                self._K = np.array([[w, 0, w / 2], [0, w, h / 2], [0, 0, 1.0]])
            self.pub_rgb.publish(rosmsg.image_msg(out.rgb, out.stamp, c.camera_frame_id, types=T))
            self.pub_info.publish(rosmsg.camera_info_msg(w, h, self._K, np.zeros(5), out.stamp, c.camera_frame_id, types=T))
        self.pub_status.publish(rosmsg.string_msg(self.driver.status_json(out), types=T))

    def close(self) -> None:
        self.driver.close()


def main() -> None:
    spin(SimArmNode)


if __name__ == "__main__":
    main()
