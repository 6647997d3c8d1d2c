"""Episodes arriving over the link: one sparse ``.part`` file per upload with its chunk bitmap (resumable after
either side restarts), and the SHA-256 of the received bytes computed in a thread of its own."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import threading
import time
from pathlib import Path

from robot import wire

log = logging.getLogger(__name__)


class Upload:
    """One episode being received: a sparse .part file, a bitmap of chunks held, an in-order SHA-256."""

    def __init__(self, folder: Path, uid: str, size: int, sha256: str, chunk_size: int, n: int, robot_id: str | None = None) -> None:
        self.uid, self.size, self.sha256, self.chunk_size, self.n = uid, size, sha256, chunk_size, n
        self.robot_id = robot_id  # the robot that last sent EP_BEGIN or a chunk for it
        self.path, self.state_path = folder / f"{uid}.part", folder / f"{uid}.state"
        self.have = bytearray(n)
        self.n_have = 0
        self.hasher = hashlib.sha256()  # updated by the _HashWorker thread only
        self.hashed = 0          # chunks [0, hashed) have been fed to the hasher
        self.dirty = 0           # chunks received since the bitmap was persisted
        self.fd: int | None = None
        self.ingesting = False
        self.waiters: set[str] = set()  # robot ids to send COMMIT to
        self.touched = time.monotonic()  # last EP_BEGIN or chunk

    def matches(self, size: int, sha256: str, chunk_size: int) -> bool:
        return (self.size, self.sha256, self.chunk_size) == (size, sha256, chunk_size)

    def open(self) -> None:
        if self.fd is None:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def chunk_len(self, idx: int) -> int:
        return min(self.chunk_size, self.size - idx * self.chunk_size)

    def save_state(self) -> None:
        # Atomic replace; no fsync: the bitmap is a hint (a power loss at worst makes the SHA-256 fail and the
        # robot resend everything), while a killed process keeps its page-cache writes.
        tmp = self.state_path.with_suffix(".state.tmp")
        tmp.write_text(json.dumps({"size": self.size, "sha256": self.sha256, "chunk_size": self.chunk_size, "n": self.n,
                                   "have": wire.pack_bitmap(self.have).hex(), "robot": self.robot_id}))
        os.replace(tmp, self.state_path)
        self.dirty = 0

    @classmethod
    def resume(cls, folder: Path, uid: str, size: int, sha256: str, chunk_size: int, n: int, robot_id: str | None = None) -> "Upload":
        """Reopen a partial upload left by an earlier run when it describes the same bytes; else start afresh."""
        up = cls(folder, uid, size, sha256, chunk_size, n, robot_id)
        try:
            st = json.loads(up.state_path.read_text())
            if (st["size"], st["sha256"], st["chunk_size"], st["n"]) == (size, sha256, chunk_size, n) and up.path.exists():
                up.have = wire.unpack_bitmap(bytes.fromhex(st["have"]), n)
                up.n_have = sum(up.have)
                log.info("resuming upload of episode %s: %d/%d chunks already here", uid, up.n_have, n)
                return up
        except (OSError, ValueError, KeyError, TypeError):
            pass
        up.path.unlink(missing_ok=True)
        up.state_path.unlink(missing_ok=True)
        return up

    def discard(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)
        self.state_path.unlink(missing_ok=True)


class HashWorker:
    """SHA-256 of uploads in a thread of its own. Hashing is the slowest step per byte (~0.5 GB/s on the build
    machines) and hashlib releases the GIL, so it overlaps the socket work. Bounded: `feed` blocks while more than
    ``max_bytes`` wait; chunks of one upload are fed in order (FIFO)."""

    def __init__(self, max_bytes: int = 64 << 20) -> None:
        self.max_bytes = max_bytes
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._cv = threading.Condition()
        self._queued = 0
        self._thread = threading.Thread(target=self._run, name="wvl-learner-sha256", daemon=True)
        self._thread.start()

    def feed(self, up: "Upload", buf: bytes | memoryview) -> None:
        n = len(buf)
        with self._cv:
            while self._queued and self._queued + n > self.max_bytes:
                self._cv.wait()
            self._queued += n
        self._q.put((up, buf))

    def digest(self, up: "Upload") -> str:
        """Wait until everything fed for ``up`` is hashed; its hex digest."""
        done = threading.Event()
        self._q.put((up, done))
        done.wait()
        return up.hasher.hexdigest()

    def close(self) -> None:
        self._q.put(None)
        self._thread.join(10)

    def _run(self) -> None:
        while (item := self._q.get()) is not None:
            up, buf = item
            if isinstance(buf, threading.Event):
                buf.set()
                continue
            up.hasher.update(buf)
            with self._cv:
                self._queued -= len(buf)
                self._cv.notify_all()
