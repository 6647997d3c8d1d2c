"""The robot's durable episode outbox, and the one learner connection that also brings policies down.

``Outbox.put(episode)`` writes the serialised episode to ``folder/<seq>-<uuid>-<sha256>.ep`` (temp file, fsync, atomic
rename) and returns; a background thread ("wvl-outbox") uploads it in CRC32-checked chunks with a sliding window, ack
and resend, and deletes the file only after the learner's COMMIT (sent after its atomic write into the episode
store; an episode the learner can never take is moved aside, to ``rejected/``, or to ``conflicts/`` when the learner
holds other bytes under its uuid -- never deleted). Files left by an earlier run are sent first, so the robot keeps
collecting while the learner is away or restarting. The same connection downloads offered policies into a
`PolicyInbox` and reports the running version back.
"""

from __future__ import annotations

import collections
import errno
import hashlib
import itertools
import logging
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import zmq

from robot import wire
from robot.episode import Episode
from robot.files import fsync_dir, sha256_file
from robot.link.policy_inbox import PolicyInbox

log = logging.getLogger(__name__)

_SPOOL_RE = re.compile(r"^(\d{20})-([0-9a-f-]{36})-([0-9a-f]{64})\.ep$")


class OutboxError(OSError):
    """The outbox could not persist an episode; the message says why and what to do. Nothing was lost that put()
    had confirmed before."""


class OutboxFullError(OutboxError):
    """No room on the robot's disk (or over max_spool_bytes) for another episode: the episode was NOT saved."""


@dataclass(frozen=True)
class LinkConfig:
    chunk_bytes: int = 1 << 20          # episode chunk (CRC32 each)
    window: int = 16                    # chunks in flight without an ACK
    ack_timeout_s: float = 2.0          # resend a chunk (or EP_BEGIN) not acknowledged within this
    heartbeat_s: float = 1.0            # PING when idle this long
    dead_after_s: float = 6.0           # nothing heard from the learner this long -> new socket, HELLO again
    hello_backoff_s: tuple[float, float] = (0.1, 5.0)   # HELLO retry: first, cap (doubles)
    retry_backoff_s: tuple[float, float] = (1.0, 60.0)  # after disk_full / store errors on the learner
    end_resend_s: float = 10.0          # re-send EP_END while waiting for COMMIT (the learner may be encoding video)
    codec: str = "raw"                  # Episode.to_bytes codec: "raw" (fast) or "zlib" (~3x smaller images, slower)
    min_free_bytes: int = 256 << 20     # put() refuses an episode that would leave less free disk than this
    max_spool_bytes: int | None = None  # put() refuses when the unsent episodes would exceed this
    policy_window: int = 8              # policy chunks requested at once
    max_policy_bytes: int = 4 << 30     # offers above this are refused
    max_recv_bytes: int = 16 << 20      # largest frame accepted from the learner

    def __post_init__(self) -> None:
        def need(ok: bool, name: str, why: str) -> None:
            if not ok:
                raise ValueError(f"link config field {name!r}: {why}, got {getattr(self, name)!r}")

        need(wire.MIN_CHUNK_BYTES <= self.chunk_bytes <= wire.MAX_PAYLOAD_BYTES, "chunk_bytes",
             f"must be in [{wire.MIN_CHUNK_BYTES}, {wire.MAX_PAYLOAD_BYTES}]")
        need(isinstance(self.window, int) and 1 <= self.window <= 1024, "window", "must be an int in [1, 1024]")
        need(isinstance(self.policy_window, int) and 1 <= self.policy_window <= 1024, "policy_window", "must be an int in [1, 1024]")
        for name in ("ack_timeout_s", "heartbeat_s", "dead_after_s", "end_resend_s"):
            need(getattr(self, name) > 0, name, "must be positive")
        need(self.dead_after_s > self.heartbeat_s, "dead_after_s", "must exceed heartbeat_s")
        for name in ("hello_backoff_s", "retry_backoff_s"):
            lo, hi = getattr(self, name)
            need(0 < lo <= hi, name, "must be (first, cap) with 0 < first <= cap")
        need(self.codec in ("raw", "zlib"), "codec", "must be 'raw' or 'zlib'")
        need(self.min_free_bytes >= 0, "min_free_bytes", "must be >= 0")
        need(self.max_spool_bytes is None or self.max_spool_bytes > 0, "max_spool_bytes", "must be positive or None")
        need(0 < self.max_policy_bytes <= wire.MAX_POLICY_BYTES, "max_policy_bytes", f"must be in (0, {wire.MAX_POLICY_BYTES}]")
        need(wire.MIN_CHUNK_BYTES <= self.max_recv_bytes <= wire.MAX_PAYLOAD_BYTES, "max_recv_bytes",
             f"must be in [{wire.MIN_CHUNK_BYTES}, {wire.MAX_PAYLOAD_BYTES}]")



@dataclass
class _Spooled:
    uid: str
    path: Path
    sha256: str
    size: int


@dataclass
class _Send:
    """The episode being uploaded."""

    sp: _Spooled
    chunk_size: int
    n: int
    fd: int
    phase: str = "begin"            # begin -> chunks -> end
    acked: bytearray = field(default_factory=bytearray)
    n_acked: int = 0
    to_send: collections.deque = field(default_factory=collections.deque)
    inflight: dict[int, float] = field(default_factory=dict)  # idx -> monotonic send time
    sent_at: float = 0.0            # last EP_BEGIN / EP_END
    retry_at: float = 0.0           # backoff after a learner-side failure
    backoff: float = 0.0
    started: float = 0.0
    chunks_done: float = 0.0


@dataclass
class _Download:
    offer: dict[str, Any]
    path: Path
    fd: int
    have: bytearray
    n_have: int = 0
    to_get: collections.deque = field(default_factory=collections.deque)
    inflight: dict[int, float] = field(default_factory=dict)
    started: float = 0.0


class Outbox:
    """Durable episode outbox + policy download over one CURVE-authenticated DEALER connection.

    Public methods are thread-safe. ``put`` returns once the episode is on disk (fsync'd); everything else happens
    in the background thread, which never raises: learner trouble is retried with capped backoff and logged."""

    def __init__(self, folder: str | os.PathLike, endpoint: str, keys: wire.RobotKeys | wire.Plaintext, *,
                 robot_id: str | None = None, inbox: PolicyInbox | None = None, config: LinkConfig = LinkConfig(),
                 clock: Callable[[], float] = time.time) -> None:
        rid = robot_id or getattr(keys, "name", None)
        if not rid or not wire.NAME_RE.match(rid):
            raise ValueError(f"robot_id: {rid!r} must match {wire.NAME_RE.pattern} (with CURVE keys it is the key's name)")
        if isinstance(keys, wire.RobotKeys) and keys.name and keys.name != rid:
            raise ValueError(f"robot_id: {rid!r} differs from the CURVE key's name {keys.name!r}; the learner would refuse it")
        if not isinstance(keys, (wire.RobotKeys, wire.Plaintext)):
            raise TypeError(f"keys: expected RobotKeys or PLAINTEXT, got {type(keys).__name__}")
        if isinstance(keys, wire.Plaintext):
            wire.configure_client(None, keys, what=f"outbox of {rid}")  # the warning, once
        self.folder = Path(folder)
        self.endpoint, self.keys, self.robot_id, self.inbox, self.config, self.clock = endpoint, keys, rid, inbox, config, clock
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutboxError(e.errno, f"outbox folder {self.folder} cannot be created ({e.strerror})") from e
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._pending: collections.OrderedDict[str, _Spooled] = collections.OrderedDict()
        self._committed: set[str] = set()
        self._seq = itertools.count(time.time_ns())
        self._c: dict[str, Any] = dict.fromkeys(
            ("episodes_put", "episodes_committed", "episodes_duplicate", "episodes_rejected", "uuid_conflicts", "bytes_sent", "chunks_sent",
             "resends", "rejects", "reconnects", "hellos", "policies_received", "policies_rejected", "policy_bytes_received",
             "policy_resends"), 0)
        self._c.update(connected=False, clock_offset_s=None, last_error=None)
        self.uploads: collections.deque[dict[str, Any]] = collections.deque(maxlen=100)  # per-episode timings
        self._recover()
        self._stop = threading.Event()
        self._ctx = zmq.Context(1)
        self._sock: zmq.Socket | None = None
        self._connected = False
        self._last_rx = self._last_tx = 0.0
        self._hello_at, self._hello_backoff = 0.0, config.hello_backoff_s[0]
        self._cur: _Send | None = None
        self._dl: _Download | None = None
        self._reported_generation = -1
        self._thread = threading.Thread(target=self._run, name="wvl-outbox", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ public API
    def put(self, episode: Episode) -> str:
        """Persist ``episode`` (fsync + atomic rename) and queue it for upload; returns its uuid. Putting a uuid that
        is still pending is a no-op. Raises OutboxFullError / OutboxError when it could not be saved."""
        if self._stop.is_set():
            raise OutboxError(errno.ESHUTDOWN, "outbox is closed")
        uid = episode.uuid
        with self._lock:
            if uid in self._pending:
                return uid
        data = episode.to_bytes(self.config.codec)
        self._check_room(len(data))
        sha = hashlib.sha256(data).hexdigest()
        path = self.folder / f"{next(self._seq):020d}-{uid}-{sha}.ep"
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            fsync_dir(self.folder)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            if e.errno == errno.ENOSPC:
                raise OutboxFullError(e.errno, f"robot disk full while saving episode {uid} ({len(data) >> 20} MiB) to "
                                      f"{self.folder}: the episode was NOT saved; free space (pending uploads: "
                                      f"{len(self._pending)})") from e
            raise OutboxError(e.errno, f"cannot save episode {uid} to {self.folder}: {e.strerror}; the episode was NOT saved") from e
        with self._lock:
            self._pending[uid] = _Spooled(uid, path, sha, len(data))
            self._c["episodes_put"] += 1
        log.debug("episode %s saved to the outbox (%d bytes)", uid, len(data))
        return uid

    def pending(self) -> list[str]:
        """UUIDs saved but not yet committed by the learner, oldest first."""
        with self._lock:
            return list(self._pending)

    def wait_committed(self, uuids: Iterable[str], timeout: float | None = None) -> bool:
        """Block until none of ``uuids`` is pending (committed, or never put); False on timeout."""
        want = set(uuids)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while want & self._pending.keys():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left if left is None else min(left, 1.0))
            return True

    def counters(self) -> dict[str, Any]:
        with self._lock:
            c = dict(self._c)
            c["pending"] = len(self._pending)
            c["pending_bytes"] = sum(s.size for s in self._pending.values())
        c["running_version"] = self.inbox.running_version if self.inbox else None
        return c

    def close(self, wait_s: float = 0.0) -> None:
        """Stop the link (after waiting up to ``wait_s`` for pending uploads). Unsent episodes stay on disk."""
        if wait_s > 0:
            self.wait_committed(self.pending(), wait_s)
        self._stop.set()
        self._thread.join(10)

    def __enter__(self) -> "Outbox":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ disk
    def _check_room(self, size: int) -> None:
        free = shutil.disk_usage(self.folder).free
        if free - size < self.config.min_free_bytes:
            raise OutboxFullError(errno.ENOSPC, f"robot disk: {free >> 20} MiB free in {self.folder}, the episode needs "
                                  f"{size >> 20} MiB plus a {self.config.min_free_bytes >> 20} MiB reserve: NOT saved; free space "
                                  f"or bring the learner back so that {len(self._pending)} pending episodes can drain")
        if self.config.max_spool_bytes is not None:
            with self._lock:
                spooled = sum(s.size for s in self._pending.values())
            if spooled + size > self.config.max_spool_bytes:
                raise OutboxFullError(errno.ENOSPC, f"outbox holds {spooled >> 20} MiB of unsent episodes; max_spool_bytes "
                                      f"{self.config.max_spool_bytes >> 20} MiB would be exceeded: episode NOT saved")

    def _recover(self) -> None:
        """Pick up the episodes an earlier run saved but did not get committed (oldest first)."""
        found = []
        for p in self.folder.iterdir():
            if p.name.startswith(".") and p.name.endswith(".tmp"):
                p.unlink(missing_ok=True)  # a put() that never returned: its caller was not told it was saved
                continue
            m = _SPOOL_RE.match(p.name)
            if m:
                found.append((m.group(1), _Spooled(m.group(2), p, m.group(3), p.stat().st_size)))
        for _, sp in sorted(found, key=lambda x: x[0]):
            self._pending[sp.uid] = sp
        if found:
            log.info("outbox %s: %d episodes from an earlier run wait for upload", self.folder, len(found))

    def _quarantine(self, sp: _Spooled, why: str, folder: str = "rejected", counter: str = "episodes_rejected") -> None:
        """Move an episode the learner can never take aside (never delete data that was not committed)."""
        dest = self.folder / folder
        dest.mkdir(exist_ok=True)
        try:
            os.replace(sp.path, dest / sp.path.name)
        except OSError as e:
            log.error("cannot move %s aside (%s)", sp.path, e)
        with self._cond:
            self._pending.pop(sp.uid, None)
            self._c[counter] += 1
            self._cond.notify_all()
        log.error("episode %s moved to %s: %s", sp.uid, dest, why)

    # ------------------------------------------------------------------ I/O thread
    def _run(self) -> None:
        try:
            self._new_socket()
            while not self._stop.is_set():
                try:
                    self._step()
                except Exception:  # a bug or an I/O error: log loudly, start the transfers afresh, keep going
                    log.exception("outbox I/O error; episodes stay in %s and the upload restarts", self.folder)
                    self._drop_transfers()
                    self._lost("internal error")
                    self._stop.wait(0.5)
        finally:
            if self._connected:
                self._send(wire.encode(wire.BYE))
            self._drop_transfers()
            if self._sock is not None:
                self._sock.close(linger=200)  # long enough for the BYE to leave, bounded
            self._ctx.term()

    def _step(self) -> None:
        now = time.monotonic()
        if not self._connected and now >= self._hello_at:
            self._hello(now)
        if self._sock.poll(10 if self._busy() else 50):
            for _ in range(256):
                try:
                    frames = self._sock.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                self._on_frames(frames)
        self._tick(time.monotonic())  # an episode put() meanwhile starts at the latest one poll timeout (50 ms) later

    def _busy(self) -> bool:
        return self._connected and (self._cur is not None or self._dl is not None or bool(self._pending))

    def _new_socket(self) -> None:
        if self._sock is not None:
            self._sock.close(0)
        s = self._ctx.socket(zmq.DEALER)
        s.linger = 0
        s.immediate = 1                     # do not queue messages for a learner that is not connected
        s.sndhwm = max(64, 2 * self.config.window)
        s.rcvhwm = 1024
        s.maxmsgsize = self.config.max_recv_bytes + 4096
        s.reconnect_ivl = 100
        s.reconnect_ivl_max = 2000
        s.heartbeat_ivl = int(self.config.heartbeat_s * 1000)
        s.heartbeat_timeout = int(self.config.dead_after_s * 1000)
        wire.configure_client(s, self.keys, what=f"outbox of {self.robot_id}", warn=False)  # warned once in __init__
        s.connect(self.endpoint)
        self._sock = s
        self._connected = False

    def _send(self, frames: list) -> bool:
        try:
            self._sock.send_multipart(frames, zmq.NOBLOCK, copy=False)
        except zmq.Again:  # not connected (IMMEDIATE) or send queue full: the caller retries later
            return False
        self._last_tx = time.monotonic()
        return True

    def _hello(self, now: float) -> None:
        running = self.inbox.running_version if self.inbox else None
        if self._send(wire.encode(wire.HELLO, {"robot_id": self.robot_id, "schema": wire.schema_hash(), "wall_time": self.clock(),
                                               "running_policy": running, "software": "world-vla-loop"})):
            with self._lock:
                self._c["hellos"] += 1
        self._hello_at = now + self._hello_backoff
        self._hello_backoff = min(self._hello_backoff * 2, self.config.hello_backoff_s[1])
        if self._last_rx == 0.0:
            self._last_rx = now  # start the dead-learner clock at the first attempt

    def _lost(self, why: str) -> None:
        if self._connected:
            log.warning("learner link: %s; reconnecting (episodes stay queued: %d)", why, len(self._pending))
            self._hello_backoff = self.config.hello_backoff_s[0]  # a restarted learner is back within seconds
            with self._lock:
                self._c["reconnects"] += 1
        else:  # still waiting for a learner that is away: keep quiet, keep trying
            log.debug("learner link: %s; new socket", why)
        with self._lock:
            self._c["connected"] = False
        self._new_socket()
        self._hello_at = time.monotonic()
        self._last_rx = time.monotonic()
        if self._cur is not None:
            self._cur.phase = "begin"
            self._cur.inflight.clear()
            self._cur.sent_at = 0.0
        if self._dl is not None:
            self._dl.inflight.clear()

    def _tick(self, now: float) -> None:
        if not self._connected:
            if now - self._last_rx > self.config.dead_after_s:
                self._lost(f"no answer from {self.endpoint} for {self.config.dead_after_s:.0f} s")
            return
        if now - self._last_rx > self.config.dead_after_s:
            self._lost(f"learner silent for {now - self._last_rx:.1f} s")
            return
        if now - self._last_tx > self.config.heartbeat_s:
            self._send(wire.encode(wire.PING, {"t": self.clock()}))
        if self.inbox is not None and self.inbox.generation != self._reported_generation:
            st = self.inbox.status()
            if self._send(wire.encode(wire.POL_STATUS, {k: st[k] for k in ("running", "ready", "rejected", "reason")})):
                self._reported_generation = st["generation"]
        self._tick_upload(now)
        self._tick_download(now)

    # ------------------------------------------------------------------ upload
    def _tick_upload(self, now: float) -> None:
        cur = self._cur
        if cur is None:
            with self._lock:
                nxt = next(iter(self._pending.values()), None)
            if nxt is None:
                return
            try:
                fd = os.open(nxt.path, os.O_RDONLY)
            except OSError as e:
                log.error("outbox file %s vanished or is unreadable (%s); skipping it", nxt.path, e)
                with self._cond:
                    self._pending.pop(nxt.uid, None)
                    self._cond.notify_all()
                return
            n = wire.n_chunks(nxt.size, self.config.chunk_bytes)
            cur = self._cur = _Send(nxt, self.config.chunk_bytes, n, fd, acked=bytearray(n), started=now)
        if now < cur.retry_at:
            return
        if cur.phase == "begin":
            if now - cur.sent_at > self.config.ack_timeout_s:
                sp = cur.sp
                self._send(wire.encode(wire.EP_BEGIN, {"id": sp.uid, "size": sp.size, "sha256": sp.sha256,
                                                       "chunk_size": cur.chunk_size, "n_chunks": cur.n}))
                cur.sent_at = now
            return
        if cur.phase == "end":
            if now - cur.sent_at > self.config.end_resend_s:
                self._send(wire.encode(wire.EP_END, {"id": cur.sp.uid}))
                cur.sent_at = now
            return
        # phase "chunks": resend what timed out, then fill the window
        for idx, t in list(cur.inflight.items()):
            if now - t > self.config.ack_timeout_s:
                del cur.inflight[idx]
                cur.to_send.appendleft(idx)
                with self._lock:
                    self._c["resends"] += 1
        while len(cur.inflight) < self.config.window and cur.to_send:
            idx = cur.to_send.popleft()
            if cur.acked[idx] or idx in cur.inflight:
                continue
            data = os.pread(cur.fd, cur.chunk_size, idx * cur.chunk_size)
            if not self._send(wire.encode(wire.CHUNK, {"id": cur.sp.uid, "idx": idx, "crc32": wire.crc32(data)}, data)):
                cur.to_send.appendleft(idx)
                break
            cur.inflight[idx] = now
            with self._lock:
                self._c["chunks_sent"] += 1
                self._c["bytes_sent"] += len(data)

    def _send_end(self, cur: _Send) -> None:
        cur.phase = "end"
        cur.chunks_done = time.monotonic()
        cur.sent_at = cur.chunks_done
        self._send(wire.encode(wire.EP_END, {"id": cur.sp.uid}))

    def _finish(self, uid: str, index: int, duplicate: bool, ingest_s: float | None) -> None:
        cur = self._cur
        if cur is not None and cur.sp.uid == uid:
            os.close(cur.fd)
            now = time.monotonic()
            if cur.chunks_done:
                # upload_s: start -> COMMIT less the learner's store write (ingest_s, measured there): the time to a
                # verified (SHA-256) copy on the learner's disk.
                self.uploads.append({"id": uid, "bytes": cur.sp.size, "index": index, "duplicate": duplicate,
                                     "transfer_s": cur.chunks_done - cur.started, "commit_s": now - cur.chunks_done,
                                     "ingest_s": ingest_s, "upload_s": now - cur.started - (ingest_s or 0.0)})
            self._cur = None
        with self._lock:
            sp = self._pending.get(uid)
        if sp is not None:
            # Delete only now: the learner has the episode in its store. The file is the only record of it here.
            sp.path.unlink(missing_ok=True)
            fsync_dir(self.folder)
            log.info("episode %s committed by the learner as #%d%s", uid, index, " (already there)" if duplicate else "")
        with self._cond:
            self._pending.pop(uid, None)
            self._committed.add(uid)
            self._c["episodes_duplicate" if duplicate else "episodes_committed"] += 1
            self._cond.notify_all()

    def _restart_upload(self, why: str, backoff: bool = False) -> None:
        cur = self._cur
        if cur is None:
            return
        cur.phase, cur.sent_at = "begin", 0.0
        cur.inflight.clear()
        cur.to_send.clear()
        if backoff:
            lo, hi = self.config.retry_backoff_s
            cur.backoff = min(hi, cur.backoff * 2 if cur.backoff else lo)
            cur.retry_at = time.monotonic() + cur.backoff
            log.warning("upload of episode %s: %s; retrying in %.0f s (the episode stays on this disk)", cur.sp.uid, why, cur.backoff)
        else:
            log.info("upload of episode %s: %s; starting again", cur.sp.uid, why)

    def _drop_transfers(self) -> None:
        for t in (self._cur, self._dl):
            if t is not None:
                try:
                    os.close(t.fd)
                except OSError:
                    pass
        if self._dl is not None:
            self._dl.path.unlink(missing_ok=True)
        self._cur = self._dl = None

    # ------------------------------------------------------------------ download
    def _tick_download(self, now: float) -> None:
        dl = self._dl
        if dl is None:
            return
        for idx, t in list(dl.inflight.items()):
            if now - t > self.config.ack_timeout_s:
                del dl.inflight[idx]
                dl.to_get.appendleft(idx)
                with self._lock:
                    self._c["policy_resends"] += 1
        while len(dl.inflight) < self.config.policy_window and dl.to_get:
            idx = dl.to_get.popleft()
            if dl.have[idx] or idx in dl.inflight:
                continue
            if not self._send(wire.encode(wire.POL_GET, {"version": dl.offer["version"], "sha256": dl.offer["sha256"], "idx": idx})):
                dl.to_get.appendleft(idx)
                break
            dl.inflight[idx] = now

    def _on_offer(self, offer: dict[str, Any]) -> None:
        if self.inbox is None:
            return
        dl = self._dl
        if dl is not None and (dl.offer["version"], dl.offer["sha256"]) == (offer["version"], offer["sha256"]):
            dl.to_get = collections.deque(i for i in range(offer["n_chunks"]) if not dl.have[i])  # resume
            dl.inflight.clear()
            return
        if sum(s for _, s, _ in offer["files"]) != offer["size"] or offer["n_chunks"] != wire.n_chunks(offer["size"], offer["chunk_size"]):
            log.error("policy offer %s is inconsistent (file sizes / chunk count); ignoring it", offer["version"])
            return
        if not self.inbox.wants(offer):
            return
        if dl is not None:
            log.info("abandoning the download of policy %s for the newer offer %s", dl.offer["version"], offer["version"])
            os.close(dl.fd)
            dl.path.unlink(missing_ok=True)
        path = self.inbox.staging / f"{PolicyInbox.key(offer['version'], offer['sha256'])}.blob"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        n = offer["n_chunks"]
        self._dl = _Download(offer, path, fd, bytearray(n), to_get=collections.deque(range(n)), started=time.monotonic())
        log.info("downloading policy %s (%d bytes)", offer["version"], offer["size"])

    def _on_pol_chunk(self, h: dict[str, Any], data: memoryview) -> None:
        dl = self._dl
        if dl is None or (h["version"], h["sha256"]) != (dl.offer["version"], dl.offer["sha256"]) or h["idx"] >= len(dl.have):
            return  # a late chunk of an abandoned download
        idx = h["idx"]
        o = dl.offer
        want = min(o["chunk_size"], o["size"] - idx * o["chunk_size"])
        dl.inflight.pop(idx, None)
        if len(data) != want or wire.crc32(data) != h["crc32"]:
            dl.to_get.appendleft(idx)
            with self._lock:
                self._c["policy_resends"] += 1
            return
        if dl.have[idx]:
            return
        os.pwrite(dl.fd, data, idx * o["chunk_size"])
        dl.have[idx] = 1
        dl.n_have += 1
        with self._lock:
            self._c["policy_bytes_received"] += len(data)
        if dl.n_have == len(dl.have):
            os.fsync(dl.fd)
            os.close(dl.fd)
            self._dl = None
            ok = self.inbox.install(o, dl.path)
            with self._lock:
                self._c["policies_received" if ok else "policies_rejected"] += 1
            log.info("policy %s: %s after %.2f s", o["version"], "ready" if ok else "refused", time.monotonic() - dl.started)

    # ------------------------------------------------------------------ incoming messages
    def _on_frames(self, frames: list[zmq.Frame]) -> None:
        try:
            msg = wire.decode(frames, max_payload=self.config.max_recv_bytes)
        except wire.WireError as e:
            log.error("learner sent a malformed message (%s); ignoring it", e)
            return
        now = time.monotonic()
        self._last_rx = now
        h, t = msg.header, msg.type
        if t == wire.WELCOME:
            self._connected = True
            self._hello_backoff = self.config.hello_backoff_s[0]
            with self._lock:
                self._c["connected"] = True
                self._c["clock_offset_s"] = round(h["wall_time"] - self.clock(), 3)
            self._reported_generation = -1  # report the running policy on every new session
            log.info("connected to the learner at %s", self.endpoint)
            if self._cur is not None:
                self._restart_upload("new session")
            return
        if t == wire.PONG:
            if h["t"]:
                with self._lock:  # offset = learner clock - robot clock at the midpoint of the round trip
                    self._c["clock_offset_s"] = round(h["wall_time"] - (h["t"] + self.clock()) / 2, 3)
            return
        if t == wire.ERROR:
            self._on_error(h)
            return
        if not self._connected:
            return
        cur = self._cur
        if t == wire.EP_READY:
            if cur is not None and cur.sp.uid == h["id"] and cur.phase == "begin":
                try:
                    have = wire.unpack_bitmap(h["have"], cur.n)
                except wire.WireError as e:
                    log.error("learner EP_READY: %s", e)
                    return
                cur.acked, cur.n_acked = have, sum(have)
                cur.to_send = collections.deque(i for i in range(cur.n) if not have[i])
                cur.inflight.clear()
                cur.phase = "chunks"
                cur.backoff = 0.0
                if cur.n_acked == cur.n:
                    self._send_end(cur)
                else:
                    self._tick_upload(now)
        elif t == wire.ACK:
            if cur is not None and cur.sp.uid == h["id"] and cur.phase == "chunks" and h["idx"] < cur.n:
                cur.inflight.pop(h["idx"], None)
                if not cur.acked[h["idx"]]:
                    cur.acked[h["idx"]] = 1
                    cur.n_acked += 1
                    if cur.n_acked == cur.n:
                        self._send_end(cur)
                    else:
                        self._tick_upload(now)
        elif t == wire.COMMIT:
            if h["id"] in self._pending:
                self._finish(h["id"], h["index"], h.get("duplicate", False), h.get("ingest_s"))
        elif t == wire.POL_OFFER:
            self._on_offer(h)
        elif t == wire.POL_CHUNK:
            self._on_pol_chunk(h, msg.payload)
            self._tick_download(now)
        else:
            log.warning("learner sent %s, which a robot does not expect; ignoring it", msg.name)

    def _on_error(self, h: dict[str, Any]) -> None:
        code, text = h["code"], h["message"]
        with self._lock:
            self._c["rejects"] += 1
            self._c["last_error"] = f"{code}: {text}"
        cur = self._cur
        mine = cur is not None and h.get("id") == cur.sp.uid
        if code == wire.ERR_NO_SESSION:
            self._connected = False
            self._hello_at = time.monotonic()
            with self._lock:
                self._c["connected"] = False
        elif code in (wire.ERR_DUPLICATE_ROBOT, wire.ERR_IDENTITY, wire.ERR_VERSION, wire.ERR_BUSY) and h.get("ref") == "HELLO":
            log.error("learner refused this robot: %s: %s (retrying in %.0f s)", code, text, self._hello_backoff)
            self._connected = False
        elif code == wire.ERR_CRC and mine and cur.phase == "chunks" and h.get("idx") is not None:
            cur.inflight.pop(h["idx"], None)
            cur.to_send.appendleft(h["idx"])
            with self._lock:
                self._c["resends"] += 1
        elif code == wire.ERR_SHA256 and mine:
            digest = sha256_file(cur.sp.path)
            if digest != cur.sp.sha256:
                os.close(cur.fd)
                self._cur = None
                self._quarantine(cur.sp, f"the file on the robot's disk is corrupted (sha256 {digest[:12]}... != {cur.sp.sha256[:12]}...)")
            else:
                self._restart_upload("the learner's SHA-256 check failed (transport corruption?)", backoff=True)
        elif code == wire.ERR_BAD_EPISODE and mine:
            os.close(cur.fd)
            self._cur = None
            self._quarantine(cur.sp, f"the learner refused it: {text}")
        elif code == wire.ERR_CONFLICT and mine:
            # The learner stores another episode under this uuid (a forgery, or a uuid reused): this copy is not
            # committed anywhere, so it is kept, aside, for a person to look at; retrying could never succeed.
            os.close(cur.fd)
            self._cur = None
            self._quarantine(cur.sp, f"the learner holds other bytes under its uuid: {text}", folder="conflicts",
                             counter="uuid_conflicts")
        elif mine and code in (wire.ERR_INCOMPLETE, wire.ERR_UNKNOWN_TRANSFER):
            self._restart_upload(text)
        elif mine:  # disk_full, store, too_large, busy, bad_field, ...: keep the episode, retry later
            self._restart_upload(f"learner error {code}: {text}", backoff=True)
        elif code == wire.ERR_UNKNOWN_POLICY and self._dl is not None:
            log.info("policy %s is no longer offered; dropping its download", self._dl.offer["version"])
            os.close(self._dl.fd)
            self._dl.path.unlink(missing_ok=True)
            self._dl = None
        else:
            log.warning("learner error %s: %s", code, text)
