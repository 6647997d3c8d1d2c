"""Remote inference: ask a GPU-side policy (`learning.server.inference.InferenceServer`) for an action chunk
within a latency budget."""

from __future__ import annotations

import collections
import logging
import time

import numpy as np
import zmq

from robot import wire

log = logging.getLogger(__name__)


class RemotePolicy:
    """Ask a GPU-side policy (`learning.server.InferenceServer`) for an action chunk within a latency budget.

    ``policy(image (H, W, 3) uint8, instruction) -> (K, action_dim) float32 array, or None`` -- None means "no
    answer in time (late, learner unreachable, or a bad reply)": the control loop must hold (keep the arm still or
    finish the previous chunk). Never blocks longer than ``budget_s``. Use from one thread."""

    def __init__(self, endpoint: str, keys: wire.RobotKeys | wire.Plaintext, budget_s: float = 0.2, *,
                 action_dim: int | None = None, max_chunk_bytes: int = 1 << 20) -> None:
        if not budget_s > 0:
            raise ValueError(f"budget_s: must be positive, got {budget_s!r}")
        self.endpoint, self.budget_s, self.action_dim = endpoint, budget_s, action_dim
        self._max = max_chunk_bytes
        self._ctx = zmq.Context(1)
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.linger = 0
        self._sock.immediate = 1
        self._sock.sndhwm = 4
        self._sock.maxmsgsize = max_chunk_bytes + 4096
        wire.configure_client(self._sock, keys, what="remote policy")
        self._sock.connect(endpoint)
        self._req = 0
        self.counts = {"requests": 0, "answered": 0, "late": 0, "unavailable": 0, "bad_replies": 0, "stale_replies": 0}
        self.latency_s: collections.deque[float] = collections.deque(maxlen=1000)

    def __call__(self, image: np.ndarray, instruction: str) -> np.ndarray | None:
        image = np.ascontiguousarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image: expected (H, W, 3) uint8, got {image.shape} {image.dtype}")
        self._req += 1
        req = self._req
        self.counts["requests"] += 1
        t0 = time.monotonic()
        deadline = t0 + self.budget_s
        frames = wire.encode(wire.INFER, {"req": req, "shape": list(image.shape), "dtype": "|u1", "instruction": instruction,
                                          "budget_s": self.budget_s}, image.tobytes())
        while True:
            try:
                self._sock.send_multipart(frames, zmq.NOBLOCK)
                break
            except zmq.Again:  # not connected yet (IMMEDIATE): wait for the connection, within the budget only
                left = deadline - time.monotonic()
                if left <= 0 or not self._sock.poll(max(1, int(left * 1000)), zmq.POLLOUT):
                    self.counts["unavailable"] += 1
                    return None
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self._sock.poll(max(1, int(left * 1000))):
                self.counts["late"] += 1
                log.debug("remote policy: no answer to request %d within %.0f ms; hold", req, 1e3 * self.budget_s)
                return None
            try:
                msg = wire.decode(self._sock.recv_multipart(copy=False), max_payload=self._max)
            except wire.WireError as e:
                self.counts["bad_replies"] += 1
                log.warning("remote policy: malformed reply (%s)", e)
                continue
            if msg.header.get("req") != req:
                self.counts["stale_replies"] += 1  # the answer to an earlier, already abandoned request
                continue
            if msg.type == wire.ERROR:
                self.counts["bad_replies"] += 1
                log.warning("remote policy: %s: %s", msg.header["code"], msg.header["message"])
                return None
            chunk = _chunk_from(msg, self.action_dim)
            if chunk is None:
                self.counts["bad_replies"] += 1
                return None
            self.counts["answered"] += 1
            self.latency_s.append(time.monotonic() - t0)
            return chunk

    def close(self) -> None:
        self._sock.close(0)
        self._ctx.term()


def _chunk_from(msg: wire.Message, action_dim: int | None) -> np.ndarray | None:
    shape = msg.header["shape"]
    if msg.type != wire.ACTION or msg.header["dtype"] != "<f4" or len(shape) != 2 or (action_dim and shape[1] != action_dim):
        log.warning("remote policy: reply %s of shape %s dtype %s is not a (K, %s) float32 chunk", msg.name, shape,
                    msg.header.get("dtype"), action_dim or "A")
        return None
    if len(msg.payload) != shape[0] * shape[1] * 4:
        log.warning("remote policy: reply payload of %d bytes does not fit shape %s", len(msg.payload), shape)
        return None
    chunk = np.frombuffer(msg.payload, dtype="<f4").reshape(shape).astype(np.float32)
    if not np.all(np.isfinite(chunk)):
        log.warning("remote policy: reply holds NaN/inf; hold")
        return None
    return chunk
