"""Teleop node: a device (SpaceMouse, keyboard, gamepad, or ``sensor_msgs/Joy`` from joy_node) ->
``TwistStamped`` for MoveIt Servo, the 7-d action the collector records, and episode events (``String``).
Device reading and mapping live in `teleop`; this shell only runs a timer and publishes."""

from __future__ import annotations

import numpy as np
from geometry_msgs.msg import TwistStamped
from rclpy.node import Node
from sensor_msgs.msg import Joy
from std_msgs.msg import Float64MultiArray, String

from robot import rosmsg
from robot.arms.base import ArmLimits
from robot.nodes._shell import load_config, rclpy_types, spin
from robot.nodes.config import TeleopNodeConfig
from teleop import make_device
from teleop.command import TeleopCommand
from teleop.gamepad import GamepadMap, GamepadMapper
from teleop.mapping import TeleopMapping
from teleop.scripted import ScriptedDevice, load_script


class TeleopNode(Node):
    def __init__(self) -> None:
        super().__init__("teleop_node")
        self.cfg: TeleopNodeConfig = load_config(self, TeleopNodeConfig)
        c, self.types = self.cfg, rclpy_types()
        self.mapping = TeleopMapping(c.linear_speed_m_s, c.angular_speed_rad_s, c.deadband, c.axis_remap)
        self.limits = ArmLimits(c.max_translation_m, c.max_rotation_rad)
        self.device, self.joy, self._cmd = None, None, TeleopCommand(enabled=False)
        if c.device == "joy":
            self.joy = GamepadMapper(GamepadMap.load(c.map_file or None))
            self.create_subscription(Joy, c.joy_topic, self._on_joy, 10)
        elif c.device == "scripted":  # a script instead of a person (tests, demos)
            self.device = ScriptedDevice(load_script(c.script_file))
            self.device.connect()
        else:
            self.device = make_device(c.device, map_file=c.map_file or None)
            self.device.connect()
        self.pub_twist = self.create_publisher(TwistStamped, c.twist_topic, 10)
        self.pub_action = self.create_publisher(Float64MultiArray, c.action_topic, 10)
        self.pub_event = self.create_publisher(String, c.event_topic, 10)
        self._gripper, self._lost, self._playing = 1.0, False, False
        self.create_timer(1.0 / c.rate_hz, self._tick)

    def _on_joy(self, msg: Joy) -> None:
        axes, buttons, _ = rosmsg.joy_from_msg(msg)
        self._cmd = self.joy.update(axes, buttons, stamp=self.get_clock().now().nanoseconds * 1e-9)

    def _tick(self) -> None:
        c, T = self.cfg, self.types
        now = self.get_clock().now().nanoseconds * 1e-9
        if c.device == "scripted" and not self._playing:
            # a script has no person who waits for the screen: it plays once each publisher has matched as many
            # subscriptions as wait_for_subscribers says (with two listeners on the events, one matched is not enough:
            # the other would miss the first events)
            counts = self._subscription_counts()
            want = c.wait_for_subscribers
            if counts["twist"] < want.twist or counts["action"] < want.action or counts["event"] < want.event:
                return
            self._playing = True
            self.get_logger().info(f"scripted device: subscribers {counts} (wanted {want.twist}/{want.action}/{want.event}), "
                                   "playing the script")
        if self.device is not None:
            if not self.device.is_connected and not self._lost:
                self._lost = True
                self.get_logger().error(f"teleop device {c.device} lost; publishing zero motion")
            cmd = self.device.read()
        else:
            cmd, self._cmd = self._cmd, TeleopCommand(self._cmd.twist, self._cmd.gripper, self._cmd.enabled, None, self._cmd.stamp)
        moving = cmd.enabled and not self._lost
        twist = self.mapping.base_twist(cmd) if moving else np.zeros(6)
        self.pub_twist.publish(rosmsg.twist_stamped_msg(twist, now, c.frame_id, types=T))
        action = self.mapping.to_action(cmd, c.control_hz, self.limits, self._gripper)
        if not moving:
            action[:6] = 0
        self._gripper = float(action[6])
        self.pub_action.publish(rosmsg.float64_array_msg(action, label="action", types=T))
        if cmd.event is not None:
            self.pub_event.publish(rosmsg.string_msg(cmd.event.value, types=T))

    def _subscription_counts(self) -> dict[str, int]:
        return {"twist": self.pub_twist.get_subscription_count(), "action": self.pub_action.get_subscription_count(),
                "event": self.pub_event.get_subscription_count()}

    def close(self) -> None:
        if self.device is not None and self.device.is_connected:
            self.device.disconnect()


def main() -> None:
    spin(TeleopNode)


if __name__ == "__main__":
    main()
