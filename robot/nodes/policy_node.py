"""Policy node: images + robot state -> the deployed ONNX policy -> safety filter -> ``TwistStamped`` to MoveIt
Servo or ``JointTrajectory`` to a joint_trajectory_controller. The episode loop is `robot.runner.EpisodeRunner`
over a `TopicCamera` and a `TopicArm` (the same classes `wvl robot` uses); this shell wires topics to them
and runs one episode per ``start`` event on a worker thread. ``stop`` ends it; ``estop`` latches the filter."""

from __future__ import annotations

import importlib
import threading

from geometry_msgs.msg import PoseStamped, TwistStamped
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray, String
from trajectory_msgs.msg import JointTrajectory

from robot import rosmsg
from robot.arms.base import ArmLimits
from robot.arms.topic import TopicArm
from robot.cameras.topic import TopicCamera
from robot.control import MonotonicClock
from robot.nodes._shell import load_config, rclpy_types, spin
from robot.nodes.config import PolicyNodeConfig, gripper_opening
from robot.policy_runtime import PolicyRuntime, RigSpec
from robot.policy_source import PolicySource
from robot.runner import EpisodeRunner, RunnerConfig
from robot.safety import SafetyFilter
from robot.sinks import FolderSink


class PolicyNode(Node):
    def __init__(self) -> None:
        super().__init__("policy_node")
        self.cfg: PolicyNodeConfig = load_config(self, PolicyNodeConfig)
        c, self.types = self.cfg, rclpy_types()
        if c.output == "twist":
            self.pub = self.create_publisher(TwistStamped, c.twist_topic, 10)
        else:
            self.pub = self.create_publisher(JointTrajectory, c.trajectory_topic, 10)
        self.pub_grip = self.create_publisher(Float64MultiArray, c.gripper_topic, 10)
        ik = None
        if c.ik_factory:
            module, _, fn = c.ik_factory.partition(":")
            ik = getattr(importlib.import_module(module), fn)()
        self.camera = TopicCamera(c.camera)
        self.arm = TopicArm(c.output, self._publish, c.rate_hz, ArmLimits(c.max_translation_m, c.max_rotation_rad), ik=ik)
        self.runtime = PolicyRuntime(RigSpec(camera=c.camera, control_hz=c.rate_hz))
        manifest = self.runtime.load(c.artifact)
        self.source = PolicySource(self.runtime, camera=c.camera, image_size=tuple(manifest.image_size))
        self.safety = SafetyFilter(c.safety, self.arm.limits)
        self.runner = EpisodeRunner(self.arm, {c.camera: self.camera}, self.safety,
                                    RunnerConfig(hz=c.rate_hz, max_steps=c.max_steps, replan_every=c.replan_every or None,
                                                 source_kind="policy", rig="ros2"), MonotonicClock())
        self.sink = FolderSink(c.outbox)
        self._joints, self._stop, self._worker = None, threading.Event(), None
        self.create_subscription(Image, c.image_topic, lambda m: self.camera.push(rosmsg.image_from_msg(m), rosmsg.stamp_to_float(m.header.stamp)), qos_profile_sensor_data)
        self.create_subscription(JointState, c.joint_state_topic, self._on_joints, 10)
        self.create_subscription(PoseStamped, c.ee_pose_topic, self._on_pose, qos_profile_sensor_data)
        self.create_subscription(String, c.event_topic, self._on_event, 10)
        self.arm.connect()

    def _publish(self, *args) -> None:
        c, T, now = self.cfg, self.types, self.get_clock().now().nanoseconds * 1e-9
        if c.output == "twist":
            twist, grip = args
            self.pub.publish(rosmsg.twist_stamped_msg(twist, now, c.frame_id, types=T))
        else:
            positions, dt, grip = args
            self.pub.publish(rosmsg.joint_trajectory_msg(c.joint_names, positions, dt, now, types=T))
        self.pub_grip.publish(rosmsg.float64_array_msg([grip], label="gripper", types=T))

    def _on_joints(self, msg: JointState) -> None:
        names, pos, _, _, _ = rosmsg.joint_state_from_msg(msg)
        self._joints = (pos, gripper_opening(names, pos, self.cfg.gripper_joints, self.cfg.gripper_max_m))

    def _on_pose(self, msg: PoseStamped) -> None:
        if self._joints is not None:
            self.arm.update_state(self._joints[0], rosmsg.pose_from_msg(msg), self._joints[1], rosmsg.stamp_to_float(msg.header.stamp))

    def _on_event(self, msg: String) -> None:
        if msg.data == "estop":
            self.safety.estop("policy/event estop")
        elif msg.data == "stop":
            self._stop.set()
        elif msg.data == "start" and (self._worker is None or not self._worker.is_alive()):
            self._stop.clear()
            self._worker = threading.Thread(target=self._episode, name="policy-episode", daemon=True)
            self._worker.start()

    def _episode(self) -> None:
        if not self.camera.is_connected:
            self.camera.connect()
        res = self.runner.run(self.source, self.runtime.manifest.instruction, stop=self._stop.is_set,
                              policy_version=self.runtime.version)
        if res.episode is not None:
            self.sink(res.episode)
        self.get_logger().info(f"episode ended: {res.end_reason} {res.detail}")

    def close(self) -> None:
        self._stop.set()
        if self._worker is not None:
            self._worker.join(timeout=5.0)
        self.camera.disconnect()


def main() -> None:
    spin(PolicyNode)


if __name__ == "__main__":
    main()
