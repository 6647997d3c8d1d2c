"""Collector node: camera images, JointState, the EE pose, the teleop action and episode events ->
labelled SANS episodes in the robot's outbox. All logic is `robot.collector.StreamCollector`; this shell
subscribes, converts with `robot.rosmsg` and ticks it at the control rate."""

from __future__ import annotations

from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray, String

from robot import rosmsg
from robot.collector import CollectorConfig, StreamCollector
from robot.nodes._shell import load_config, spin
from robot.nodes.config import CollectorNodeConfig, gripper_opening
from robot.sinks import FolderSink


class CollectorNode(Node):
    def __init__(self) -> None:
        super().__init__("collector_node")
        self.cfg: CollectorNodeConfig = load_config(self, CollectorNodeConfig)
        c = self.cfg
        self.collector = StreamCollector(
            CollectorConfig(task=c.task, cameras=c.cameras, hz=c.rate_hz, rig=c.rig, max_steps=c.max_steps,
                            max_age_s=c.max_age_s, success=c.success, near_success=c.near_success),
            FolderSink(c.outbox), on_prompt=lambda text: self.get_logger().info(text),
        )
        self._joints, self._depth = None, {}
        for i, (cam, topic) in enumerate(zip(c.cameras, c.image_topics)):
            self.create_subscription(Image, topic, lambda m, cam=cam: self._on_image(cam, m), qos_profile_sensor_data)
            if c.depth_topics:
                self.create_subscription(Image, c.depth_topics[i], lambda m, cam=cam: self._depth.__setitem__(cam, rosmsg.image_from_msg(m)), qos_profile_sensor_data)
        self.create_subscription(JointState, c.joint_state_topic, self._on_joints, 10)
        self.create_subscription(PoseStamped, c.ee_pose_topic, self._on_pose, qos_profile_sensor_data)
        self.create_subscription(Float64MultiArray, c.action_topic, lambda m: self.collector.on_action(rosmsg.float64_array_from_msg(m), self._now()), 10)
        self.create_subscription(String, c.event_topic, lambda m: self.collector.on_event(m.data), 10)
        self._inputs_fresh, self._episodes = False, 0
        self.create_timer(1.0 / c.rate_hz, self._tick)

    def _tick(self) -> None:
        # two log lines that say where the collector is (an operator's screen, a test's synchronisation): once, when
        # every camera and the robot state arrive fresh; and each episode's first recorded step
        if self.collector.tick() and self.collector.steps == 1:
            self._episodes += 1
            self.get_logger().info(f"recording episode {self._episodes}: first step")
        if not self._inputs_fresh and not self.collector.stale_inputs():
            self._inputs_fresh = True
            self.get_logger().info(f"inputs fresh: {', '.join(self.cfg.cameras)} and the robot state")

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_image(self, cam: str, msg: Image) -> None:
        self.collector.on_image(cam, rosmsg.image_from_msg(msg), rosmsg.stamp_to_float(msg.header.stamp), self._depth.get(cam))

    def _on_joints(self, msg: JointState) -> None:
        names, pos, _, _, _ = rosmsg.joint_state_from_msg(msg)
        self._joints = (pos, gripper_opening(names, pos, self.cfg.gripper_joints, self.cfg.gripper_max_m))

    def _on_pose(self, msg: PoseStamped) -> None:
        if self._joints is not None:
            pos, grip = self._joints
            self.collector.on_state(pos, rosmsg.pose_from_msg(msg), grip, rosmsg.stamp_to_float(msg.header.stamp))

    def close(self) -> None:
        ep = self.collector.flush()  # an unfinished episode is saved unlabeled, never lost
        if ep is not None:
            self.get_logger().warning(f"saved the unfinished episode {ep.uuid} as unlabeled")
        self.get_logger().info("collected: " + self.collector.tally.line())


def main() -> None:
    spin(CollectorNode)


if __name__ == "__main__":
    main()
