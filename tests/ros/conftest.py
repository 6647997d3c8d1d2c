"""ROS 2 graph tests: real node processes (``python -m robot.nodes.<node> --ros-args --params-file ...``) on a
private DDS domain over loopback (`robot.ros_env`), and an in-process rclpy probe that publishes and listens
on the same domain. Skipped, with the reason, only where rclpy cannot be imported (the ``[ros]`` extra)."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

try:  # rclpy loads librmw_fastrtps_cpp at import: a half-installed ROS 2 fails here, not in a test
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data

    RCLPY_ERROR = None
except ImportError as e:  # pragma: no cover - CI installs the [ros] extra
    RCLPY_ERROR = f"rclpy is not importable ({e}); install the [ros] extra: pip install -e '.[ros]'"

from robot.ros_env import apply_ros_env, private_domain_id, restore_env
from robot.ros_graph import RosGraph

_salt = itertools.count()


def pytest_collection_modifyitems(config, items):
    if RCLPY_ERROR is None:
        return
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).parent == here:
            item.add_marker(pytest.mark.skip(reason=RCLPY_ERROR))


class Probe:
    """An rclpy node inside the test process, on the graph's domain, spun on its own thread."""

    def __init__(self, domain_id: int) -> None:
        self._old_env = apply_ros_env(domain_id)  # discovery range + the loopback profile, before the participant exists
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id, signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
        self.node = rclpy.create_node(f"test_probe_{domain_id}", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, name="ros-probe", daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set() and self.context.ok():
            self.executor.spin_once(timeout_sec=0.05)

    def listen(self, msg_type: Any, topic: str, sensor: bool = False) -> list[tuple[float, Any]]:
        """Every message on ``topic`` as (monotonic receive time, message), appended as they arrive."""
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


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str, graph: RosGraph | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if graph is not None:
            graph.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s:.0f} s" + ("\n" + graph.tails() if graph else ""))
        time.sleep(0.02)


@pytest.fixture
def domain_id() -> int:
    return private_domain_id(next(_salt))


@pytest.fixture
def graph(tmp_path, domain_id):
    with RosGraph(domain_id, tmp_path / "graph") as g:
        yield g


@pytest.fixture
def probe(domain_id):
    p = Probe(domain_id)
    yield p
    p.close()
