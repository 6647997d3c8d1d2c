"""The learner end of the link: receives episodes into the episode store, publishes policies, answers remote
inference. Protocol and authentication: `robot/wire.py`; the robot end: `robot/link/`.

`LearnerServer` owns one ROUTER socket, served by one I/O thread (`start()`) or the caller (`serve_forever()`,
what `wvl serve` does). Episode uploads are written chunk by chunk into ``<state>/incoming/<uuid>.part`` (CRC32
checked per chunk, SHA-256 computed incrementally as chunks arrive in order); the received-chunk bitmap is
persisted every few chunks so that an upload resumes after either side restarts. After EP_END and a matching
SHA-256, an ingest thread parses the bytes (`Episode.from_bytes` validates everything), appends them to the
`EpisodeStore` (atomic, idempotent by UUID), calls ``on_episode(index, row)`` and only then is COMMIT sent.

Bounded everywhere: frame sizes (ZMQ_MAXMSGSIZE + `wire.decode`), per-peer receive queue (RCVHWM), open
uploads (LRU, partial files kept on disk), partial uploads on disk (count, declared bytes, partial_ttl_s), what an
episode may decode to (max_decoded_bytes, checked before inflating), sessions, and warnings per peer (rate limited).
Every message gets a reply, an ERROR with a code when refused (ERROR internal when a handler hit a bug).

Each stored episode records the SHA-256 of the bytes received and the robot that sent them; a stored uuid offered
again is a duplicate (COMMIT duplicate=true) only with the same SHA-256, else ERROR uuid_conflict.

    server = LearnerServer("data/store", "tcp://127.0.0.1:5555", LearnerKeys.load(...), on_episode=cb).start()
    server.publish_policy("artifacts/loop-1")
    server.robot_status()   # {"robot-1": {"running": "loop-1", "connected": True, ...}}
    server.close()
"""

from __future__ import annotations

import collections
import errno
import json
import logging
import os
import queue
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import zmq

from learning.data.store import EpisodeConflictError, EpisodeStore, StoreError, VideoSettings
from learning.server.config import OnEpisode, ServerConfig
from learning.server.policies import PolicyOffer, load_current_offer, publish_artifact
from learning.server.uploads import HashWorker, Upload
from robot import wire
from robot.episode import Episode, EpisodeFormatError, EpisodeValidationError
from robot.policy_artifact import PolicyManifest

log = logging.getLogger(__name__)


@dataclass
class _Session:
    peer: bytes
    robot_id: str
    hello_at: float
    last_seen: float
    clock_skew_s: float



@dataclass
class _Counters:
    episodes_committed: int = 0
    episodes_duplicate: int = 0
    uuid_conflicts: int = 0       # uploads of a stored uuid with other bytes (refused; the stored episode stays)
    bytes_received: int = 0
    chunks_received: int = 0
    chunks_duplicate: int = 0
    crc_errors: int = 0
    sha_errors: int = 0
    bad_episodes: int = 0
    rejects: int = 0              # malformed or out-of-protocol messages
    errors_sent: int = 0
    send_drops: int = 0           # replies dropped (peer gone or not reading)
    robots_refused: int = 0       # identity / duplicate robot id / too many robots
    disk_full: int = 0
    store_errors: int = 0
    policies_published: int = 0
    policy_bytes_sent: int = 0
    policy_version: str | None = None
    by_code: dict[str, int] = field(default_factory=dict)


class LearnerServer:
    """The learner's side of the link. Thread-safe public methods: publish_policy, robot_status, counters, close."""

    def __init__(self, store_root: str | os.PathLike, endpoint: str, keys: wire.LearnerKeys | wire.Plaintext, *,
                 config: ServerConfig = ServerConfig(), video: VideoSettings = VideoSettings(),
                 on_episode: OnEpisode | None = None, state_dir: str | os.PathLike | None = None) -> None:
        self.config = config
        self.store = EpisodeStore(store_root, video)
        self.state_dir = Path(state_dir) if state_dir is not None else Path(store_root) / ".link"
        self.incoming = self.state_dir / "incoming"
        self.rejected_dir = self.state_dir / "rejected"
        self.policies_dir = self.state_dir / "policies"
        for d in (self.incoming, self.policies_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.on_episode = on_episode
        self._curve = not isinstance(keys, wire.Plaintext)
        self._counters = _Counters()
        self._lock = threading.Lock()  # guards _counters, _robots, _offer for readers in other threads
        self._committed: dict[str, int] = {r["uuid"]: r["episode_index"] for r in self.store.rows}
        # uuid -> (SHA-256 of the bytes it was stored from, robot that sent them); None for episodes not from the link
        self._provenance: dict[str, tuple[str | None, str | None]] = {
            r["uuid"]: (r.get("received_sha256"), r.get("robot_id")) for r in self.store.rows}
        self._sessions: dict[bytes, _Session] = {}
        self._by_robot: dict[str, bytes] = {}
        self._robots: dict[str, dict[str, Any]] = {}
        self._uploads: collections.OrderedDict[str, Upload] = collections.OrderedDict()
        self._warned: dict[tuple[bytes, str], tuple[float, int]] = {}
        self._last_flush = time.monotonic()
        self._next_sweep = time.monotonic()
        self._control: queue.SimpleQueue = queue.SimpleQueue()    # (kind, data) from other threads
        self._ingest_q: queue.Queue = queue.Queue()
        self._sha = HashWorker()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cleanup_incoming()
        self._offer: PolicyOffer | None = load_current_offer(self.policies_dir, config.policy_chunk_bytes)
        if self._offer is not None:
            self._counters.policy_version = self._offer.version

        self._ctx = zmq.Context(1)
        self._sock = self._ctx.socket(zmq.ROUTER)
        s = self._sock
        s.linger = 0
        s.router_mandatory = 1                   # a reply to a vanished peer raises instead of vanishing silently
        s.rcvhwm = config.rcv_hwm
        s.sndhwm = 1024
        s.maxmsgsize = max(config.max_chunk_bytes, wire.MAX_HEADER_BYTES) + 4096  # per frame; bigger -> disconnect
        s.heartbeat_ivl = int(config.heartbeat_s * 1000)
        s.heartbeat_timeout = int(config.heartbeat_s * 3000)
        self._auth = wire.configure_server(self._ctx, s, keys, what=f"learner server on {endpoint}")
        try:
            s.bind(endpoint)
        except zmq.ZMQError as e:
            self._close_sockets()
            raise OSError(f"learner server: cannot bind {endpoint} ({e}); is another `wvl serve` running there?") from e
        self.endpoint = s.getsockopt_string(zmq.LAST_ENDPOINT)
        self._ingester = threading.Thread(target=self._ingest_loop, name="wvl-learner-ingest", daemon=True)
        self._ingester.start()
        log.info("learner server on %s (%s), store %s (%d episodes)%s", self.endpoint, "CURVE" if self._curve else "PLAINTEXT",
                 self.store.root, len(self.store), f", offering policy {self._offer.version}" if self._offer else "")

    # ------------------------------------------------------------------ public API
    def start(self) -> "LearnerServer":
        """Serve in a background thread (named wvl-learner-io)."""
        self._thread = threading.Thread(target=self.serve_forever, name="wvl-learner-io", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve until close() (or the stop event) from the calling thread."""
        try:
            while not self._stop.is_set():
                self._drain_control()
                if self._sock.poll(20):
                    for _ in range(256):  # a burst, then timers and control messages get their turn
                        try:
                            frames = self._sock.recv_multipart(zmq.NOBLOCK, copy=False)
                        except zmq.Again:
                            break
                        try:
                            self._handle(frames)
                        except Exception as e:  # a bug must not take the learner down for every robot
                            log.exception("learner: unexpected error handling a message from peer %s; answered ERROR %s",
                                          frames[0].bytes.hex() if frames else "?", wire.ERR_INTERNAL)
                            with self._lock:
                                self._counters.rejects += 1
                            self._answer_internal_error(frames, e)
                self._periodic()
        finally:
            self._shutdown()

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        else:
            self._shutdown()

    def __enter__(self) -> "LearnerServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def publish_policy(self, artifact_folder: str | os.PathLike) -> PolicyManifest:
        """Verify an artifact (manifest + hashes), snapshot it under the server's state folder and offer it to every
        robot (now and on each later connection). Returns its manifest. Raises ArtifactError naming the problem."""
        offer = publish_artifact(artifact_folder, self.policies_dir, self.config.policy_chunk_bytes)
        self._control.put(("offer", offer))
        log.info("published policy %s (%d bytes, %d files, sha256 %s...)", offer.version, offer.size, len(offer.files),
                 offer.sha256[:12])
        return offer.manifest

    def robot_status(self) -> dict[str, dict[str, Any]]:
        """robot id -> {running, ready, rejected, reason, connected, last_seen_s (ago), clock_skew_s, episodes}."""
        now = time.monotonic()
        with self._lock:
            out = {}
            for rid, st in self._robots.items():
                d = dict(st)
                d["last_seen_s"] = round(now - d.pop("_last_seen"), 3)
                d["connected"] = rid in self._by_robot and d["last_seen_s"] < self.config.stale_after_s
                out[rid] = d
            return out

    def counters(self) -> dict[str, Any]:
        with self._lock:
            c = dict(vars(self._counters))
            c["by_code"] = dict(c["by_code"])
            c["sessions"] = len(self._sessions)
            c["uploads_open"] = len(self._uploads)
            c["episodes_in_store"] = len(self._committed)
            c["auth_denied"] = getattr(self._auth, "denied", 0)
            return c

    # ------------------------------------------------------------------ I/O thread: dispatch
    def _handle(self, frames: list[zmq.Frame]) -> None:
        peer = frames[0].bytes
        body = frames[1:]
        try:
            msg = wire.decode(body, max_payload=self.config.max_chunk_bytes)
        except wire.WireError as e:
            ref = bytes(body[0].buffer[:16]) if body else b""
            self._reject(peer, e.code, str(e), ref=ref, **e.detail)
            return
        if msg.type == wire.HELLO:
            self._on_hello(peer, msg, wire.peer_name(body[0]) if self._curve else None)
            return
        handler = self._handlers.get(msg.type)
        if handler is None:
            if msg.type == wire.ERROR:  # a robot reporting a problem: log it, never answer an error with an error
                self._warn(peer, "robot-error", "robot %r reports %s: %s", self._robot_of(peer), msg.header["code"], msg.header["message"])
            else:
                self._reject(peer, wire.ERR_UNKNOWN_TYPE, f"{msg.name} is not a robot-to-learner message", ref=msg.type)
            return
        sess = self._sessions.get(peer)
        if sess is None:
            self._reject(peer, wire.ERR_NO_SESSION, f"{msg.name} before HELLO (did the learner restart?); say HELLO first", ref=msg.type)
            return
        sess.last_seen = time.monotonic()
        self._robots[sess.robot_id]["_last_seen"] = sess.last_seen
        handler(self, sess, msg)

    def _answer_internal_error(self, frames: list[zmq.Frame], e: Exception) -> None:
        """Every message gets a reply, even one that hit a bug here: ERROR internal (the robot keeps its episode and
        retries with backoff), naming the transfer when the header said which."""
        if len(frames) < 3:
            return
        try:
            msg = wire.decode(frames[1:], max_payload=self.config.max_chunk_bytes)
            detail = {k: v for k, v in msg.header.items() if k in ("id", "idx", "req")}
            ref = msg.type
        except wire.WireError:
            detail, ref = {}, None
        try:
            self._send_error(frames[0].bytes, wire.ERR_INTERNAL, f"learner bug ({type(e).__name__}: {str(e)[:200]}); "
                             "keep the episode and retry; the learner's log has the traceback", ref, **detail)
        except Exception:  # pragma: no cover - the reply itself failed; the log line above stands
            log.exception("learner: could not answer the failed message")

    def _reject(self, peer: bytes, code: str, message: str, ref: bytes | None = None, **detail: Any) -> None:
        with self._lock:
            self._counters.rejects += 1
        self._warn(peer, code, "refused a message from %s: %s", self._robot_of(peer), message)
        self._send_error(peer, code, message, ref, **detail)

    def _send_error(self, peer: bytes, code: str, message: str, ref: bytes | None = None, **detail: Any) -> None:
        with self._lock:
            self._counters.errors_sent += 1
            self._counters.by_code[code] = self._counters.by_code.get(code, 0) + 1
        self._send(peer, wire.error(code, message, ref, **detail))

    def _send(self, peer: bytes, frames: list) -> bool:
        try:
            self._sock.send_multipart([peer, *frames], zmq.NOBLOCK, copy=False)
            return True
        except zmq.ZMQError:  # EHOSTUNREACH (peer gone) or EAGAIN (peer not reading): drop, it will ask again
            with self._lock:
                self._counters.send_drops += 1
            return False

    def _warn(self, peer: bytes, reason: str, fmt: str, *args: Any) -> None:
        """Rate-limited warning per (peer, reason): the first one is logged, the rest within warn_every_s at DEBUG
        and counted; `_flush_warnings` logs the count ("N similar suppressed")."""
        key = (peer, reason)
        now = time.monotonic()
        last, suppressed = self._warned.get(key, (-1e9, 0))
        if now - last >= self.config.warn_every_s:
            extra = f" (+{suppressed} similar suppressed)" if suppressed else ""
            log.warning(fmt + extra, *args)
            self._warned[key] = (now, 0)
            if len(self._warned) > 4096:  # bounded: forget the oldest entries
                self._flush_warnings(force=True)
        else:
            log.debug(fmt, *args)
            self._warned[key] = (last, suppressed + 1)

    def _flush_warnings(self, force: bool = False) -> None:
        now = time.monotonic()
        for (peer, reason), (last, suppressed) in list(self._warned.items()):
            if force or now - last >= self.config.warn_every_s:
                if suppressed:
                    log.warning("%s: %d more %r messages refused (suppressed)", self._robot_of(peer), suppressed, reason)
                del self._warned[(peer, reason)]

    def _robot_of(self, peer: bytes) -> str:
        s = self._sessions.get(peer)
        return s.robot_id if s else f"peer {peer.hex()}"

    # ------------------------------------------------------------------ sessions
    def _on_hello(self, peer: bytes, msg: wire.Message, key_name: str | None) -> None:
        h = msg.header
        rid = h["robot_id"]
        now = time.monotonic()
        if self._curve and key_name != rid:
            with self._lock:
                self._counters.robots_refused += 1
            self._reject(peer, wire.ERR_IDENTITY, f"robot_id {rid!r} does not match the name of this robot's CURVE key "
                         f"({key_name!r}); use the id the key was made for", ref=msg.type)
            return
        if h["schema"] != wire.schema_hash():
            self._reject(peer, wire.ERR_VERSION, f"schema {h['schema']} differs from the learner's {wire.schema_hash()} "
                         "(episode / policy / wire formats); install the same world-vla-loop version on both", ref=msg.type)
            return
        old_peer = self._by_robot.get(rid)
        if old_peer is not None and old_peer != peer:
            old = self._sessions.get(old_peer)
            # The old connection is still routable (probe) and heard from recently: two live robots claim one id.
            alive = old is not None and now - old.last_seen < self.config.stale_after_s and self._send(
                old_peer, wire.encode(wire.PONG, {"t": 0.0, "wall_time": time.time()}))
            if alive:
                with self._lock:
                    self._counters.robots_refused += 1
                self._reject(peer, wire.ERR_DUPLICATE_ROBOT, f"robot id {rid!r} is already connected from another "
                             "process or machine; give each robot its own id (and key)", ref=msg.type)
                return
            self._drop_session(old_peer)
        if peer not in self._sessions and len(self._sessions) >= self.config.max_robots:
            stalest = min(self._sessions.values(), key=lambda s: s.last_seen)
            if now - stalest.last_seen < self.config.stale_after_s:
                with self._lock:
                    self._counters.robots_refused += 1
                self._reject(peer, wire.ERR_BUSY, f"{self.config.max_robots} robots are connected already", ref=msg.type)
                return
            self._drop_session(stalest.peer)
        skew = h["wall_time"] - time.time()
        if abs(skew) > self.config.max_clock_skew_s:
            log.warning("robot %r's clock is %+.1f s off the learner's; its episodes keep their own timestamps, "
                        "nothing here depends on it, but fix NTP on the robot PC", rid, skew)
        if peer in self._sessions:  # a re-HELLO on the same connection (possibly under another id in plaintext mode)
            self._drop_session(peer)
        self._sessions[peer] = _Session(peer, rid, now, now, skew)
        self._by_robot[rid] = peer
        with self._lock:
            if rid not in self._robots and len(self._robots) >= 4 * self.config.max_robots:  # bounded (plaintext ids are free)
                gone = [r for r in self._robots if r not in self._by_robot]
                if gone:
                    del self._robots[min(gone, key=lambda r: self._robots[r]["_last_seen"])]
            st = self._robots.setdefault(rid, {"running": None, "ready": None, "rejected": None, "reason": "", "episodes": 0})
            st.update(running=h.get("running_policy"), clock_skew_s=round(skew, 3), _last_seen=now)
        log.info("robot %r connected (running policy %s)", rid, h.get("running_policy"))
        self._send(peer, wire.encode(wire.WELCOME, {"wall_time": time.time(), "server": "wvl-learner"}))
        if self._offer is not None:
            self._send(peer, wire.encode(wire.POL_OFFER, self._offer.header()))

    def _drop_session(self, peer: bytes) -> None:
        s = self._sessions.pop(peer, None)
        if s is not None and self._by_robot.get(s.robot_id) == peer:
            del self._by_robot[s.robot_id]

    def _on_bye(self, sess: _Session, msg: wire.Message) -> None:
        log.info("robot %r said goodbye", sess.robot_id)
        self._drop_session(sess.peer)

    def _on_ping(self, sess: _Session, msg: wire.Message) -> None:
        self._send(sess.peer, wire.encode(wire.PONG, {"t": msg.header["t"], "wall_time": time.time()}))

    def _on_pol_status(self, sess: _Session, msg: wire.Message) -> None:
        h = msg.header
        with self._lock:
            self._robots[sess.robot_id].update(running=h["running"], ready=h.get("ready"), rejected=h.get("rejected"),
                                               reason=h.get("reason", ""))
        if h.get("rejected"):
            log.warning("robot %r refused policy %s: %s", sess.robot_id, h["rejected"], h.get("reason", ""))
        log.info("robot %r runs policy %s (ready: %s)", sess.robot_id, h["running"], h.get("ready"))

    # ------------------------------------------------------------------ episodes up
    def _on_ep_begin(self, sess: _Session, msg: wire.Message) -> None:
        h = msg.header
        uid, size, sha, cs, n = h["id"], h["size"], h["sha256"], h["chunk_size"], h["n_chunks"]
        if uid in self._committed:
            stored = self._provenance.get(uid, (None, None))[0]
            if stored is not None and stored != sha:
                self._refuse_conflict(sess, uid, sha, msg.type)
                return
            with self._lock:
                self._counters.episodes_duplicate += 1
            self._send(sess.peer, wire.encode(wire.COMMIT, {"id": uid, "index": self._committed[uid], "duplicate": True}))
            return
        if size > self.config.max_episode_bytes:
            self._reject(sess.peer, wire.ERR_TOO_LARGE, f"EP_BEGIN size {size} is over this learner's limit of "
                         f"{self.config.max_episode_bytes} bytes", ref=msg.type, id=uid)
            return
        if cs > self.config.max_chunk_bytes:
            self._reject(sess.peer, wire.ERR_TOO_LARGE, f"EP_BEGIN chunk_size {cs} is over {self.config.max_chunk_bytes}",
                         ref=msg.type, id=uid)
            return
        if n != wire.n_chunks(size, cs):
            self._reject(sess.peer, wire.ERR_BAD_FIELD, f"EP_BEGIN n_chunks {n} disagrees with size {size} / chunk_size {cs} "
                         f"(expected {wire.n_chunks(size, cs)})", ref=msg.type, id=uid)
            return
        up = self._uploads.get(uid)
        if up is not None and not up.matches(size, sha, cs):
            if up.ingesting:
                self._send_error(sess.peer, wire.ERR_BUSY, f"episode {uid} is being stored from other bytes; retry", id=uid)
                return
            log.warning("episode %s restarted with a different size/sha256; dropping the partial upload", uid)
            up.discard()
            del self._uploads[uid]
            up = None
        if up is None:
            free = shutil.disk_usage(self.incoming).free
            if free - size < self.config.disk_reserve_bytes:
                with self._lock:
                    self._counters.disk_full += 1
                self._send_error(sess.peer, wire.ERR_DISK_FULL, f"learner disk: {free >> 20} MiB free, episode needs {size >> 20} MiB "
                                 f"plus a {self.config.disk_reserve_bytes >> 20} MiB reserve; keep it and retry later", id=uid)
                log.error("learner disk full: refused episode %s from %r (%d MiB free)", uid, sess.robot_id, free >> 20)
                return
            if not self._make_room(uid, size, sess.robot_id):
                self._send_error(sess.peer, wire.ERR_BUSY, f"learner holds {self.config.max_partial_bytes >> 20} MiB of partial "
                                 "uploads from robots still connected; keep the episode and retry later", ref=msg.type, id=uid)
                log.warning("refused episode %s from %r: partial uploads would exceed max_partial_bytes", uid, sess.robot_id)
                return
            up = Upload.resume(self.incoming, uid, size, sha, cs, n, sess.robot_id)
            self._uploads[uid] = up
            self._bound_uploads(keep=uid)
        self._uploads.move_to_end(uid)
        up.robot_id = sess.robot_id
        up.touched = time.monotonic()
        self._send(sess.peer, wire.encode(wire.EP_READY, {"id": uid, "have": wire.pack_bitmap(up.have)}))

    def _refuse_conflict(self, sess: _Session, uid: str, sha: str, ref: bytes) -> None:
        """A stored uuid offered with other bytes: never COMMIT it (the robot would delete its copy of a different
        episode); ERROR uuid_conflict, the robot keeps it aside."""
        stored, by = self._provenance.get(uid, (None, None))
        with self._lock:
            self._counters.uuid_conflicts += 1
        self._warn(sess.peer, "uuid-conflict", "robot %r offered episode %s with sha256 %s..., but it is stored (#%d, from %r) "
                   "with sha256 %s...; refused", sess.robot_id, uid, sha[:12], self._committed[uid], by, (stored or "?")[:12])
        self._send_error(sess.peer, wire.ERR_CONFLICT, f"episode {uid} is stored already from other bytes (sha256 "
                         f"{(stored or '?')[:12]}..., yours {sha[:12]}...); keep your copy and check where the uuid came from",
                         ref=ref, id=uid)

    def _bound_uploads(self, keep: str) -> None:
        """Bound open uploads (LRU: closed, kept on disk; EP_BEGIN resumes them). ``keep`` is the upload being started:
        never closed here (when every other open upload is being ingested, the open count exceeds max_uploads until
        an ingest finishes -- ingests are bounded by the robots' own windows)."""
        while len(self._uploads) > self.config.max_uploads:
            for uid, up in self._uploads.items():
                if not up.ingesting and uid != keep:
                    if up.n_have:
                        up.save_state()
                    up.close()
                    del self._uploads[uid]  # kept on disk; EP_BEGIN resumes it
                    break
            else:
                return

    # ------------------------------------------------------------------ partial uploads on disk
    def _partials(self, asking: str | None = None) -> dict[str, tuple[int, float, bool]]:
        """uid -> (declared bytes, seconds untouched, deletable) of every partial upload, open or only on disk.
        Deletable: not being ingested, and not the upload a connected robot (other than ``asking``, the robot starting
        a new one) is sending now -- a robot sends one episode at a time, so that is its most recently touched one."""
        now, now_wall = time.monotonic(), time.time()
        active: dict[str, tuple[float, str]] = {}
        for uid, up in self._uploads.items():
            if up.robot_id and up.robot_id != asking and self._live(up.robot_id, now):
                if up.touched > active.get(up.robot_id, (-1.0, ""))[0]:
                    active[up.robot_id] = (up.touched, uid)
        protected = {uid for _, uid in active.values()}
        out: dict[str, tuple[int, float, bool]] = {}
        for uid, up in self._uploads.items():
            out[uid] = (up.size, now - up.touched, not up.ingesting and uid not in protected)
        for p in list(self.incoming.glob("*.part")) + list(self.incoming.glob("*.state")):
            uid = p.name.split(".")[0]
            if uid in out:
                continue
            size, mtime = 0, 0.0
            for q in (p.with_suffix(".part"), p.with_suffix(".state")):
                try:
                    st = q.stat()
                except FileNotFoundError:
                    continue
                mtime = max(mtime, st.st_mtime)
                if q.suffix == ".part":
                    size = st.st_size
            try:  # the declared size (a .part is sparse until complete)
                size = max(size, int(json.loads(p.with_suffix(".state").read_text())["size"]))
            except (OSError, ValueError, KeyError, TypeError):
                pass
            out[uid] = (size, now_wall - mtime, True)
        return out

    def _live(self, rid: str, now: float) -> bool:
        sess = self._sessions.get(self._by_robot.get(rid, b""))
        return sess is not None and now - sess.last_seen < self.config.stale_after_s

    def _delete_partial(self, uid: str, why: str) -> None:
        log.warning("deleting the partial upload of episode %s (%s); its robot keeps the episode until COMMIT and sends "
                    "it again", uid, why)
        up = self._uploads.pop(uid, None)
        if up is not None:
            up.discard()
        (self.incoming / f"{uid}.part").unlink(missing_ok=True)
        (self.incoming / f"{uid}.state").unlink(missing_ok=True)

    def _make_room(self, uid: str, size: int, robot_id: str) -> bool:
        """Before ``robot_id`` starts uploading ``size`` bytes: delete the longest-untouched deletable partials while
        there are more than max_partial_uploads or their declared bytes exceed max_partial_bytes. False when the
        bytes still do not fit (the rest are being ingested or sent by connected robots): the robot retries later."""
        parts = self._partials(asking=robot_id)
        parts.pop(uid, None)
        count, total = len(parts) + 1, sum(p[0] for p in parts.values()) + size
        for other, (nbytes, untouched, deletable) in sorted(parts.items(), key=lambda kv: -kv[1][1]):
            if count <= self.config.max_partial_uploads and total <= self.config.max_partial_bytes:
                break
            if deletable:
                self._delete_partial(other, f"untouched {untouched:.0f} s; more than {self.config.max_partial_uploads} partial "
                                            f"uploads or {self.config.max_partial_bytes >> 20} MiB of them")
                count, total = count - 1, total - nbytes
        return total <= self.config.max_partial_bytes

    def _expire_partials(self) -> None:
        """Delete partial uploads untouched for partial_ttl_s that no connected robot is sending (runs every few s)."""
        for uid, (_, untouched, deletable) in self._partials().items():
            if deletable and untouched > self.config.partial_ttl_s:
                self._delete_partial(uid, f"untouched {untouched:.0f} s, over partial_ttl_s {self.config.partial_ttl_s:g} s")

    def _on_chunk(self, sess: _Session, msg: wire.Message) -> None:
        h, data = msg.header, msg.payload
        uid, idx = h["id"], h["idx"]
        up = self._uploads.get(uid)
        if up is None or up.ingesting:
            if uid in self._committed or (up is not None and up.ingesting):
                self._send(sess.peer, wire.encode(wire.ACK, {"id": uid, "idx": idx}))  # late duplicate: harmless
                return
            self._reject(sess.peer, wire.ERR_UNKNOWN_TRANSFER, f"CHUNK for episode {uid} without EP_BEGIN", ref=msg.type, id=uid, idx=idx)
            return
        if idx >= up.n:
            self._reject(sess.peer, wire.ERR_OUT_OF_RANGE, f"CHUNK idx {idx} >= n_chunks {up.n}", ref=msg.type, id=uid, idx=idx)
            return
        if len(data) != up.chunk_len(idx):
            self._reject(sess.peer, wire.ERR_OUT_OF_RANGE, f"CHUNK {idx} has {len(data)} bytes, EP_BEGIN implies {up.chunk_len(idx)}",
                         ref=msg.type, id=uid, idx=idx)
            return
        if wire.crc32(data) != h["crc32"]:
            with self._lock:
                self._counters.crc_errors += 1
            self._warn(sess.peer, "crc", "CRC32 mismatch on chunk %d of episode %s from %r; asking again", idx, uid, sess.robot_id)
            self._send_error(sess.peer, wire.ERR_CRC, f"chunk {idx} failed its CRC32; resend it", ref=msg.type, id=uid, idx=idx)
            return
        if up.have[idx]:
            with self._lock:
                self._counters.chunks_duplicate += 1
            self._send(sess.peer, wire.encode(wire.ACK, {"id": uid, "idx": idx}))
            return
        try:
            up.open()
            os.pwrite(up.fd, data, idx * up.chunk_size)
        except OSError as e:
            full = e.errno == errno.ENOSPC
            with self._lock:
                self._counters.disk_full += int(full)
            code = wire.ERR_DISK_FULL if full else wire.ERR_STORE
            log.error("cannot write chunk %d of episode %s to %s: %s", idx, uid, up.path, e.strerror)
            self._send_error(sess.peer, code, f"learner cannot write the chunk ({e.strerror}); keep the episode and retry later",
                             ref=msg.type, id=uid, idx=idx)
            return
        up.have[idx] = 1
        up.n_have += 1
        up.dirty += 1
        up.touched = time.monotonic()
        up.robot_id = sess.robot_id
        while up.hashed < up.n and up.have[up.hashed]:  # in order: hash from memory; after a gap: read back
            i = up.hashed
            self._sha.feed(up, data if i == idx else os.pread(up.fd, up.chunk_len(i), i * up.chunk_size))
            up.hashed += 1
        if up.dirty >= self.config.state_every_chunks:
            up.save_state()
        with self._lock:
            self._counters.chunks_received += 1
            self._counters.bytes_received += len(data)
        self._send(sess.peer, wire.encode(wire.ACK, {"id": uid, "idx": idx}))

    def _on_ep_end(self, sess: _Session, msg: wire.Message) -> None:
        uid = msg.header["id"]
        up = self._uploads.get(uid)
        if uid in self._committed and (up is None or not up.ingesting):
            stored, by = self._provenance.get(uid, (None, None))
            if up is not None and stored is not None and up.sha256 != stored:
                self._refuse_conflict(sess, uid, up.sha256, msg.type)
            elif up is not None or stored is None or by == sess.robot_id:  # same bytes, or a resend by the uploader
                self._send(sess.peer, wire.encode(wire.COMMIT, {"id": uid, "index": self._committed[uid], "duplicate": True}))
            else:  # which bytes this robot holds is unknown here: EP_BEGIN says (its SHA-256 is checked there)
                self._send_error(sess.peer, wire.ERR_UNKNOWN_TRANSFER, f"EP_END for stored episode {uid} without EP_BEGIN; "
                                 "send EP_BEGIN again", ref=msg.type, id=uid)
            if up is not None:  # a partial of a stored uuid is redundant either way
                up.discard()
                del self._uploads[uid]
            return
        if up is None:
            self._reject(sess.peer, wire.ERR_UNKNOWN_TRANSFER, f"EP_END for episode {uid} without EP_BEGIN", ref=msg.type, id=uid)
            return
        if up.ingesting:
            up.waiters.add(sess.robot_id)
            return
        if up.n_have < up.n:
            self._send_error(sess.peer, wire.ERR_INCOMPLETE, f"EP_END with {up.n - up.n_have} of {up.n} chunks missing; "
                             "send EP_BEGIN again for the list", ref=msg.type, id=uid)
            return
        up.open()
        while up.hashed < up.n:  # resumed uploads: hash what an earlier run received
            self._sha.feed(up, os.pread(up.fd, up.chunk_len(up.hashed), up.hashed * up.chunk_size))
            up.hashed += 1
        digest = self._sha.digest(up)
        if digest != up.sha256:
            with self._lock:
                self._counters.sha_errors += 1
            log.error("episode %s from %r: SHA-256 %s... does not match EP_BEGIN's %s...; discarding the received bytes",
                      uid, sess.robot_id, digest[:12], up.sha256[:12])
            up.discard()
            del self._uploads[uid]
            self._send_error(sess.peer, wire.ERR_SHA256, f"episode {uid}: SHA-256 of the received bytes does not match; "
                             "send it again from the start", ref=msg.type, id=uid)
            return
        # No fsync of the .part: the commit point is the store's own atomic (fsync'd) append; until then the robot
        # keeps its copy, so a power loss here costs a resend, never an episode.
        up.close()
        up.save_state()
        up.ingesting = True
        up.waiters.add(sess.robot_id)
        self._ingest_q.put((uid, up.path, sess.robot_id, up.sha256))

    # ------------------------------------------------------------------ ingest thread
    def _ingest_loop(self) -> None:
        while True:
            job = self._ingest_q.get()
            if job is None:
                return
            uid, path, rid, sha = job
            t0 = time.perf_counter()
            try:
                data = path.read_bytes()
                ep = Episode.from_bytes(data, max_decoded_bytes=self.config.max_decoded_bytes)
                if ep.uuid != uid:
                    raise EpisodeFormatError(f"uuid: the bytes hold episode {ep.uuid}, EP_BEGIN said {uid}")
                index = self.store.append(ep, received_sha256=sha, robot_id=rid)
            except EpisodeConflictError as e:
                self._control.put(("ingested", (uid, None, wire.ERR_CONFLICT, str(e), rid, 0.0)))
                continue
            except (EpisodeFormatError, EpisodeValidationError) as e:
                self._control.put(("ingested", (uid, None, wire.ERR_BAD_EPISODE, f"episode {uid} is not valid: {e}", rid, 0.0)))
                continue
            except (StoreError, OSError) as e:
                cause = e.__cause__ if isinstance(e, StoreError) else e
                code = wire.ERR_DISK_FULL if getattr(cause, "errno", None) == errno.ENOSPC else wire.ERR_STORE
                self._control.put(("ingested", (uid, None, code, f"learner could not store episode {uid}: {e}", rid, 0.0)))
                continue
            except Exception as e:  # a bug must not kill the ingest thread
                log.exception("ingest of episode %s failed", uid)
                self._control.put(("ingested", (uid, None, wire.ERR_STORE, f"learner could not store episode {uid}: {e}", rid, 0.0)))
                continue
            row = self.store.row(index)
            log.info("stored episode %s from %r as #%d (%s, %d steps, %.1f MB) in %.2f s", uid, rid, index, ep.outcome, len(ep),
                     len(data) / 1e6, time.perf_counter() - t0)
            if self.on_episode is not None:
                try:
                    self.on_episode(index, row)
                except Exception:
                    log.exception("on_episode callback failed for episode #%d (the episode is stored)", index)
            self._control.put(("ingested", (uid, index, None, "", rid, time.perf_counter() - t0,
                                            (row.get("received_sha256"), row.get("robot_id")))))

    def _on_ingested(self, uid: str, index: int | None, code: str | None, message: str, rid: str, ingest_s: float,
                     provenance: tuple[str | None, str | None] = (None, None)) -> None:
        up = self._uploads.pop(uid, None)
        waiters = up.waiters if up is not None else set()
        if index is not None:
            duplicate = uid in self._committed
            self._committed[uid] = index
            self._provenance[uid] = provenance
            if up is not None:
                up.discard()
            with self._lock:
                if duplicate:
                    self._counters.episodes_duplicate += 1
                else:
                    self._counters.episodes_committed += 1
                if rid in self._robots:
                    self._robots[rid]["episodes"] = self._robots[rid].get("episodes", 0) + 1
            commit = {"id": uid, "index": index, "duplicate": duplicate, "ingest_s": ingest_s}
            for w in waiters:
                if w in self._by_robot:
                    self._send(self._by_robot[w], wire.encode(wire.COMMIT, commit))
            return
        if code == wire.ERR_CONFLICT:
            with self._lock:
                self._counters.uuid_conflicts += 1
            log.warning("%s (from %r; refused, the robot keeps its copy)", message, rid)
            if up is not None:
                up.discard()
        elif code == wire.ERR_BAD_EPISODE:
            with self._lock:
                self._counters.bad_episodes += 1
            log.error("%s; kept in %s", message, self.rejected_dir)
            if up is not None:
                self.rejected_dir.mkdir(parents=True, exist_ok=True)
                os.replace(up.path, self.rejected_dir / f"{uid}.episode")
                up.state_path.unlink(missing_ok=True)
        else:
            with self._lock:
                self._counters.store_errors += 1
                self._counters.disk_full += int(code == wire.ERR_DISK_FULL)
            log.error("%s (the verified upload is kept; the robot keeps its copy and retries)", message)
        for w in waiters:
            if w in self._by_robot:
                self._send_error(self._by_robot[w], code or wire.ERR_STORE, message, ref=wire.EP_END, id=uid)

    # ------------------------------------------------------------------ policies down
    def _on_pol_get(self, sess: _Session, msg: wire.Message) -> None:
        h = msg.header
        o = self._offer
        if o is None or (h["version"], h["sha256"]) != (o.version, o.sha256):
            self._send_error(sess.peer, wire.ERR_UNKNOWN_POLICY, f"policy {h['version']} ({h['sha256'][:12]}...) is not offered "
                             f"any more; current: {o.version if o else None}", ref=msg.type, idx=h["idx"])
            return
        idx = h["idx"]
        if idx >= o.n_chunks:
            self._reject(sess.peer, wire.ERR_OUT_OF_RANGE, f"POL_GET idx {idx} >= n_chunks {o.n_chunks}", ref=msg.type, idx=idx)
            return
        data = o.read_chunk(idx)
        self._send(sess.peer, wire.encode(wire.POL_CHUNK, {"version": o.version, "sha256": o.sha256, "idx": idx,
                                                           "crc32": wire.crc32(data)}, data))
        with self._lock:
            self._counters.policy_bytes_sent += len(data)

    # ------------------------------------------------------------------ housekeeping
    def _drain_control(self) -> None:
        while True:
            try:
                kind, data = self._control.get_nowait()
            except queue.Empty:
                return
            if kind == "offer":
                if self._offer is not None:
                    self._offer.close()
                self._offer = data
                with self._lock:
                    self._counters.policies_published += 1
                    self._counters.policy_version = data.version
                for peer in list(self._sessions):
                    self._send(peer, wire.encode(wire.POL_OFFER, data.header()))
            elif kind == "ingested":
                self._on_ingested(*data)

    def _periodic(self) -> None:
        now = time.monotonic()
        if now - self._last_flush >= 1.0:
            self._last_flush = now
            self._flush_warnings()
        for up in list(self._uploads.values()):
            if up.dirty and now - up.touched > 1.0 and not up.ingesting:
                up.save_state()
        if now >= self._next_sweep:
            self._next_sweep = now + min(10.0, self.config.partial_ttl_s / 4)
            self._expire_partials()

    def _cleanup_incoming(self) -> None:
        """At start-up: drop partial uploads older than partial_ttl_s and leftovers of episodes already stored."""
        now = time.time()
        for p in list(self.incoming.glob("*.state")) + list(self.incoming.glob("*.part")) + list(self.incoming.glob("*.tmp")):
            uid = p.name.split(".")[0]
            try:
                old = now - p.stat().st_mtime > self.config.partial_ttl_s
            except FileNotFoundError:
                continue
            if old or uid in self._committed or p.suffix == ".tmp":
                p.unlink(missing_ok=True)

    def _shutdown(self) -> None:
        if getattr(self, "_closed", False):
            return
        self._closed = True
        self._ingest_q.put(None)
        self._ingester.join(30)
        self._sha.close()
        self._drain_control()  # deliver COMMITs of ingests that finished
        self._flush_warnings(force=True)
        for up in self._uploads.values():
            if up.n_have and not up.ingesting:
                up.save_state()
            up.close()
        if self._offer is not None:
            self._offer.close()
        self._close_sockets()
        log.info("learner server on %s stopped: %s", self.endpoint, {k: v for k, v in self.counters().items() if v})

    def _close_sockets(self) -> None:
        self._sock.close(0)
        if self._auth is not None:
            self._auth.stop()
        self._ctx.term()

    _handlers: dict[bytes, Callable[["LearnerServer", _Session, wire.Message], None]] = {
        wire.BYE: _on_bye, wire.PING: _on_ping, wire.POL_STATUS: _on_pol_status, wire.EP_BEGIN: _on_ep_begin,
        wire.CHUNK: _on_chunk, wire.EP_END: _on_ep_end, wire.POL_GET: _on_pol_get,
    }
