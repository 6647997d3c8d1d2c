"""ROS 2 graph tests: real node processes (``python -m robot.nodes.<node> --ros-args --params-file ...``) on a
private DDS domain over loopback (`robot.ros_env`), and an in-process rclpy probe that publishes and listens
on the same domain. Skipped, with the reason, only where rclpy cannot be imported (the ``[ros]`` extra)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

try:  # rclpy loads librmw_fastrtps_cpp at import: a half-installed ROS 2 fails here, not in a test
    from robot.nodes.probe import Probe, wait_until  # noqa: F401  (wait_until: for the test modules)

    RCLPY_ERROR = None
except ImportError as e:  # pragma: no cover - CI installs the [ros] extra
    RCLPY_ERROR = f"rclpy is not importable ({e}); install the [ros] extra: pip install -e '.[ros]'"

    def wait_until(*args, **kwargs):  # the tests are skipped; the name must still import
        raise RuntimeError(RCLPY_ERROR)

from robot.ros_env import private_domain_id
from robot.ros_graph import RosGraph

_salt = itertools.count()


def pytest_collection_modifyitems(config, items):
    if RCLPY_ERROR is None:
        return
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).parent == here:
            item.add_marker(pytest.mark.skip(reason=RCLPY_ERROR))


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
