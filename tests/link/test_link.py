"""Episodes up, end to end over real ZeroMQ CURVE sockets on loopback: commit, idempotency, backpressure, resume,
bad input (disk full either side, clock skew, two robots with one id, corrupted spool, invalid episode)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import time
import uuid

import pytest
import zmq

from learning.data.store import EpisodeStore, StoreError
from learning.server.config import ServerConfig
from robot import wire
from robot.link.outbox import LinkConfig, Outbox, OutboxFullError
from tests.factories import random_episode
from tests.link.conftest import FAST, LOSSLESS, wait_for


def test_episodes_are_committed_byte_identical_and_announced(make_server, make_outbox):
    seen = []
    server = make_server(on_episode=lambda index, row: seen.append((index, row["uuid"])))
    ob = make_outbox(server.endpoint)
    eps = [random_episode(seed=i, outcome=o) for i, o in enumerate(["success", "near_success", "failure"])]
    for e in eps:
        ob.put(e)
    assert ob.wait_committed([e.uuid for e in eps], timeout=20)
    assert ob.pending() == [] and not list(ob.folder.glob("*.ep"))  # deleted only after COMMIT
    store = EpisodeStore(server.store.root, create=False)
    assert len(store) == 3
    for e in eps:
        assert store.read(store.index_of(e.uuid)).to_bytes() == e.to_bytes()
    assert sorted(u for _, u in seen) == sorted(e.uuid for e in eps)
    c, sc = ob.counters(), server.counters()
    assert c["episodes_committed"] == 3 and c["episodes_put"] == 3 and c["bytes_sent"] >= sum(len(e.to_bytes()) for e in eps)
    assert sc["episodes_committed"] == 3 and sc["bytes_received"] == sum(len(e.to_bytes()) for e in eps) and sc["rejects"] == 0
    assert server.robot_status()["robot-1"]["episodes"] == 3
    assert server.robot_status()["robot-1"]["connected"]


def test_resend_after_lost_commit_does_not_duplicate(make_server, make_outbox, tmp_path):
    server = make_server()
    e = random_episode(seed=3)
    ob = make_outbox(server.endpoint)
    ob.put(e)
    assert ob.wait_committed([e.uuid], 20)
    ob.close()
    # The same episode again (as after a COMMIT lost on the way): committed as a duplicate, stored once.
    ob2 = make_outbox(server.endpoint, folder=tmp_path / "again")
    ob2.put(e)
    assert ob2.wait_committed([e.uuid], 20)
    assert ob2.counters()["episodes_duplicate"] == 1
    assert len(EpisodeStore(server.store.root, create=False)) == 1
    assert ob2.put(e) == e.uuid  # put of a committed uuid: queued again, harmless
    assert ob2.wait_committed([e.uuid], 20)
    assert len(EpisodeStore(server.store.root, create=False)) == 1


def test_robot_keeps_collecting_while_learner_is_away_and_drains_later(make_server, make_outbox, tmp_path):
    port = _free_port()
    ob = make_outbox(f"tcp://127.0.0.1:{port}")
    eps = [random_episode(seed=10 + i) for i in range(4)]
    for e in eps:
        ob.put(e)  # returns at once: the learner does not exist yet
    time.sleep(0.5)
    assert ob.pending() == [e.uuid for e in eps] and not ob.counters()["connected"]
    ob.close()  # the robot restarts too; the spool survives
    ob2 = make_outbox(f"tcp://127.0.0.1:{port}")
    assert ob2.pending() == [e.uuid for e in eps]  # oldest first
    server = make_server(endpoint=f"tcp://127.0.0.1:{port}")
    assert ob2.wait_committed([e.uuid for e in eps], 30)
    rows = EpisodeStore(server.store.root, create=False).rows
    assert [r["uuid"] for r in rows] == [e.uuid for e in eps]  # in collection order


def test_upload_resumes_after_learner_restart_mid_episode(make_server, make_outbox, tmp_path):
    port = _free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    big = random_episode(T=60, H=48, W=48, seed=5)  # ~420 kB = ~100 chunks of 4 kB
    slow = LinkConfig(**{**FAST.__dict__, "window": 1})
    server = make_server(endpoint=endpoint, config=ServerConfig(state_every_chunks=4, stale_after_s=2.0))
    ob = make_outbox(endpoint, config=slow)
    ob.put(big)
    wait_for(lambda: server.counters()["chunks_received"] >= 30, 20, "30 chunks")
    server.close()
    got_before = server.counters()["chunks_received"]
    state = json.loads(next((server.state_dir / "incoming").glob("*.state")).read_text())
    assert state["sha256"] == hashlib.sha256(big.to_bytes()).hexdigest()
    server2 = make_server(endpoint=endpoint, config=ServerConfig(stale_after_s=2.0))
    assert ob.wait_committed([big.uuid], 30)
    # The second run did not receive everything again: the persisted bitmap was honoured.
    n = wire.n_chunks(len(big.to_bytes()), FAST.chunk_bytes)
    assert server2.counters()["chunks_received"] <= n - got_before + 4 * 2
    assert EpisodeStore(server2.store.root, create=False).read(0).to_bytes() == big.to_bytes()


def test_learner_disk_full_keeps_the_episode_and_retries(make_server, make_outbox):
    server = make_server(config=ServerConfig(disk_reserve_bytes=1 << 60))  # "no room at all"
    ob = make_outbox(server.endpoint)
    e = random_episode(seed=7)
    ob.put(e)
    wait_for(lambda: server.counters()["disk_full"] >= 2, 10, "disk_full refusals")
    assert ob.pending() == [e.uuid] and ob.counters()["last_error"].startswith("disk_full")
    assert len(list(ob.folder.glob("*.ep"))) == 1  # nothing deleted that was not committed
    server.close()
    server2 = make_server(endpoint=server.endpoint)  # space freed
    assert ob.wait_committed([e.uuid], 20)
    assert server2.counters()["episodes_committed"] == 1


def test_store_failure_on_the_learner_is_retried(make_server, make_outbox, monkeypatch):
    server = make_server()
    real_append = server.store.append
    calls = []

    def flaky(ep, **provenance):
        calls.append(ep.uuid)
        if len(calls) == 1:
            raise StoreError("could not append: No space left on device") from OSError(errno.ENOSPC, "No space left on device")
        return real_append(ep, **provenance)

    monkeypatch.setattr(server.store, "append", flaky)
    ob = make_outbox(server.endpoint)
    e = random_episode(seed=8)
    ob.put(e)
    assert ob.wait_committed([e.uuid], 20)
    assert len(calls) == 2 and server.counters()["store_errors"] == 1 and server.counters()["disk_full"] == 1


def test_robot_disk_full_refuses_put_and_loses_nothing(make_server, tmp_path, keys, monkeypatch):
    ob = Outbox(tmp_path / "ob", "tcp://127.0.0.1:1", keys.robot(), config=LinkConfig(**{**FAST.__dict__, "min_free_bytes": 1 << 60}))
    try:
        with pytest.raises(OutboxFullError, match="NOT saved"):
            ob.put(random_episode(seed=1))
        assert ob.pending() == []
    finally:
        ob.close()
    ob = Outbox(tmp_path / "ob", "tcp://127.0.0.1:1", keys.robot(), config=LinkConfig(**{**FAST.__dict__, "max_spool_bytes": 60_000}))
    try:
        first = ob.put(random_episode(seed=1))
        with pytest.raises(OutboxFullError, match="max_spool_bytes"):
            ob.put(random_episode(seed=2))
        # ENOSPC from the file system mid-write (a full disk cannot be had here: the write fails like one).
        monkeypatch.setattr("builtins.open", _failing_open(errno.ENOSPC))
        with pytest.raises(OutboxFullError, match="disk full"):
            ob.put(random_episode(seed=3, T=2))
        monkeypatch.undo()
        assert ob.pending() == [first] and len(list(ob.folder.glob("*.ep"))) == 1
        assert not list(ob.folder.glob(".*.tmp"))  # the half-written file is gone, the saved one untouched
    finally:
        ob.close()


def _failing_open(err: int):
    import builtins

    real_open = builtins.open

    class Full:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            raise OSError(err, os.strerror(err))

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

    def fake_open(path, mode="r", *a, **kw):
        f = real_open(path, mode, *a, **kw)
        return Full(f) if "w" in mode and str(path).endswith(".tmp") else f

    return fake_open


def test_clock_skew_is_measured_and_harmless(make_server, make_outbox):
    server = make_server()
    ob = make_outbox(server.endpoint, clock=lambda: time.time() + 3600.0)
    e = random_episode(seed=9)
    ob.put(e)
    assert ob.wait_committed([e.uuid], 20)
    assert server.robot_status()["robot-1"]["clock_skew_s"] == pytest.approx(3600, abs=5)
    wait_for(lambda: abs((ob.counters()["clock_offset_s"] or 0) + 3600) < 5, 5, "robot-side clock offset")


def test_two_robots_with_one_id(make_server, make_outbox, tmp_path):
    server = make_server()
    a = make_outbox(server.endpoint, folder=tmp_path / "a")
    wait_for(lambda: a.counters()["connected"], 10, "robot A connected")
    b = make_outbox(server.endpoint, folder=tmp_path / "b")  # same key, same id, another process/machine
    wait_for(lambda: server.counters()["by_code"].get(wire.ERR_DUPLICATE_ROBOT, 0) >= 1, 10, "duplicate refused")
    e = random_episode(seed=11)
    b.put(e)
    time.sleep(0.5)
    assert b.pending() == [e.uuid] and not b.counters()["connected"]
    ea = random_episode(seed=12)
    a.put(ea)
    assert a.wait_committed([ea.uuid], 20)  # the first robot is not disturbed
    a.close()  # says BYE: the id is free
    assert b.wait_committed([e.uuid], 20)
    assert server.robot_status()["robot-1"]["connected"]


def test_robot_claiming_another_robots_id_is_refused(make_server, keys, tmp_path):
    server = make_server()
    ob = Outbox(tmp_path / "x", server.endpoint, keys.robot("robot-2"), robot_id="robot-2", config=FAST)
    try:
        wait_for(lambda: ob.counters()["connected"], 10, "robot-2 connected with its own key")
    finally:
        ob.close()
    with pytest.raises(ValueError, match="differs from the CURVE key"):
        Outbox(tmp_path / "y", server.endpoint, keys.robot("robot-2"), robot_id="robot-1")
    # A hand-made client that lies about its id gets ERROR identity.
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    wire.configure_client(s, keys.robot("robot-2"))
    s.connect(server.endpoint)
    s.send_multipart(wire.encode(wire.HELLO, {"robot_id": "robot-1", "schema": wire.schema_hash(), "wall_time": time.time()}))
    assert s.poll(5000)
    m = wire.decode(s.recv_multipart())
    assert m.type == wire.ERROR and m.header["code"] == wire.ERR_IDENTITY
    ctx.destroy(0)


def test_corrupted_spool_file_is_set_aside_not_sent(make_server, make_outbox, tmp_path):
    folder = tmp_path / "spool"
    ob = make_outbox("tcp://127.0.0.1:1", folder=folder)
    e = random_episode(seed=13)
    ob.put(e)
    ob.close()
    (path,) = folder.glob("*.ep")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # bit rot on the robot's disk
    path.write_bytes(bytes(data))
    server = make_server()
    ob2 = make_outbox(server.endpoint, folder=folder)
    assert ob2.wait_committed([e.uuid], 20)
    assert ob2.counters()["episodes_rejected"] == 1 and list((folder / "rejected").glob("*.ep"))
    assert server.counters()["sha_errors"] == 1 and len(EpisodeStore(server.store.root, create=False)) == 0


def test_bytes_that_are_not_an_episode_are_refused_and_kept(make_server, make_outbox, tmp_path):
    folder = tmp_path / "spool"
    folder.mkdir()
    junk = b"not an episode at all" * 100
    uid = str(uuid.uuid4())
    (folder / f"{1:020d}-{uid}-{hashlib.sha256(junk).hexdigest()}.ep").write_bytes(junk)
    server = make_server()
    ob = make_outbox(server.endpoint, folder=folder)
    assert ob.pending() == [uid]
    assert ob.wait_committed([uid], 20)
    assert ob.counters()["episodes_rejected"] == 1 and (folder / "rejected").is_dir()
    assert server.counters()["bad_episodes"] == 1
    assert (server.state_dir / "rejected" / f"{uid}.episode").read_bytes() == junk


def test_config_errors_name_the_field(tmp_path, keys):
    with pytest.raises(ValueError, match="window"):
        LinkConfig(window=0)
    with pytest.raises(ValueError, match="chunk_bytes"):
        LinkConfig(chunk_bytes=10)
    with pytest.raises(ValueError, match="max_chunk_bytes"):
        ServerConfig(max_chunk_bytes=1)
    with pytest.raises(ValueError, match="robot_id"):
        Outbox(tmp_path, "tcp://127.0.0.1:1", wire.PLAINTEXT, robot_id="bad id!")
    with pytest.raises(OSError, match="cannot bind"):
        from learning.server.learner import LearnerServer

        LearnerServer(tmp_path / "s", "tcp://256.0.0.1:1", keys.learner(), video=LOSSLESS)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_bug_on_either_side_is_logged_and_survived(make_server, make_outbox, monkeypatch, caplog):
    from learning.server.learner import LearnerServer

    server = make_server()
    boom = {"server": 0, "robot": 0}

    def bad_ping(self, sess, msg):
        boom["server"] += 1
        raise RuntimeError("bug in a handler")

    monkeypatch.setitem(LearnerServer._handlers, wire.PING, bad_ping)
    ob = make_outbox(server.endpoint)
    real = ob._on_frames

    def flaky(frames):
        if boom["robot"] == 0:
            boom["robot"] += 1
            raise RuntimeError("bug in the robot's I/O step")
        return real(frames)

    ob._on_frames = flaky
    e = random_episode(seed=21)
    with caplog.at_level("ERROR"):
        ob.put(e)
        assert ob.wait_committed([e.uuid], 20)
        wait_for(lambda: boom["server"] >= 2, 10, "heartbeats hitting the broken handler")
        e2 = random_episode(seed=22)
        ob.put(e2)
        assert ob.wait_committed([e2.uuid], 20)  # the learner still serves
    assert boom["robot"] == 1
    assert any(r.exc_info and "bug in a handler" in str(r.exc_info[1]) for r in caplog.records)
    assert any("outbox I/O error" in r.message for r in caplog.records)
