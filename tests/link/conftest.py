"""Fixtures for the learner-link tests: CURVE keys on disk, fast link timings, servers and outboxes that close."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from learning.data.store import VideoSettings
from learning.server.config import ServerConfig
from learning.server.learner import LearnerServer
from robot import wire
from robot.link.outbox import LinkConfig, Outbox
from robot.link.policy_inbox import PolicyInbox
from tests.link.policy_fixtures import ort_validate

# Small chunks so that a 40 kB test episode travels as ~10 chunks; short timers so that recovery is quick.
FAST = LinkConfig(chunk_bytes=4096, window=4, ack_timeout_s=0.5, heartbeat_s=0.2, dead_after_s=1.5,
                  hello_backoff_s=(0.05, 0.4), retry_backoff_s=(0.1, 0.4), end_resend_s=1.0, min_free_bytes=0)
LOSSLESS = VideoSettings(codec="libx264rgb", crf=0)  # so the store gives back byte-identical episodes


@dataclass
class Keys:
    dir: Path
    allow: Path

    def learner(self) -> wire.LearnerKeys:
        return wire.LearnerKeys.load(self.dir / "learner.key_secret", self.allow)

    def robot(self, name: str = "robot-1", learner: str = "learner") -> wire.RobotKeys:
        return wire.RobotKeys.load(self.dir / f"{name}.key_secret", self.dir / f"{learner}.key")


@pytest.fixture(scope="session")
def keys(tmp_path_factory) -> Keys:
    d = tmp_path_factory.mktemp("keys")
    for name in ("learner", "robot-1", "robot-2", "stranger", "rogue-learner"):
        wire.generate_keypair(d, name)
    allow = d / "allow"
    allow.mkdir()
    for name in ("robot-1", "robot-2"):
        shutil.copy(d / f"{name}.key", allow)
    return Keys(d, allow)


@pytest.fixture
def make_server(tmp_path, keys) -> Callable[..., LearnerServer]:
    made: list[LearnerServer] = []

    def make(store: Path | None = None, endpoint: str = "tcp://127.0.0.1:*", learner_keys=None, **kw) -> LearnerServer:
        kw.setdefault("video", LOSSLESS)
        kw.setdefault("config", ServerConfig(stale_after_s=2.0))
        s = LearnerServer(store or tmp_path / "store", endpoint, learner_keys or keys.learner(), **kw).start()
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


@pytest.fixture
def make_outbox(tmp_path, keys) -> Callable[..., Outbox]:
    made: list[Outbox] = []

    def make(endpoint: str, folder: Path | None = None, robot: str = "robot-1", robot_keys=None, **kw) -> Outbox:
        kw.setdefault("config", FAST)
        o = Outbox(folder or tmp_path / robot / "outbox", endpoint, robot_keys or keys.robot(robot), robot_id=robot, **kw)
        made.append(o)
        return o

    yield make
    for o in made:
        o.close()


@pytest.fixture
def make_inbox(tmp_path) -> Callable[..., PolicyInbox]:
    def make(folder: Path | None = None, validate=ort_validate) -> PolicyInbox:
        return PolicyInbox(folder or tmp_path / "robot-1" / "policies", validate, min_free_bytes=0)

    return make


@pytest.fixture
def ipc_endpoint():
    """An ipc:// endpoint in a short private folder (ipc paths are limited to ~100 characters; pytest's tmp_path can
    be longer), removed afterwards. Stable across learner restarts, unlike a tcp port picked by the OS."""
    import tempfile

    d = tempfile.mkdtemp(prefix="wvl-")
    yield f"ipc://{d}/link.sock"
    shutil.rmtree(d, ignore_errors=True)


def wait_for(cond: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> object:
    """Poll ``cond`` until truthy (bounded); fail the test naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
