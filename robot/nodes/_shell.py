"""What every node shell shares (imports rclpy: only the node modules import this)."""

from __future__ import annotations

import signal

import rclpy
from rcl_interfaces.msg import ParameterDescriptor

from robot.nodes.config import config_from_node, declare_config
from robot.rosmsg import MsgTypes


def load_config(node, cls):
    """Declare one ROS parameter per config field and build the validated config from them."""
    # An empty-list default makes rclpy infer BYTE_ARRAY and refuse the parameter file's list of strings (seen with
    # rclpy 7.1: "expecting type 'BYTE_ARRAY'"); such parameters are declared dynamically typed, the dataclass checks.
    declare_config(node, cls, ParameterDescriptor(dynamic_typing=True))
    return config_from_node(node, cls)


def rclpy_types() -> MsgTypes:
    return MsgTypes.rclpy()


def spin(node_factory) -> int:
    """Run one node until SIGINT / SIGTERM. rclpy's own signal handlers are off: they would shut the context
    down under the node's threads (a publisher thread then fails with "context is invalid"); here a signal
    ends the spin loop (woken every 0.1 s), the node's close() stops its threads and saves what it holds, then
    the context goes. Returns the node's ``exit_code`` (0 without one; 1 when it could not be built)."""
    from rclpy.executors import SingleThreadedExecutor

    rclpy.init(signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
    stop: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stop.append(signum))
    node, code = None, 1
    try:
        node = node_factory()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while not stop and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        if node is not None:
            node.close()
            code = int(getattr(node, "exit_code", 0))
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return code
