"""Learner-link benchmark on loopback: episode upload vs a raw ZeroMQ PUSH/PULL of the same bytes, policy push time.

    .venv/bin/python bench/link.py                 # 10 MB and 200 MB episodes, 50 MB policy (about 1-2 minutes)
    .venv/bin/python bench/link.py --sizes-mb 10 --policy-mb 5 --modes plaintext   # quick

For each episode size and transport mode (plaintext, CURVE) it measures, in the same run and the same topology
(robot end in this process, learner end in a child process):

- raw:     PUSH 1 MiB frames of the serialised episode to a PULL in a child process, until it has every byte;
- upload:  `Outbox.put` -> EP_BEGIN, chunks (CRC32 each, window 16) -> `wvl serve` writes them to disk and
           hashes them in order -> EP_END -> SHA-256 compared, fsync. ``upload_s`` = first EP_BEGIN -> COMMIT minus
           the store write that the learner measures and reports in COMMIT (``store_s``: Episode.from_bytes + the
           store's atomic append with video encoding), i.e. the time to a verified, durable copy on the learner.
           ``put_s`` = serialise + SHA-256 + fsync on the robot (before the upload starts).

Policy push: `LearnerServer.publish_policy` of an artifact of the given size until the robot's inbox holds it
*ready*: snapshot + hash on the learner, download, per-file SHA-256, manifest check, onnxruntime smoke inference.

Last line: ``upload_vs_raw=… upload_mb_s=… raw_mb_s=… policy_push_s=…`` for the largest episode in plaintext mode
(the raw baseline is plaintext; the CURVE rows compare CURVE upload with CURVE raw).
"""

from __future__ import annotations

import argparse
import copy
import logging
import statistics
import uuid
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robot import wire  # noqa: E402
from rich.console import Console  # noqa: E402

from robot.console import table  # noqa: E402
from robot.episode import Episode  # noqa: E402
from robot.link.outbox import LinkConfig, Outbox  # noqa: E402
from robot.link.policy_inbox import PolicyInbox  # noqa: E402

RAW_RECEIVER = r"""
import sys, zmq
ctx = zmq.Context()
pull = ctx.socket(zmq.PULL)
done = ctx.socket(zmq.PUSH)
keys = sys.argv[4:]
if keys:  # CURVE server: public, secret
    pull.curve_server = True; pull.curve_publickey = keys[0].encode(); pull.curve_secretkey = keys[1].encode()
pull.bind(sys.argv[1]); done.connect(sys.argv[2])
done.send(b"ready")
want, got = int(sys.argv[3]), 0
while got < want:
    got += len(pull.recv(copy=False).buffer)
done.send(b"done")
"""


def make_episode(mb: float, seed: int = 0) -> Episode:
    """An episode of about ``mb`` MB serialised (``codec="raw"``): 256x256 RGB frames of a smooth scene drifting by a
    pixel per step plus sensor noise (camera-like, so the learner's video encoder does camera-like work), 10 Hz."""
    frame = 256 * 256 * 3
    T = max(2, int(mb * 1e6 / frame))
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:256, 0:512]
    scene = np.stack([128 + 100 * np.sin(xx / 23.0), 128 + 90 * np.cos(yy / 17.0), (xx + yy) % 256], -1).astype(np.int16)
    images = np.empty((T, 256, 256, 3), np.uint8)
    for t in range(T):
        view = scene[:, t % 256:t % 256 + 256] + rng.integers(-3, 4, (256, 256, 3), dtype=np.int16)
        images[t] = np.clip(view, 0, 255)
    return Episode(task="pick up the red cube", fps=10.0, timestamps=np.arange(T) * 0.1, images={"front": images},
                   joints=rng.normal(size=(T, 9)), ee_pose=rng.normal(size=(T, 7)), gripper=rng.uniform(0, 1, T),
                   actions=rng.uniform(-1, 1, (T, 7)), rewards=np.zeros(T), interventions=np.zeros(T, bool))


def hash_speeds() -> tuple[float, float]:
    """Single-thread SHA-256 and CRC-32 MB/s on this CPU: the learner must do both over every byte."""
    import hashlib

    buf = os.urandom(1 << 20)
    h = hashlib.sha256()
    t0 = time.perf_counter()
    for _ in range(100):
        h.update(buf)
    sha = 100 * len(buf) / 1e6 / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for _ in range(100):
        wire.crc32(buf)
    return sha, 100 * len(buf) / 1e6 / (time.perf_counter() - t0)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raw_push(data: bytes, curve: tuple[bytes, bytes] | None) -> float:
    """Seconds to move ``data`` through PUSH/PULL to a child process (1 MiB frames)."""
    ctx = zmq.Context()
    done = ctx.socket(zmq.PULL)
    done_port = done.bind_to_random_port("tcp://127.0.0.1")
    ep = f"tcp://127.0.0.1:{free_port()}"
    args = [sys.executable, "-c", RAW_RECEIVER, ep, f"tcp://127.0.0.1:{done_port}", str(len(data))]
    push = ctx.socket(zmq.PUSH)
    if curve is not None:
        server_pub, server_sec = curve
        args += [server_pub.decode(), server_sec.decode()]
        cpub, csec = zmq.curve_keypair()
        push.curve_serverkey, push.curve_publickey, push.curve_secretkey = server_pub, cpub, csec
    proc = subprocess.Popen(args)
    try:
        assert done.recv() == b"ready"
        push.connect(ep)
        mv = memoryview(data)
        t0 = time.perf_counter()
        for off in range(0, len(data), 1 << 20):
            push.send(mv[off:off + (1 << 20)], copy=False)
        assert done.recv() == b"done"
        return time.perf_counter() - t0
    finally:
        proc.wait(30)
        ctx.destroy(0)


def start_server(tmp: Path, endpoint: str, curve: bool) -> subprocess.Popen:
    args = [sys.executable, "-m", "learning.cli", "serve", f"endpoint={endpoint}", f"store={tmp / 'store'}", "status_every_s=3600"]
    args += [f"keys.secret={tmp / 'keys' / 'learner.key_secret'}", f"keys.allow={tmp / 'allow'}"] if curve else ["keys.plaintext=true"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "WVL_LOG_LEVEL": "WARNING"})
    line = proc.stdout.readline()
    if "serving on" not in line:
        proc.kill()
        raise RuntimeError(f"wvl serve did not start: {line!r}")
    return proc


def upload(ob: Outbox, ep: Episode) -> dict:
    """Put one episode (under a fresh uuid) and wait for its COMMIT; the Outbox's timing record of it."""
    ep = copy.copy(ep)
    ep.uuid = str(uuid.uuid4())
    t0 = time.perf_counter()
    uid = ob.put(ep)
    put_s = time.perf_counter() - t0
    if not ob.wait_committed([uid], timeout=600):
        raise RuntimeError(f"episode not committed: {ob.counters()}")
    rec = ob.uploads[-1]
    return {"put_s": put_s, "upload_s": rec["upload_s"], "store_s": rec["ingest_s"]}


def policy_push(mb: float, tmp: Path) -> float:
    from learning.server.learner import LearnerServer
    from tests.link.policy_fixtures import make_policy, ort_validate

    art = tmp / "artifact"
    make_policy(art, "bench-1", pad_bytes=int(mb * 1e6))
    keys = wire.LearnerKeys.load(tmp / "keys" / "learner.key_secret", tmp / "allow")
    server = LearnerServer(tmp / "pstore", "tcp://127.0.0.1:*", keys).start()
    inbox = PolicyInbox(tmp / "inbox", ort_validate, min_free_bytes=0)
    ob = Outbox(tmp / "pout", server.endpoint, wire.RobotKeys.load(tmp / "keys" / "robot-1.key_secret", tmp / "keys" / "learner.key"),
                inbox=inbox)
    try:
        deadline = time.monotonic() + 30
        while not ob.counters()["connected"] and time.monotonic() < deadline:
            time.sleep(0.01)
        t0 = time.perf_counter()
        server.publish_policy(art)
        while inbox.ready_version != "bench-1":
            if time.perf_counter() - t0 > 300:
                raise RuntimeError(f"policy not ready: {inbox.status()}")
            time.sleep(0.002)
        return time.perf_counter() - t0
    finally:
        ob.close()
        server.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes-mb", type=float, nargs="+", default=[10, 200])
    ap.add_argument("--policy-mb", type=float, default=50)
    ap.add_argument("--modes", nargs="+", default=["plaintext", "curve"], choices=["plaintext", "curve"])
    ap.add_argument("--repeats", type=int, default=3, help="raw / upload pairs per size and mode (medians reported)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    load = os.getloadavg()[0]  # other processes on the machine: the numbers below are only as quiet as this
    tmp = Path(tempfile.mkdtemp(prefix="wvl-bench-link-"))
    try:
        wire.generate_keypair(tmp / "keys", "learner")
        wire.generate_keypair(tmp / "keys", "robot-1")
        (tmp / "allow").mkdir()
        shutil.copy(tmp / "keys" / "robot-1.key", tmp / "allow")
        learner_pub, learner_sec = wire.load_keypair(tmp / "keys" / "learner.key_secret")
        rows, headline = [], {}
        episodes = {mb: make_episode(mb) for mb in args.sizes_mb}
        for mode in args.modes:
            curve = mode == "curve"
            endpoint = f"tcp://127.0.0.1:{free_port()}"
            shutil.rmtree(tmp / "store", ignore_errors=True)
            server = start_server(tmp, endpoint, curve)
            keys = wire.RobotKeys.load(tmp / "keys" / "robot-1.key_secret", tmp / "keys" / "learner.key") if curve else wire.PLAINTEXT
            ob = Outbox(tmp / "outbox", endpoint, keys, robot_id="robot-1", config=LinkConfig(min_free_bytes=0))
            try:
                for mb, ep in episodes.items():
                    data = ep.to_bytes()
                    size_mb = len(data) / 1e6
                    raw, up = [], []
                    for _ in range(args.repeats):  # interleaved, so that load from other processes hits both alike
                        raw.append(size_mb / raw_push(data, (learner_pub, learner_sec) if curve else None))
                        up.append(upload(ob, ep))
                    raw_mb_s = statistics.median(raw)
                    up_mb_s = statistics.median(size_mb / u["upload_s"] for u in up)
                    rows.append([f"{size_mb:.0f}", mode, f"{raw_mb_s:.0f}", f"{up_mb_s:.0f}", f"{up_mb_s / raw_mb_s:.2f}",
                                 f"{statistics.median(u['put_s'] for u in up):.2f}", f"{statistics.median(u['upload_s'] for u in up):.2f}",
                                 f"{statistics.median(u['store_s'] for u in up):.2f}",
                                 f"{min(size_mb / u['upload_s'] for u in up):.0f}-{max(size_mb / u['upload_s'] for u in up):.0f}"])
                    if mode == "plaintext" or not headline:
                        headline = {"upload_vs_raw": up_mb_s / raw_mb_s, "upload_mb_s": up_mb_s, "raw_mb_s": raw_mb_s}
                resends = ob.counters()["resends"]
            finally:
                ob.close()
                server.terminate()
                server.wait(30)
            if resends:
                print(f"{mode}: {resends} chunk resends")
        push_s = policy_push(args.policy_mb, tmp)
        sha_mb_s, crc_mb_s = hash_speeds()
        out = Console(width=140)
        out.print(table("learner link on loopback (robot here, learner in a child process; medians)",
                        ["MB", "mode", "raw MB/s", "upload MB/s", "ratio", "put s", "upload s", "store s", "upload MB/s range"], rows))
        out.print(table("policy push (publish -> robot inbox ready, CURVE)", ["artifact MB", "seconds"],
                        [[f"{args.policy_mb:.0f}", f"{push_s:.2f}"]]))
        out.print(table("per-byte work on this CPU (one thread)", ["SHA-256 MB/s", "CRC-32 MB/s", "cores", "load avg (1 min) at start"],
                        [[f"{sha_mb_s:.0f}", f"{crc_mb_s:.0f}", os.cpu_count(), f"{load:.1f}"]]))
        print(f"upload_vs_raw={headline['upload_vs_raw']:.2f} upload_mb_s={headline['upload_mb_s']:.0f} "
              f"raw_mb_s={headline['raw_mb_s']:.0f} policy_push_s={push_s:.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
