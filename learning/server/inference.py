"""Remote inference for policies too big for the robot PC (the robot end: `robot.link.remote_policy`)."""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any, Callable

import numpy as np
import zmq

from robot import wire

log = logging.getLogger(__name__)


PolicyFn = Callable[[np.ndarray, str], np.ndarray]


class InferenceServer:
    """Remote inference for policies too big for the robot PC: INFER(image, instruction) -> ACTION(chunk).

    ``policy(image (H, W, 3) uint8, instruction) -> (K, action_dim) float`` runs in the server thread, one request
    at a time. When requests pile up (the policy is slower than the robot's rate), only the newest per robot is
    answered; older ones get ERROR late at once (the robot has stopped waiting for them anyway)."""

    def __init__(self, endpoint: str, keys: wire.LearnerKeys | wire.Plaintext, policy: PolicyFn, *,
                 max_image_bytes: int = 8 << 20) -> None:
        self.policy = policy
        self.max_image_bytes = max_image_bytes
        self._ctx = zmq.Context(1)
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.linger = 0
        self._sock.rcvhwm = 32
        self._sock.maxmsgsize = max_image_bytes + 4096
        self._auth = wire.configure_server(self._ctx, self._sock, keys, what=f"inference server on {endpoint}")
        try:
            self._sock.bind(endpoint)
        except zmq.ZMQError as e:
            self._sock.close(0)
            if self._auth is not None:
                self._auth.stop()
            self._ctx.term()
            raise OSError(f"inference server: cannot bind {endpoint} ({e})") from e
        self.endpoint = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._counts = {"requests": 0, "answered": 0, "superseded": 0, "rejects": 0, "policy_errors": 0}
        self._latency: collections.deque[float] = collections.deque(maxlen=1000)

    def start(self) -> "InferenceServer":
        self._thread = threading.Thread(target=self._run, name="wvl-inference", daemon=True)
        self._thread.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._sock.close(0)
        if self._auth is not None:
            self._auth.stop()
        self._ctx.term()

    def counters(self) -> dict[str, Any]:
        with self._lock:
            c: dict[str, Any] = dict(self._counts)
            lat = sorted(self._latency)
        if lat:
            c["policy_ms_p50"] = round(1e3 * lat[len(lat) // 2], 3)
            c["policy_ms_p99"] = round(1e3 * lat[min(len(lat) - 1, int(len(lat) * 0.99))], 3)
        return c

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._sock.poll(20):
                continue
            newest: dict[bytes, tuple[wire.Message, np.ndarray]] = {}
            for _ in range(256):
                try:
                    frames = self._sock.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                peer = frames[0].bytes
                try:
                    msg = wire.decode(frames[1:], max_payload=self.max_image_bytes)
                    if msg.type != wire.INFER:
                        raise wire.WireError(wire.ERR_UNKNOWN_TYPE, f"{msg.name} is not an inference request")
                    image = _image_from(msg)
                except wire.WireError as e:
                    self._count("rejects")
                    log.debug("inference: refused a request: %s", e)
                    self._reply(peer, wire.error(e.code, str(e), frames[1].bytes[:16] if len(frames) > 1 else None, **e.detail))
                    continue
                self._count("requests")
                if peer in newest:
                    old = newest[peer][0]
                    self._count("superseded")
                    self._reply(peer, wire.error(wire.ERR_LATE, "a newer request from this robot superseded it", wire.INFER,
                                                 req=old.header["req"]))
                newest[peer] = (msg, image)
            for peer, (msg, image) in newest.items():
                self._answer(peer, msg, image)

    def _answer(self, peer: bytes, msg: wire.Message, image: np.ndarray) -> None:
        req = msg.header["req"]
        t0 = time.perf_counter()
        try:
            chunk = np.ascontiguousarray(np.asarray(self.policy(image, msg.header["instruction"]), dtype=np.float32))
            if chunk.ndim != 2 or not np.all(np.isfinite(chunk)):
                raise ValueError(f"policy returned shape {chunk.shape} (need (K, action_dim)) or non-finite values")
        except Exception as e:
            self._count("policy_errors")
            log.warning("inference policy failed: %s", e)
            self._reply(peer, wire.error(wire.ERR_POLICY_FAILED, f"policy failed: {e}", wire.INFER, req=req))
            return
        with self._lock:
            self._latency.append(time.perf_counter() - t0)
        self._count("answered")
        self._reply(peer, wire.encode(wire.ACTION, {"req": req, "shape": list(chunk.shape), "dtype": "<f4"}, chunk.tobytes()))

    def _reply(self, peer: bytes, frames: list) -> None:
        try:
            self._sock.send_multipart([peer, *frames], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass


def _image_from(msg: wire.Message) -> np.ndarray:
    shape, dtype = msg.header["shape"], msg.header["dtype"]
    if dtype != "|u1" or len(shape) != 3 or shape[2] != 3 or shape[0] * shape[1] > wire.MAX_IMAGE_PIXELS:
        raise wire.WireError(wire.ERR_BAD_FIELD, f"INFER image must be (H, W, 3) uint8 ('|u1'), got {shape} {dtype!r}",
                             req=msg.header["req"])
    if len(msg.payload) != shape[0] * shape[1] * 3:
        raise wire.WireError(wire.ERR_OUT_OF_RANGE, f"INFER payload has {len(msg.payload)} bytes for shape {shape}",
                             req=msg.header["req"])
    return np.frombuffer(msg.payload, dtype=np.uint8).reshape(shape)
