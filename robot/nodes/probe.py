"""An rclpy node inside another program (a test, a benchmark, the loop's robot side): publishes and listens on
one private domain with the loopback settings of `robot.ros_env`, spun on its own thread. Not a node process:
``robot.ros_graph.RosGraph`` starts those."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import qos_profile_sensor_data

from robot.ros_env import apply_ros_env, restore_env


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str, graph: Any = None, poll_s: float = 0.02) -> None:
    """Poll ``condition``; a dead node of ``graph`` (a `robot.ros_graph.RosGraph`) or the deadline raises with its logs."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if graph is not None:
            graph.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s:.0f} s" + ("\n" + graph.tails() if graph is not None else ""))
        time.sleep(poll_s)


class Probe:
    """``listen(type, topic)`` -> a list that fills with (monotonic receive time, message); ``publisher``;
    ``wait_subscribed``. The process's environment gets the loopback settings before its first participant
    (Fast DDS reads the profile file once per process) and has them restored on `close`."""

    def __init__(self, domain_id: int, name: str = "probe") -> None:
        self._old_env = apply_ros_env(domain_id)
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id, signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
        self.node = rclpy.create_node(f"{name}_{domain_id}", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, name="ros-probe", daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set() and self.context.ok():
            self.executor.spin_once(timeout_sec=0.05)

    def listen(self, msg_type: Any, topic: str, sensor: bool = False) -> list[tuple[float, Any]]:
        got: list[tuple[float, Any]] = []
        self.node.create_subscription(msg_type, topic, lambda m: got.append((time.monotonic(), m)),
                                      qos_profile_sensor_data if sensor else 10)
        return got

    def publisher(self, msg_type: Any, topic: str):
        return self.node.create_publisher(msg_type, topic, 10)

    def wait_subscribed(self, pub, timeout_s: float = 15.0, n: int = 1) -> None:
        wait_until(lambda: pub.get_subscription_count() >= n, timeout_s, f"{n} subscriber(s) on {pub.topic_name}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        if self.context.ok():
            rclpy.shutdown(context=self.context)
        restore_env(self._old_env)
