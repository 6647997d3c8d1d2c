"""The learner end of the link: receives episodes into the episode store, publishes policies, answers remote
inference. Protocol and authentication: `robot/wire.py`; the robot end: `robot/link/`.

`LearnerServer` owns one ROUTER socket, served by one I/O thread (`start()`) or the caller (`serve_forever()`,
what `wvl serve` does): sessions (HELLO, identity, one connection per robot id), dispatch of every message to its
handler, the counters, and rate-limited warnings. Episodes up: `learning.server.ingest.EpisodeIngest`; policies down:
`learning.server.policies` (published blob, served chunk by chunk here).

Bounded everywhere: frame sizes (ZMQ_MAXMSGSIZE + `wire.decode`), per-peer receive queue (RCVHWM), sessions,
warnings per peer (rate limited), and in the ingest open uploads, partial uploads on disk and what an episode may
decode to. Every message gets a reply, an ERROR with a code when refused (ERROR internal when a handler hit a bug).

    server = LearnerServer("data/store", "tcp://127.0.0.1:5555", LearnerKeys.load(...), on_episode=cb).start()
    server.publish_policy("artifacts/loop-1")
    server.robot_status()   # {"robot-1": {"running": "loop-1", "connected": True, ...}}
    server.close()
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import zmq

from learning.data.store import EpisodeStore, VideoSettings
from learning.server.config import OnEpisode, ServerConfig
from learning.server.ingest import EpisodeIngest
from learning.server.policies import PolicyOffer, load_current_offer, publish_artifact
from robot import wire
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
        self.policies_dir = self.state_dir / "policies"
        self.policies_dir.mkdir(parents=True, exist_ok=True)
        self._curve = not isinstance(keys, wire.Plaintext)
        self._counters = _Counters()
        self._lock = threading.Lock()  # guards _counters, _robots, _offer for readers in other threads
        self._sessions: dict[bytes, _Session] = {}
        self._by_robot: dict[str, bytes] = {}
        self._robots: dict[str, dict[str, Any]] = {}
        self._warned: dict[tuple[bytes, str], tuple[float, int]] = {}
        self._last_flush = time.monotonic()
        self._control: queue.SimpleQueue = queue.SimpleQueue()    # (kind, data) from other threads
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.ingest = EpisodeIngest(self, self.store, self.state_dir, config, on_episode)
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
        self.ingest.start()
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
            c["uploads_open"] = len(self.ingest.uploads)
            c["episodes_in_store"] = len(self.ingest.committed)
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
            self.reject(peer, e.code, str(e), ref=ref, **e.detail)
            return
        if msg.type == wire.HELLO:
            self._on_hello(peer, msg, wire.peer_name(body[0]) if self._curve else None)
            return
        handler = self._handlers.get(msg.type)
        if handler is None:
            if msg.type == wire.ERROR:  # a robot reporting a problem: log it, never answer an error with an error
                self.warn(peer, "robot-error", "robot %r reports %s: %s", self._robot_of(peer), msg.header["code"], msg.header["message"])
            else:
                self.reject(peer, wire.ERR_UNKNOWN_TYPE, f"{msg.name} is not a robot-to-learner message", ref=msg.type)
            return
        sess = self._sessions.get(peer)
        if sess is None:
            self.reject(peer, wire.ERR_NO_SESSION, f"{msg.name} before HELLO (did the learner restart?); say HELLO first", ref=msg.type)
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
            self.send_error(frames[0].bytes, wire.ERR_INTERNAL, f"learner bug ({type(e).__name__}: {str(e)[:200]}); "
                             "keep the episode and retry; the learner's log has the traceback", ref, **detail)
        except Exception:  # pragma: no cover - the reply itself failed; the log line above stands
            log.exception("learner: could not answer the failed message")

    def reject(self, peer: bytes, code: str, message: str, ref: bytes | None = None, **detail: Any) -> None:
        with self._lock:
            self._counters.rejects += 1
        self.warn(peer, code, "refused a message from %s: %s", self._robot_of(peer), message)
        self.send_error(peer, code, message, ref, **detail)

    def send_error(self, peer: bytes, code: str, message: str, ref: bytes | None = None, **detail: Any) -> None:
        with self._lock:
            self._counters.errors_sent += 1
            self._counters.by_code[code] = self._counters.by_code.get(code, 0) + 1
        self.send(peer, wire.error(code, message, ref, **detail))

    def send(self, peer: bytes, frames: list) -> bool:
        try:
            self._sock.send_multipart([peer, *frames], zmq.NOBLOCK, copy=False)
            return True
        except zmq.ZMQError:  # EHOSTUNREACH (peer gone) or EAGAIN (peer not reading): drop, it will ask again
            with self._lock:
                self._counters.send_drops += 1
            return False

    def warn(self, peer: bytes, reason: str, fmt: str, *args: Any) -> None:
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

    # ------------------------------------------------------------------ for EpisodeIngest
    def peer_of(self, rid: str) -> bytes | None:
        """The connection a robot is on now, or None."""
        return self._by_robot.get(rid)

    def live(self, rid: str, now: float) -> bool:
        """Whether robot ``rid`` is connected and was heard from within stale_after_s."""
        sess = self._sessions.get(self._by_robot.get(rid, b""))
        return sess is not None and now - sess.last_seen < self.config.stale_after_s

    def count(self, robot_episodes: str | None = None, **increments: int) -> None:
        """Add to the counters (and, with ``robot_episodes``, to that robot's episode count), atomically for readers."""
        with self._lock:
            for name, n in increments.items():
                setattr(self._counters, name, getattr(self._counters, name) + n)
            if robot_episodes in self._robots:
                self._robots[robot_episodes]["episodes"] = self._robots[robot_episodes].get("episodes", 0) + 1

    def post(self, kind: str, data: Any) -> None:
        """Hand work to the I/O thread from another thread (the ingest thread's results)."""
        self._control.put((kind, data))

    # ------------------------------------------------------------------ sessions
    def _on_hello(self, peer: bytes, msg: wire.Message, key_name: str | None) -> None:
        h = msg.header
        rid = h["robot_id"]
        now = time.monotonic()
        if self._curve and key_name != rid:
            with self._lock:
                self._counters.robots_refused += 1
            self.reject(peer, wire.ERR_IDENTITY, f"robot_id {rid!r} does not match the name of this robot's CURVE key "
                         f"({key_name!r}); use the id the key was made for", ref=msg.type)
            return
        if h["schema"] != wire.schema_hash():
            self.reject(peer, wire.ERR_VERSION, f"schema {h['schema']} differs from the learner's {wire.schema_hash()} "
                         "(episode / policy / wire formats); install the same world-vla-loop version on both", ref=msg.type)
            return
        old_peer = self._by_robot.get(rid)
        if old_peer is not None and old_peer != peer:
            old = self._sessions.get(old_peer)
            # The old connection is still routable (probe) and heard from recently: two live robots claim one id.
            alive = old is not None and now - old.last_seen < self.config.stale_after_s and self.send(
                old_peer, wire.encode(wire.PONG, {"t": 0.0, "wall_time": time.time()}))
            if alive:
                with self._lock:
                    self._counters.robots_refused += 1
                self.reject(peer, wire.ERR_DUPLICATE_ROBOT, f"robot id {rid!r} is already connected from another "
                             "process or machine; give each robot its own id (and key)", ref=msg.type)
                return
            self._drop_session(old_peer)
        if peer not in self._sessions and len(self._sessions) >= self.config.max_robots:
            stalest = min(self._sessions.values(), key=lambda s: s.last_seen)
            if now - stalest.last_seen < self.config.stale_after_s:
                with self._lock:
                    self._counters.robots_refused += 1
                self.reject(peer, wire.ERR_BUSY, f"{self.config.max_robots} robots are connected already", ref=msg.type)
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
        self.send(peer, wire.encode(wire.WELCOME, {"wall_time": time.time(), "server": "wvl-learner"}))
        if self._offer is not None:
            self.send(peer, wire.encode(wire.POL_OFFER, self._offer.header()))

    def _drop_session(self, peer: bytes) -> None:
        s = self._sessions.pop(peer, None)
        if s is not None and self._by_robot.get(s.robot_id) == peer:
            del self._by_robot[s.robot_id]

    def _on_bye(self, sess: _Session, msg: wire.Message) -> None:
        log.info("robot %r said goodbye", sess.robot_id)
        self._drop_session(sess.peer)

    def _on_ping(self, sess: _Session, msg: wire.Message) -> None:
        self.send(sess.peer, wire.encode(wire.PONG, {"t": msg.header["t"], "wall_time": time.time()}))

    def _on_pol_status(self, sess: _Session, msg: wire.Message) -> None:
        h = msg.header
        with self._lock:
            self._robots[sess.robot_id].update(running=h["running"], ready=h.get("ready"), rejected=h.get("rejected"),
                                               reason=h.get("reason", ""))
        if h.get("rejected"):
            log.warning("robot %r refused policy %s: %s", sess.robot_id, h["rejected"], h.get("reason", ""))
        log.info("robot %r runs policy %s (ready: %s)", sess.robot_id, h["running"], h.get("ready"))

    # ------------------------------------------------------------------ policies down
    def _on_pol_get(self, sess: _Session, msg: wire.Message) -> None:
        h = msg.header
        o = self._offer
        if o is None or (h["version"], h["sha256"]) != (o.version, o.sha256):
            self.send_error(sess.peer, wire.ERR_UNKNOWN_POLICY, f"policy {h['version']} ({h['sha256'][:12]}...) is not offered "
                             f"any more; current: {o.version if o else None}", ref=msg.type, idx=h["idx"])
            return
        idx = h["idx"]
        if idx >= o.n_chunks:
            self.reject(sess.peer, wire.ERR_OUT_OF_RANGE, f"POL_GET idx {idx} >= n_chunks {o.n_chunks}", ref=msg.type, idx=idx)
            return
        data = o.read_chunk(idx)
        self.send(sess.peer, wire.encode(wire.POL_CHUNK, {"version": o.version, "sha256": o.sha256, "idx": idx,
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
                    self.send(peer, wire.encode(wire.POL_OFFER, data.header()))
            elif kind == "ingested":
                self.ingest.on_ingested(*data)

    def _periodic(self) -> None:
        now = time.monotonic()
        if now - self._last_flush >= 1.0:
            self._last_flush = now
            self._flush_warnings()
        self.ingest.tick(now)

    def _shutdown(self) -> None:
        if getattr(self, "_closed", False):
            return
        self._closed = True
        self.ingest.stop()
        self._drain_control()  # deliver COMMITs of ingests that finished
        self._flush_warnings(force=True)
        self.ingest.close_uploads()
        if self._offer is not None:
            self._offer.close()
        self._close_sockets()
        log.info("learner server on %s stopped: %s", self.endpoint, {k: v for k, v in self.counters().items() if v})

    def _close_sockets(self) -> None:
        self._sock.close(0)
        if self._auth is not None:
            self._auth.stop()
        self._ctx.term()

    # The handler of each robot-to-learner message (episode messages go to the ingest).
    def _to_ingest(name: str) -> Callable[["LearnerServer", _Session, wire.Message], None]:
        def handler(self: "LearnerServer", sess: _Session, msg: wire.Message) -> None:
            getattr(self.ingest, name)(sess, msg)
        return handler

    _handlers: dict[bytes, Callable[["LearnerServer", _Session, wire.Message], None]] = {
        wire.BYE: _on_bye, wire.PING: _on_ping, wire.POL_STATUS: _on_pol_status, wire.POL_GET: _on_pol_get,
        wire.EP_BEGIN: _to_ingest("on_ep_begin"), wire.CHUNK: _to_ingest("on_chunk"), wire.EP_END: _to_ingest("on_ep_end"),
    }
    del _to_ingest
