"""Uploads the learner holds: open uploads beyond the LRU bound, partial uploads on disk (expiry, count and byte
bounds). A raw DEALER plays the robot, so that each step of the conversation is explicit."""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from typing import Callable

import zmq

from learning.server.config import ServerConfig
from robot import wire
from tests.factories import random_episode
from tests.link.conftest import wait_for

CHUNK = 4096


class RawRobot:
    """An allow-listed robot speaking the wire protocol by hand."""

    def __init__(self, endpoint: str, robot_keys: wire.RobotKeys, robot_id: str = "robot-1") -> None:
        self.ctx = zmq.Context()
        self.s = self.ctx.socket(zmq.DEALER)
        self.s.linger = 0
        wire.configure_client(self.s, robot_keys)
        self.s.connect(endpoint)
        self.s.send_multipart(wire.encode(wire.HELLO, {"robot_id": robot_id, "schema": wire.schema_hash(), "wall_time": time.time()}))
        assert self.recv().type == wire.WELCOME

    def recv(self, timeout_s: float = 5.0, skip: tuple[bytes, ...] = (wire.POL_OFFER, wire.PONG)) -> wire.Message:
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            if not self.s.poll(int(left * 1000) + 1):
                break
            m = wire.decode(self.s.recv_multipart())
            if m.type not in skip:
                return m
        raise AssertionError(f"no reply within {timeout_s} s")

    def begin(self, uid: str, data: bytes, size: int | None = None) -> wire.Message:
        size = len(data) if size is None else size
        self.s.send_multipart(wire.encode(wire.EP_BEGIN, {"id": uid, "size": size, "sha256": hashlib.sha256(data).hexdigest(),
                                                          "chunk_size": CHUNK, "n_chunks": wire.n_chunks(size, CHUNK)}))
        return self.recv()

    def chunks(self, uid: str, data: bytes, idx: range | None = None) -> None:
        for i in idx if idx is not None else range(wire.n_chunks(len(data), CHUNK)):
            part = data[i * CHUNK:(i + 1) * CHUNK]
            self.s.send_multipart(wire.encode(wire.CHUNK, {"id": uid, "idx": i, "crc32": wire.crc32(part)}, part))
            m = self.recv()
            assert m.type == wire.ACK and m.header["idx"] == i, m

    def end(self, uid: str) -> None:
        self.s.send_multipart(wire.encode(wire.EP_END, {"id": uid}))

    def close(self) -> None:
        self.ctx.destroy(0)


def _blocking_append(server) -> tuple[threading.Event, Callable]:
    """Make the learner's store writes wait for ``release`` (so that uploads stay 'ingesting')."""
    release = threading.Event()
    real = server.store.append

    def append(ep, *a, **kw):
        assert release.wait(30), "test never released the store"
        return real(ep, *a, **kw)

    server.store.append = append
    return release, real


def test_ep_begin_is_answered_when_every_open_upload_is_ingesting(make_server, keys):
    # Issue 18 #6: with max_uploads uploads ingesting, a new EP_BEGIN evicted itself (KeyError) and got no reply.
    server = make_server(config=ServerConfig(stale_after_s=2.0, max_uploads=2))
    release, _ = _blocking_append(server)
    r = RawRobot(server.endpoint, keys.robot())
    try:
        eps = [random_episode(seed=60 + i) for i in range(3)]
        blobs = [e.to_bytes() for e in eps]
        for e, data in zip(eps[:2], blobs[:2]):
            assert r.begin(e.uuid, data).type == wire.EP_READY
            r.chunks(e.uuid, data)
            r.end(e.uuid)  # both now ingesting (the first one blocked in the store, the second queued)
        m = r.begin(eps[2].uuid, blobs[2])
        assert m.type == wire.EP_READY and m.header["id"] == eps[2].uuid
        r.chunks(eps[2].uuid, blobs[2])
        release.set()
        r.end(eps[2].uuid)
        commits = {r.recv(20).header["id"] for _ in range(3)}
        assert commits == {e.uuid for e in eps}
        assert server.counters()["episodes_committed"] == 3
    finally:
        release.set()
        r.close()


def test_a_bug_in_a_handler_still_gets_an_error_reply(make_server, keys, monkeypatch):
    from learning.server.learner import LearnerServer

    def broken(self, sess, msg):
        raise RuntimeError("bug in EP_BEGIN")

    monkeypatch.setitem(LearnerServer._handlers, wire.EP_BEGIN, broken)
    server = make_server()
    r = RawRobot(server.endpoint, keys.robot())
    try:
        uid = str(uuid.uuid4())
        m = r.begin(uid, b"x" * 5000)
        assert m.type == wire.ERROR and m.header["code"] == wire.ERR_INTERNAL and m.header["id"] == uid
        assert m.header["ref"] == "EP_BEGIN"
    finally:
        r.close()


def test_episodes_decoding_past_the_learners_limit_are_refused(make_server, keys):
    # Issue 18 #8: the learner bounds what an upload may inflate to (serve.yaml limits.max_decoded_mb).
    e = random_episode(T=40, H=64, W=64, seed=70)
    data = e.to_bytes("zlib")  # ~150 kB on the wire, ~500 kB decoded
    server = make_server(config=ServerConfig(stale_after_s=2.0, max_decoded_bytes=200_000))
    r = RawRobot(server.endpoint, keys.robot())
    try:
        assert r.begin(e.uuid, data).type == wire.EP_READY
        r.chunks(e.uuid, data)
        r.end(e.uuid)
        m = r.recv(10)
        assert m.type == wire.ERROR and m.header["code"] == wire.ERR_BAD_EPISODE and "over the 200000 byte limit" in m.header["message"]
        assert len(server.store) == 0 and server.counters()["bad_episodes"] == 1
    finally:
        r.close()


def _partial_files(server) -> set[str]:
    return {p.name for p in server.ingest.incoming.iterdir() if p.suffix in (".part", ".state")}


def test_stalled_partial_uploads_expire_unless_a_connected_robot_is_sending_them(make_server, keys):
    # Issue 18 #9: partials of robots that went away stayed in .link/incoming forever.
    server = make_server(config=ServerConfig(stale_after_s=0.5, partial_ttl_s=1.0))
    gone, live = RawRobot(server.endpoint, keys.robot("robot-1"), "robot-1"), RawRobot(server.endpoint, keys.robot("robot-2"), "robot-2")
    try:
        a, b = bytes(range(256)) * 64, bytes(range(255, -1, -1)) * 64  # 16 kB each, 4 chunks
        ua, ub = str(uuid.uuid4()), str(uuid.uuid4())
        for r, u, data in ((gone, ua, a), (live, ub, b)):
            assert r.begin(u, data).type == wire.EP_READY
            r.chunks(u, data, range(2))
        gone.close()  # no BYE: its session just goes silent
        wait_for(lambda: f"{ua}.part" in _partial_files(server), 5, "robot-1's partial on disk")
        deadline = time.monotonic() + 3.5
        while time.monotonic() < deadline:  # robot-2 stays connected (pings) but sends nothing more for 3 TTLs
            live.s.send_multipart(wire.encode(wire.PING, {"t": 0.0}))
            time.sleep(0.1)
        files = _partial_files(server)
        assert not any(f.startswith(ua) for f in files), files
        assert f"{ub}.part" in files
        live.chunks(ub, b, range(2, 4))  # and it finishes
        live.end(ub)
        m = live.recv(10)
        assert m.type == wire.ERROR and m.header["code"] == wire.ERR_BAD_EPISODE  # not an episode, but received whole
    finally:
        live.close()


def test_partial_uploads_are_bounded_in_bytes(make_server, keys):
    server = make_server(config=ServerConfig(stale_after_s=2.0, max_episode_bytes=100_000, max_partial_bytes=100_000))
    r1, r2 = RawRobot(server.endpoint, keys.robot("robot-1"), "robot-1"), RawRobot(server.endpoint, keys.robot("robot-2"), "robot-2")
    try:
        data = [bytes([i]) * 60_000 for i in range(3)]
        ids = [str(uuid.uuid4()) for _ in range(3)]
        assert r1.begin(ids[0], data[0]).type == wire.EP_READY
        r1.chunks(ids[0], data[0], range(1))
        r1.s.send_multipart(wire.encode(wire.BYE))
        wait_for(lambda: "robot-1" not in server._by_robot, 5, "robot-1's goodbye")
        # robot-2's 60 kB do not fit next to robot-1's 60 kB: the departed robot's partial makes room.
        assert r2.begin(ids[1], data[1]).type == wire.EP_READY
        r2.chunks(ids[1], data[1], range(1))
        assert not any(f.startswith(ids[0]) for f in _partial_files(server))
        # robot-1 is back with another episode while robot-2 is still sending its own: no room, robot-2's is kept.
        r1.s.send_multipart(wire.encode(wire.HELLO, {"robot_id": "robot-1", "schema": wire.schema_hash(), "wall_time": time.time()}))
        assert r1.recv().type == wire.WELCOME
        m = r1.begin(ids[2], data[2])
        assert m.type == wire.ERROR and m.header["code"] == wire.ERR_BUSY and m.header["id"] == ids[2]
        assert f"{ids[1]}.part" in _partial_files(server)
    finally:
        r1.close()
        r2.close()
