"""Crash tests: SIGKILL the learner process (then the robot process) at random moments during 20+ uploads and
restart it; every episode ends committed exactly once and byte-identical."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from learning.data.store import EpisodeStore
from tests.link.conftest import FAST, LOSSLESS
from tests.link.robot_proc import episode

ROOT = Path(__file__).resolve().parents[2]
N_EPISODES = 24


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "WVL_LOG_LEVEL": "WARNING"}


def start_learner(store: Path, endpoint: str, keys) -> subprocess.Popen:
    args = [sys.executable, "-m", "learning.cli", "serve", f"endpoint={endpoint}", f"store={store}",
            f"keys.secret={keys.dir / 'learner.key_secret'}", f"keys.allow={keys.allow}", "video.codec=libx264rgb",
            "video.crf=0", "status_every_s=3600"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=_env(), cwd=ROOT)
    line = proc.stdout.readline()  # blocks until the server is bound (or died)
    assert "serving on" in line, f"wvl serve did not start: {line!r}"
    return proc


def _run_until(committed, more: int, max_s: float) -> None:
    """Let the victim run for ``max_s`` seconds or until ``more`` further episodes are committed, whichever first."""
    target = committed() + more
    deadline = time.monotonic() + max_s
    while time.monotonic() < deadline and committed() < target:
        time.sleep(0.005)


def check_store(store: Path, n: int) -> None:
    s = EpisodeStore(store, create=False)
    uids = [r["uuid"] for r in s.rows]
    assert len(uids) == len(set(uids)) == n, f"{len(uids)} rows, {len(set(uids))} distinct, want {n}"
    for i in range(n):
        ep = episode(i)
        assert s.read(s.index_of(ep.uuid)).to_bytes() == ep.to_bytes(), f"episode {i} differs"


@pytest.mark.slow
def test_learner_killed_at_random_moments(tmp_path, keys, make_outbox, ipc_endpoint):
    rng = random.Random(1234)
    endpoint = ipc_endpoint
    store = tmp_path / "store"
    ob = make_outbox(endpoint, config=FAST)
    eps = [episode(i) for i in range(N_EPISODES)]
    for e in eps:
        ob.put(e)
    kills_during_upload = 0
    for _ in range(6):
        proc = start_learner(store, endpoint, keys)
        # Kill at a random moment, but before it commits more than a few episodes, so that every life of the
        # learner dies with uploads in flight however fast this machine is.
        _run_until(lambda: N_EPISODES - len(ob.pending()), rng.randint(1, 3), rng.uniform(0.05, 1.0))
        busy = bool(ob.pending())
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        kills_during_upload += busy
    assert kills_during_upload >= 3, "the learner finished too fast to be killed mid-upload"
    proc = start_learner(store, endpoint, keys)
    try:
        assert ob.wait_committed([e.uuid for e in eps], 90), f"still pending: {len(ob.pending())}"
    finally:
        proc.terminate()
        proc.wait(30)
    assert not list(ob.folder.glob("*.ep"))
    check_store(store, N_EPISODES)


@pytest.mark.slow
def test_robot_killed_at_random_moments(tmp_path, keys, make_server):
    rng = random.Random(4321)
    server = make_server(video=LOSSLESS)
    folder = tmp_path / "robot"
    folder.mkdir()
    args = [sys.executable, "-m", "tests.link.robot_proc", str(folder), server.endpoint, str(keys.dir), str(N_EPISODES)]
    kills = 0
    for _ in range(6):
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=_env(), cwd=ROOT)
        _run_until(lambda: server.counters()["episodes_committed"], rng.randint(1, 3), rng.uniform(0.3, 1.5))
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        kills += 1
    assert kills >= 3
    assert server.counters()["episodes_committed"] < N_EPISODES, "the robot finished before it could be killed enough"
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=_env(), cwd=ROOT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "all committed" in out, out
    assert not list((folder / "outbox").glob("*.ep"))
    check_store(server.store.root, N_EPISODES)
