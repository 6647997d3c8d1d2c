"""What every node shell shares (imports rclpy: only the node modules import this)."""

from __future__ import annotations

import rclpy
from rcl_interfaces.msg import ParameterDescriptor, ParameterType

from robot.nodes.config import config_from_node, declare_config
from robot.rosmsg import MsgTypes


def load_config(node, cls):
    """Declare one ROS parameter per config field and build the validated config from them."""
    declare_config(node, cls, ParameterDescriptor(type=ParameterType.PARAMETER_STRING_ARRAY))
    return config_from_node(node, cls)


def rclpy_types() -> MsgTypes:
    return MsgTypes.rclpy()


def spin(node_factory) -> None:
    rclpy.init()
    node = node_factory()
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        node.close()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
