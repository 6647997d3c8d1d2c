"""Who may talk to the learner: only allow-listed CURVE keys. Strangers get nothing, not even an error frame."""

from __future__ import annotations

import hashlib
import time
import uuid

import zmq

from robot import wire
from tests.link.conftest import wait_for
from tests.link.policy_fixtures import make_policy


def _client(endpoint: str, keys_or_plain) -> tuple[zmq.Context, zmq.Socket]:
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.linger = 0
    if keys_or_plain is not None:
        wire.configure_client(s, keys_or_plain)
    s.connect(endpoint)
    return ctx, s


def _try_everything(s: zmq.Socket, robot_id: str, wait_s: float = 1.0, enough: int | None = None) -> int:
    """HELLO, an episode upload, a policy fetch; returns how many replies came back within ``wait_s`` (or as soon as
    ``enough`` did)."""
    data = b"x" * 5000
    uid = str(uuid.uuid4())
    s.send_multipart(wire.encode(wire.HELLO, {"robot_id": robot_id, "schema": wire.schema_hash(), "wall_time": time.time()}))
    s.send_multipart(wire.encode(wire.EP_BEGIN, {"id": uid, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                                                 "chunk_size": 4096, "n_chunks": 2}))
    s.send_multipart(wire.encode(wire.CHUNK, {"id": uid, "idx": 0, "crc32": wire.crc32(data[:4096])}, data[:4096]))
    s.send_multipart(wire.encode(wire.POL_GET, {"version": "v1", "sha256": "0" * 64, "idx": 0}))
    replies = 0
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and (enough is None or replies < enough):
        if s.poll(100):
            s.recv_multipart()
            replies += 1
    return replies


def test_clients_without_an_allowed_key_get_nothing(make_server, keys, tmp_path):
    server = make_server()
    make_policy(tmp_path / "v1", "v1")
    server.publish_policy(tmp_path / "v1")
    # 1. a valid key pair that is not on the allow list
    ctx, s = _client(server.endpoint, keys.robot("stranger"))
    assert _try_everything(s, "stranger") == 0
    ctx.destroy(0)
    # 2. an allow-listed robot's *public* key is no help without its secret key
    impostor = wire.RobotKeys(public=keys.robot("robot-1").public, secret=keys.robot("stranger").secret,
                              learner_public=keys.robot().learner_public)
    ctx, s = _client(server.endpoint, impostor)
    assert _try_everything(s, "robot-1") == 0
    ctx.destroy(0)
    # 3. no encryption at all
    ctx, s = _client(server.endpoint, None)
    assert _try_everything(s, "robot-1") == 0
    ctx.destroy(0)
    c = server.counters()
    assert c["sessions"] == 0 and c["bytes_received"] == 0 and c["policy_bytes_sent"] == 0 and c["errors_sent"] == 0
    assert c["auth_denied"] >= 1
    assert not list((server.state_dir / "incoming").iterdir())
    # The allowed robot is served (the same code path, for contrast).
    ctx, s = _client(server.endpoint, keys.robot("robot-1"))
    assert _try_everything(s, "robot-1", wait_s=10, enough=3) >= 3  # WELCOME, POL_OFFER, EP_READY, ACK, ERROR unknown_policy
    ctx.destroy(0)


def test_a_robot_added_to_the_allow_list_is_admitted_without_a_restart(make_server, keys, tmp_path):
    import shutil

    allow = tmp_path / "allow"
    allow.mkdir()
    shutil.copy(keys.allow / "robot-1.key", allow)
    server = make_server(learner_keys=wire.LearnerKeys.load(keys.dir / "learner.key_secret", allow))
    ctx, s = _client(server.endpoint, keys.robot("robot-2"))
    assert _try_everything(s, "robot-2") == 0
    ctx.destroy(0)
    time.sleep(0.05)  # a new mtime for the folder
    shutil.copy(keys.allow / "robot-2.key", allow)
    ctx, s = _client(server.endpoint, keys.robot("robot-2"))
    assert _try_everything(s, "robot-2", wait_s=10, enough=1) >= 1  # admitted
    ctx.destroy(0)


def test_plaintext_is_explicit_and_warns(make_server, make_outbox, caplog, tmp_path):
    from tests.factories import random_episode

    with caplog.at_level("WARNING"):
        server = make_server(learner_keys=wire.PLAINTEXT)
        ob = make_outbox(server.endpoint, robot_keys=wire.PLAINTEXT)
    assert sum("PLAINTEXT" in r.message for r in caplog.records) == 2
    e = random_episode(seed=1)
    ob.put(e)
    assert ob.wait_committed([e.uuid], 20)
    import pytest

    ctx = zmq.Context()
    with pytest.raises(TypeError, match="keys"):
        wire.configure_client(ctx.socket(zmq.DEALER), None)
    ctx.destroy(0)


def test_a_robot_cannot_displace_another_robots_episode(make_server, make_outbox, tmp_path):
    # Issue 18 #7: robot-2 uploaded a forged episode under robot-1's uuid first; robot-1 then got COMMIT duplicate and
    # deleted the only copy of its real episode.
    import copy

    from learning.data.store import EpisodeStore
    from tests.factories import random_episode

    server = make_server()
    genuine = random_episode(seed=40, outcome="success")
    forged = copy.deepcopy(genuine)
    forged.outcome, forged.rewards[:] = "failure", 0.0
    forger = make_outbox(server.endpoint, robot="robot-2")
    forger.put(forged)
    assert forger.wait_committed([genuine.uuid], 20) and forger.counters()["episodes_committed"] == 1
    forger.put(forged)  # the same bytes again: an idempotent duplicate
    assert wait_for(lambda: forger.counters()["episodes_duplicate"] == 1, 20, "the duplicate COMMIT")

    robot = make_outbox(server.endpoint, robot="robot-1")
    robot.put(genuine)
    assert robot.wait_committed([genuine.uuid], 20)  # settled: not committed, set aside
    c = robot.counters()
    assert c["uuid_conflicts"] == 1 and c["episodes_committed"] == 0 and c["episodes_duplicate"] == 0
    assert c["last_error"].startswith(wire.ERR_CONFLICT)
    (kept,) = (robot.folder / "conflicts").glob("*.ep")
    assert kept.read_bytes() == genuine.to_bytes()  # the robot keeps its copy
    store = EpisodeStore(server.store.root, create=False)
    row = store.row(store.index_of(genuine.uuid))
    assert len(store) == 1 and row["robot_id"] == "robot-2"
    assert row["received_sha256"] == hashlib.sha256(forged.to_bytes()).hexdigest()
    assert server.counters()["uuid_conflicts"] == 1


def test_ep_end_for_a_stored_uuid_does_not_commit_another_robots_bytes(make_server, keys):
    # The robot that did not upload it must show its SHA-256 (EP_BEGIN) before it is told "stored".
    from tests.factories import random_episode
    from tests.link.test_uploads import RawRobot

    server = make_server()
    e = random_episode(seed=41)
    r2 = RawRobot(server.endpoint, keys.robot("robot-2"), "robot-2")
    r1 = RawRobot(server.endpoint, keys.robot("robot-1"), "robot-1")
    try:
        data = e.to_bytes()
        assert r2.begin(e.uuid, data).type == wire.EP_READY
        r2.chunks(e.uuid, data)
        r2.end(e.uuid)
        assert r2.recv(20).type == wire.COMMIT
        r2.end(e.uuid)  # the uploader asking again (a lost COMMIT): stored
        assert r2.recv().type == wire.COMMIT
        r1.end(e.uuid)
        m = r1.recv()
        assert m.type == wire.ERROR and m.header["code"] == wire.ERR_UNKNOWN_TRANSFER
        m = r1.begin(e.uuid, e.to_bytes("zlib"))  # other bytes
        assert m.type == wire.ERROR and m.header["code"] == wire.ERR_CONFLICT
        m = r1.begin(e.uuid, data)  # the very same bytes: a duplicate
        assert m.type == wire.COMMIT and m.header["duplicate"]
    finally:
        r1.close()
        r2.close()
