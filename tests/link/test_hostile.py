"""Hostile input: thousands of malformed frames against a running `wvl serve` while a well-behaved robot uploads.
Every malformed message gets an ERROR reply (with a machine-readable code) and a rate-limited log line; the good
robot's episodes all commit, byte-identical; the learner's memory and disk stay bounded."""

from __future__ import annotations

import random
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import msgpack
import pytest
import zmq

from learning.data.store import EpisodeStore
from robot import wire
from tests.factories import random_episode
from tests.link.conftest import FAST
from tests.link.test_crash import ROOT, _env

N_BAD = 4000


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def hostile_messages(rng: random.Random):
    """Yield (kind, frames) forever: one malformed message of a random kind each time."""
    sha = "0" * 64

    def uid() -> str:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    def hdr(d: dict) -> bytes:
        return msgpack.packb({"v": 1, **d})

    kinds = {
        "random_bytes": lambda: [rng.randbytes(rng.randint(0, 300))],
        "random_frames": lambda: [rng.randbytes(rng.randint(0, 64)) for _ in range(rng.randint(2, 6))],
        "unknown_type": lambda: [rng.choice([b"HAX", b"ADMIN", b"PICKLE", b"\x00\xff"]), hdr({})],
        "wrong_field_types": lambda: [wire.ACK, hdr({"id": uid(), "idx": rng.choice(["7", -1, 3.5, None, [1], True])})],
        "missing_fields": lambda: [wire.EP_BEGIN, hdr({"id": uid()})],
        "truncated_msgpack": lambda: [wire.EP_END, hdr({"id": uid()})[: rng.randint(1, 20)]],
        "not_a_map": lambda: [wire.EP_END, msgpack.packb([1, 2, 3])],
        "wrong_version": lambda: [wire.EP_END, msgpack.packb({"v": 2, "id": uid()})],
        "oversized_header": lambda: [wire.EP_END, msgpack.packb({"v": 1, "id": "x" * 70_000})],
        "lying_lengths": lambda: [wire.EP_BEGIN, hdr({"id": uid(), "size": 10_000, "sha256": sha, "chunk_size": 4096, "n_chunks": 9})],
        "huge_episode": lambda: [wire.EP_BEGIN, hdr({"id": uid(), "size": 1 << 40, "sha256": sha, "chunk_size": 4096,
                                                     "n_chunks": (1 << 40) // 4096})],
        "chunk_without_begin": lambda: [wire.CHUNK, hdr({"id": uid(), "idx": 0, "crc32": 0}), b"x" * 100],
        "end_without_begin": lambda: [wire.EP_END, hdr({"id": uid()})],
        "policy_not_offered": lambda: [wire.POL_GET, hdr({"version": "v9", "sha256": sha, "idx": 0})],
        "learner_only_type": lambda: [wire.COMMIT, hdr({"id": uid(), "index": 0})],
        "payload_on_bodyless": lambda: [wire.PING, hdr({"t": 1.0}), b"extra"],
    }
    names = sorted(kinds)
    while True:
        k = rng.choice(names)
        yield k, kinds[k]()


def transfer_errors(s: zmq.Socket, rng: random.Random) -> Counter:
    """Out-of-range chunks, wrong lengths, wrong CRC, and a complete upload with a wrong SHA-256: the stateful cases.
    Returns the reply types/codes seen."""
    data = rng.randbytes(10_000)
    u = str(uuid.uuid4())
    seen: Counter = Counter()

    def ask(frames):
        s.send_multipart(frames)
        assert s.poll(5000), f"no reply to {frames[0]!r}"
        m = wire.decode(s.recv_multipart())
        seen[m.header["code"] if m.type == wire.ERROR else m.name] += 1
        return m

    ask(wire.encode(wire.EP_BEGIN, {"id": u, "size": len(data), "sha256": "f" * 64, "chunk_size": 4096, "n_chunks": 3}))
    ask(wire.encode(wire.CHUNK, {"id": u, "idx": 7, "crc32": 0}, data[:4096]))                           # out of range
    ask(wire.encode(wire.CHUNK, {"id": u, "idx": 0, "crc32": wire.crc32(data[:100])}, data[:100]))       # short chunk
    ask(wire.encode(wire.CHUNK, {"id": u, "idx": 0, "crc32": 12345}, data[:4096]))                       # wrong CRC
    ask(wire.encode(wire.EP_END, {"id": u}))                                                              # incomplete
    for i in (2, 0, 1):                                                                                   # out of order
        ask(wire.encode(wire.CHUNK, {"id": u, "idx": i, "crc32": wire.crc32(data[i * 4096:(i + 1) * 4096])},
                        data[i * 4096:(i + 1) * 4096]))
    ask(wire.encode(wire.EP_END, {"id": u}))                                                              # wrong SHA
    return seen


@pytest.mark.slow
def test_malformed_flood_is_refused_while_a_good_robot_is_served(tmp_path, keys, make_outbox, ipc_endpoint):
    endpoint = ipc_endpoint
    store = tmp_path / "store"
    log_path = tmp_path / "server.log"
    with open(log_path, "w") as log_file:
        server = subprocess.Popen(
            [sys.executable, "-m", "learning.cli", "serve", f"endpoint={endpoint}", f"store={store}",
             f"keys.secret={keys.dir / 'learner.key_secret'}", f"keys.allow={keys.allow}", "video.codec=libx264rgb",
             "video.crf=0", "status_every_s=3600", "limits.max_chunk_mb=1"],
            stdout=subprocess.PIPE, stderr=log_file, text=True, env=_env(), cwd=ROOT)
    try:
        assert "serving on" in server.stdout.readline()
        good = make_outbox(endpoint, config=FAST)
        eps = [random_episode(seed=100 + i) for i in range(10)]

        ctx = zmq.Context()
        s = ctx.socket(zmq.DEALER)
        s.linger = 0
        wire.configure_client(s, keys.robot("robot-2"))  # an allow-listed but misbehaving robot
        s.connect(endpoint)
        s.send_multipart(wire.encode(wire.HELLO, {"robot_id": "robot-2", "schema": wire.schema_hash(), "wall_time": time.time()}))
        assert s.poll(10_000) and wire.decode(s.recv_multipart()).type == wire.WELCOME

        # Warm-up: the first commit loads the video encoder and pyarrow's writers (tens of MB, once); the RSS
        # bound below is about what the flood itself leaves behind, not about those one-time allocations.
        good.put(eps[0])
        assert good.wait_committed([eps[0].uuid], 60), f"good robot's first episode: {good.counters()}"

        rng = random.Random(99)
        gen = hostile_messages(rng)
        sent: Counter = Counter()
        codes: Counter = Counter()
        replies = 0
        rss_start = None
        for batch in range(N_BAD // 200):
            if batch == 2:
                rss_start = rss_kb(server.pid)
            if batch % 4 == 0 and eps:  # the good robot collects while the flood goes on
                good.put(eps[len(sent) % len(eps)])
            for _ in range(200):
                kind, frames = next(gen)
                s.send_multipart(frames)
                sent[kind] += 1
            got = 0
            while got < 200 and s.poll(5000):
                m = wire.decode(s.recv_multipart())
                assert m.type == wire.ERROR, f"a malformed message was answered with {m.name}"
                codes[m.header["code"]] += 1
                got += 1
            replies += got
        assert replies == sum(sent.values()) == N_BAD, (replies, sent)  # every malformed message got an error reply
        stateful = transfer_errors(s, rng)
        assert {wire.ERR_OUT_OF_RANGE, wire.ERR_CRC, wire.ERR_INCOMPLETE, wire.ERR_SHA256} <= set(stateful)
        # Frames above the learner's size limit never reach Python: ZeroMQ drops the connection (ZMQ_MAXMSGSIZE).
        for _ in range(3):
            s.send_multipart(wire.encode(wire.CHUNK, {"id": str(uuid.uuid4()), "idx": 0, "crc32": 0}, b"\0" * (2 << 20)))
        assert not s.poll(500)
        rss_end = rss_kb(server.pid)
        ctx.destroy(0)

        for e in eps:
            good.put(e)
        assert good.wait_committed([e.uuid for e in eps], 60), f"good robot starved: {good.counters()}"
        st = EpisodeStore(store, create=False)
        assert sorted(r["uuid"] for r in st.rows) == sorted(e.uuid for e in eps)
        for e in eps:
            assert st.read(st.index_of(e.uuid)).to_bytes() == e.to_bytes()
        assert good.counters()["rejects"] == 0

        assert {wire.ERR_MALFORMED, wire.ERR_UNKNOWN_TYPE, wire.ERR_BAD_FIELD, wire.ERR_VERSION, wire.ERR_TOO_LARGE,
                wire.ERR_UNKNOWN_TRANSFER, wire.ERR_UNKNOWN_POLICY} <= set(codes), codes
        assert rss_end - rss_start < 10_000, f"learner RSS grew {rss_end - rss_start} kB during the flood"
        assert len(list((store / ".link" / "incoming").iterdir())) <= 4  # no debris from thousands of fake uploads
        assert server.poll() is None  # still running
    finally:
        server.terminate()
        server.wait(30)
    log_text = log_path.read_text()
    assert "refused a message from robot-2" in log_text and "suppressed" in log_text  # logged, rate-limited
    assert len(log_text.splitlines()) < 400, "warnings are rate limited, not one per frame"
