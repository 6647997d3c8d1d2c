"""Episodes up the link: uploads written chunk by chunk into ``<state>/incoming/<uuid>.part`` (CRC32 checked per chunk,
SHA-256 computed as chunks arrive in order, the chunk bitmap persisted every few chunks so that an upload resumes
after either side restarts); after EP_END and a matching SHA-256 an ingest thread parses the bytes
(`Episode.from_bytes` validates everything), appends them to the `EpisodeStore` (atomic, idempotent by UUID), calls
``on_episode(index, row)``, and only then is COMMIT sent. Partial uploads on disk are bounded (count, declared bytes,
partial_ttl_s). A stored uuid offered again is a duplicate (COMMIT duplicate=true) only with the same SHA-256, else
ERROR uuid_conflict.

`EpisodeIngest` holds this state and answers EP_BEGIN / CHUNK / EP_END; the `LearnerServer` it is given owns the
socket, the sessions and the counters (``send``, ``send_error``, ``reject``, ``warn``, ``peer_of``, ``live``,
``count``, ``post``).
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
from pathlib import Path
from typing import TYPE_CHECKING

from learning.data.store import EpisodeConflictError, EpisodeStore, StoreError
from learning.server.config import OnEpisode, ServerConfig
from learning.server.uploads import HashWorker, Upload
from robot import wire
from robot.episode import Episode, EpisodeFormatError, EpisodeValidationError

if TYPE_CHECKING:
    from learning.server.learner import LearnerServer, _Session

log = logging.getLogger(__name__)


class EpisodeIngest:
    """Episode uploads from every robot into one store. Runs on the server's I/O thread, but for the ingest thread
    (parse + append) and the SHA-256 worker."""

    def __init__(self, link: "LearnerServer", store: EpisodeStore, state_dir: Path, config: ServerConfig,
                 on_episode: OnEpisode | None = None) -> None:
        self.link, self.store, self.config, self.on_episode = link, store, config, on_episode
        self.incoming = state_dir / "incoming"
        self.rejected_dir = state_dir / "rejected"
        self.incoming.mkdir(parents=True, exist_ok=True)
        self.committed: dict[str, int] = {r["uuid"]: r["episode_index"] for r in store.rows}
        # uuid -> (SHA-256 of the bytes it was stored from, robot that sent them); None for episodes not from the link
        self.provenance: dict[str, tuple[str | None, str | None]] = {
            r["uuid"]: (r.get("received_sha256"), r.get("robot_id")) for r in store.rows}
        self.uploads: collections.OrderedDict[str, Upload] = collections.OrderedDict()
        self._queue: queue.Queue = queue.Queue()
        self._sha = HashWorker()
        self._next_sweep = time.monotonic()
        self._thread = threading.Thread(target=self._ingest_loop, name="wvl-learner-ingest", daemon=True)
        self._cleanup_incoming()

    def start(self) -> None:
        self._thread.start()

    def tick(self, now: float) -> None:
        """Every I/O-loop turn: persist idle uploads' bitmaps; every few seconds, expire stale partial uploads."""
        for up in list(self.uploads.values()):
            if up.dirty and now - up.touched > 1.0 and not up.ingesting:
                up.save_state()
        if now >= self._next_sweep:
            self._next_sweep = now + min(10.0, self.config.partial_ttl_s / 4)
            self.expire_partials()

    def stop(self) -> None:
        """Finish the ingest in progress and stop the threads (its COMMIT is still to be delivered: `close_uploads`
        after the server has drained its control queue)."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(30)
        self._sha.close()

    def close_uploads(self) -> None:
        for up in self.uploads.values():
            if up.n_have and not up.ingesting:
                up.save_state()
            up.close()

    # ------------------------------------------------------------------ messages from robots
    def on_ep_begin(self, sess: _Session, msg: wire.Message) -> None:
        h = msg.header
        uid, size, sha, cs, n = h["id"], h["size"], h["sha256"], h["chunk_size"], h["n_chunks"]
        if uid in self.committed:
            stored = self.provenance.get(uid, (None, None))[0]
            if stored is not None and stored != sha:
                self._refuse_conflict(sess, uid, sha, msg.type)
                return
            self.link.count(episodes_duplicate=1)
            self.link.send(sess.peer, wire.encode(wire.COMMIT, {"id": uid, "index": self.committed[uid], "duplicate": True}))
            return
        if size > self.config.max_episode_bytes:
            self.link.reject(sess.peer, wire.ERR_TOO_LARGE, f"EP_BEGIN size {size} is over this learner's limit of "
                         f"{self.config.max_episode_bytes} bytes", ref=msg.type, id=uid)
            return
        if cs > self.config.max_chunk_bytes:
            self.link.reject(sess.peer, wire.ERR_TOO_LARGE, f"EP_BEGIN chunk_size {cs} is over {self.config.max_chunk_bytes}",
                         ref=msg.type, id=uid)
            return
        if n != wire.n_chunks(size, cs):
            self.link.reject(sess.peer, wire.ERR_BAD_FIELD, f"EP_BEGIN n_chunks {n} disagrees with size {size} / chunk_size {cs} "
                         f"(expected {wire.n_chunks(size, cs)})", ref=msg.type, id=uid)
            return
        up = self.uploads.get(uid)
        if up is not None and not up.matches(size, sha, cs):
            if up.ingesting:
                self.link.send_error(sess.peer, wire.ERR_BUSY, f"episode {uid} is being stored from other bytes; retry", id=uid)
                return
            log.warning("episode %s restarted with a different size/sha256; dropping the partial upload", uid)
            up.discard()
            del self.uploads[uid]
            up = None
        if up is None:
            free = shutil.disk_usage(self.incoming).free
            if free - size < self.config.disk_reserve_bytes:
                self.link.count(disk_full=1)
                self.link.send_error(sess.peer, wire.ERR_DISK_FULL, f"learner disk: {free >> 20} MiB free, episode needs {size >> 20} MiB "
                                 f"plus a {self.config.disk_reserve_bytes >> 20} MiB reserve; keep it and retry later", id=uid)
                log.error("learner disk full: refused episode %s from %r (%d MiB free)", uid, sess.robot_id, free >> 20)
                return
            if not self._make_room(uid, size, sess.robot_id):
                self.link.send_error(sess.peer, wire.ERR_BUSY, f"learner holds {self.config.max_partial_bytes >> 20} MiB of partial "
                                 "uploads from robots still connected; keep the episode and retry later", ref=msg.type, id=uid)
                log.warning("refused episode %s from %r: partial uploads would exceed max_partial_bytes", uid, sess.robot_id)
                return
            up = Upload.resume(self.incoming, uid, size, sha, cs, n, sess.robot_id)
            self.uploads[uid] = up
            self._bound_uploads(keep=uid)
        self.uploads.move_to_end(uid)
        up.robot_id = sess.robot_id
        up.touched = time.monotonic()
        self.link.send(sess.peer, wire.encode(wire.EP_READY, {"id": uid, "have": wire.pack_bitmap(up.have)}))

    def _refuse_conflict(self, sess: _Session, uid: str, sha: str, ref: bytes) -> None:
        """A stored uuid offered with other bytes: never COMMIT it (the robot would delete its copy of a different
        episode); ERROR uuid_conflict, the robot keeps it aside."""
        stored, by = self.provenance.get(uid, (None, None))
        self.link.count(uuid_conflicts=1)
        self.link.warn(sess.peer, "uuid-conflict", "robot %r offered episode %s with sha256 %s..., but it is stored (#%d, from %r) "
                   "with sha256 %s...; refused", sess.robot_id, uid, sha[:12], self.committed[uid], by, (stored or "?")[:12])
        self.link.send_error(sess.peer, wire.ERR_CONFLICT, f"episode {uid} is stored already from other bytes (sha256 "
                         f"{(stored or '?')[:12]}..., yours {sha[:12]}...); keep your copy and check where the uuid came from",
                         ref=ref, id=uid)

    def _bound_uploads(self, keep: str) -> None:
        """Bound open uploads (LRU: closed, kept on disk; EP_BEGIN resumes them). ``keep`` is the upload being started:
        never closed here (when every other open upload is being ingested, the open count exceeds max_uploads until
        an ingest finishes -- ingests are bounded by the robots' own windows)."""
        while len(self.uploads) > self.config.max_uploads:
            for uid, up in self.uploads.items():
                if not up.ingesting and uid != keep:
                    if up.n_have:
                        up.save_state()
                    up.close()
                    del self.uploads[uid]  # kept on disk; EP_BEGIN resumes it
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
        for uid, up in self.uploads.items():
            if up.robot_id and up.robot_id != asking and self.link.live(up.robot_id, now):
                if up.touched > active.get(up.robot_id, (-1.0, ""))[0]:
                    active[up.robot_id] = (up.touched, uid)
        protected = {uid for _, uid in active.values()}
        out: dict[str, tuple[int, float, bool]] = {}
        for uid, up in self.uploads.items():
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

    def _delete_partial(self, uid: str, why: str) -> None:
        log.warning("deleting the partial upload of episode %s (%s); its robot keeps the episode until COMMIT and sends "
                    "it again", uid, why)
        up = self.uploads.pop(uid, None)
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

    def expire_partials(self) -> None:
        """Delete partial uploads untouched for partial_ttl_s that no connected robot is sending (runs every few s)."""
        for uid, (_, untouched, deletable) in self._partials().items():
            if deletable and untouched > self.config.partial_ttl_s:
                self._delete_partial(uid, f"untouched {untouched:.0f} s, over partial_ttl_s {self.config.partial_ttl_s:g} s")

    def on_chunk(self, sess: _Session, msg: wire.Message) -> None:
        h, data = msg.header, msg.payload
        uid, idx = h["id"], h["idx"]
        up = self.uploads.get(uid)
        if up is None or up.ingesting:
            if uid in self.committed or (up is not None and up.ingesting):
                self.link.send(sess.peer, wire.encode(wire.ACK, {"id": uid, "idx": idx}))  # late duplicate: harmless
                return
            self.link.reject(sess.peer, wire.ERR_UNKNOWN_TRANSFER, f"CHUNK for episode {uid} without EP_BEGIN", ref=msg.type, id=uid, idx=idx)
            return
        if idx >= up.n:
            self.link.reject(sess.peer, wire.ERR_OUT_OF_RANGE, f"CHUNK idx {idx} >= n_chunks {up.n}", ref=msg.type, id=uid, idx=idx)
            return
        if len(data) != up.chunk_len(idx):
            self.link.reject(sess.peer, wire.ERR_OUT_OF_RANGE, f"CHUNK {idx} has {len(data)} bytes, EP_BEGIN implies {up.chunk_len(idx)}",
                         ref=msg.type, id=uid, idx=idx)
            return
        if wire.crc32(data) != h["crc32"]:
            self.link.count(crc_errors=1)
            self.link.warn(sess.peer, "crc", "CRC32 mismatch on chunk %d of episode %s from %r; asking again", idx, uid, sess.robot_id)
            self.link.send_error(sess.peer, wire.ERR_CRC, f"chunk {idx} failed its CRC32; resend it", ref=msg.type, id=uid, idx=idx)
            return
        if up.have[idx]:
            self.link.count(chunks_duplicate=1)
            self.link.send(sess.peer, wire.encode(wire.ACK, {"id": uid, "idx": idx}))
            return
        try:
            up.open()
            os.pwrite(up.fd, data, idx * up.chunk_size)
        except OSError as e:
            full = e.errno == errno.ENOSPC
            self.link.count(disk_full=int(full))
            code = wire.ERR_DISK_FULL if full else wire.ERR_STORE
            log.error("cannot write chunk %d of episode %s to %s: %s", idx, uid, up.path, e.strerror)
            self.link.send_error(sess.peer, code, f"learner cannot write the chunk ({e.strerror}); keep the episode and retry later",
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
        self.link.count(chunks_received=1, bytes_received=len(data))
        self.link.send(sess.peer, wire.encode(wire.ACK, {"id": uid, "idx": idx}))

    def on_ep_end(self, sess: _Session, msg: wire.Message) -> None:
        uid = msg.header["id"]
        up = self.uploads.get(uid)
        if uid in self.committed and (up is None or not up.ingesting):
            stored, by = self.provenance.get(uid, (None, None))
            if up is not None and stored is not None and up.sha256 != stored:
                self._refuse_conflict(sess, uid, up.sha256, msg.type)
            elif up is not None or stored is None or by == sess.robot_id:  # same bytes, or a resend by the uploader
                self.link.send(sess.peer, wire.encode(wire.COMMIT, {"id": uid, "index": self.committed[uid], "duplicate": True}))
            else:  # which bytes this robot holds is unknown here: EP_BEGIN says (its SHA-256 is checked there)
                self.link.send_error(sess.peer, wire.ERR_UNKNOWN_TRANSFER, f"EP_END for stored episode {uid} without EP_BEGIN; "
                                 "send EP_BEGIN again", ref=msg.type, id=uid)
            if up is not None:  # a partial of a stored uuid is redundant either way
                up.discard()
                del self.uploads[uid]
            return
        if up is None:
            self.link.reject(sess.peer, wire.ERR_UNKNOWN_TRANSFER, f"EP_END for episode {uid} without EP_BEGIN", ref=msg.type, id=uid)
            return
        if up.ingesting:
            up.waiters.add(sess.robot_id)
            return
        if up.n_have < up.n:
            self.link.send_error(sess.peer, wire.ERR_INCOMPLETE, f"EP_END with {up.n - up.n_have} of {up.n} chunks missing; "
                             "send EP_BEGIN again for the list", ref=msg.type, id=uid)
            return
        up.open()
        while up.hashed < up.n:  # resumed uploads: hash what an earlier run received
            self._sha.feed(up, os.pread(up.fd, up.chunk_len(up.hashed), up.hashed * up.chunk_size))
            up.hashed += 1
        digest = self._sha.digest(up)
        if digest != up.sha256:
            self.link.count(sha_errors=1)
            log.error("episode %s from %r: SHA-256 %s... does not match EP_BEGIN's %s...; discarding the received bytes",
                      uid, sess.robot_id, digest[:12], up.sha256[:12])
            up.discard()
            del self.uploads[uid]
            self.link.send_error(sess.peer, wire.ERR_SHA256, f"episode {uid}: SHA-256 of the received bytes does not match; "
                             "send it again from the start", ref=msg.type, id=uid)
            return
        # No fsync of the .part: the commit point is the store's own atomic (fsync'd) append; until then the robot
        # keeps its copy, so a power loss here costs a resend, never an episode.
        up.close()
        up.save_state()
        up.ingesting = True
        up.waiters.add(sess.robot_id)
        self._queue.put((uid, up.path, sess.robot_id, up.sha256))

    # ------------------------------------------------------------------ ingest thread
    def _ingest_loop(self) -> None:
        while True:
            job = self._queue.get()
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
                self.link.post("ingested", (uid, None, wire.ERR_CONFLICT, str(e), rid, 0.0))
                continue
            except (EpisodeFormatError, EpisodeValidationError) as e:
                self.link.post("ingested", (uid, None, wire.ERR_BAD_EPISODE, f"episode {uid} is not valid: {e}", rid, 0.0))
                continue
            except (StoreError, OSError) as e:
                cause = e.__cause__ if isinstance(e, StoreError) else e
                code = wire.ERR_DISK_FULL if getattr(cause, "errno", None) == errno.ENOSPC else wire.ERR_STORE
                self.link.post("ingested", (uid, None, code, f"learner could not store episode {uid}: {e}", rid, 0.0))
                continue
            except Exception as e:  # a bug must not kill the ingest thread
                log.exception("ingest of episode %s failed", uid)
                self.link.post("ingested", (uid, None, wire.ERR_STORE, f"learner could not store episode {uid}: {e}", rid, 0.0))
                continue
            row = self.store.row(index)
            log.info("stored episode %s from %r as #%d (%s, %d steps, %.1f MB) in %.2f s", uid, rid, index, ep.outcome, len(ep),
                     len(data) / 1e6, time.perf_counter() - t0)
            if self.on_episode is not None:
                try:
                    self.on_episode(index, row)
                except Exception:
                    log.exception("on_episode callback failed for episode #%d (the episode is stored)", index)
            self.link.post("ingested", (uid, index, None, "", rid, time.perf_counter() - t0,
                                        (row.get("received_sha256"), row.get("robot_id"))))

    def on_ingested(self, uid: str, index: int | None, code: str | None, message: str, rid: str, ingest_s: float,
                     provenance: tuple[str | None, str | None] = (None, None)) -> None:
        up = self.uploads.pop(uid, None)
        waiters = up.waiters if up is not None else set()
        if index is not None:
            duplicate = uid in self.committed
            self.committed[uid] = index
            self.provenance[uid] = provenance
            if up is not None:
                up.discard()
            self.link.count(**{"episodes_duplicate" if duplicate else "episodes_committed": 1}, robot_episodes=rid)
            commit = {"id": uid, "index": index, "duplicate": duplicate, "ingest_s": ingest_s}
            for w in waiters:
                if (peer := self.link.peer_of(w)) is not None:
                    self.link.send(peer, wire.encode(wire.COMMIT, commit))
            return
        if code == wire.ERR_CONFLICT:
            self.link.count(uuid_conflicts=1)
            log.warning("%s (from %r; refused, the robot keeps its copy)", message, rid)
            if up is not None:
                up.discard()
        elif code == wire.ERR_BAD_EPISODE:
            self.link.count(bad_episodes=1)
            log.error("%s; kept in %s", message, self.rejected_dir)
            if up is not None:
                self.rejected_dir.mkdir(parents=True, exist_ok=True)
                os.replace(up.path, self.rejected_dir / f"{uid}.episode")
                up.state_path.unlink(missing_ok=True)
        else:
            self.link.count(store_errors=1, disk_full=int(code == wire.ERR_DISK_FULL))
            log.error("%s (the verified upload is kept; the robot keeps its copy and retries)", message)
        for w in waiters:
            if (peer := self.link.peer_of(w)) is not None:
                self.link.send_error(peer, code or wire.ERR_STORE, message, ref=wire.EP_END, id=uid)

    def _cleanup_incoming(self) -> None:
        """At start-up: drop partial uploads older than partial_ttl_s and leftovers of episodes already stored."""
        now = time.time()
        for p in list(self.incoming.glob("*.state")) + list(self.incoming.glob("*.part")) + list(self.incoming.glob("*.tmp")):
            uid = p.name.split(".")[0]
            try:
                old = now - p.stat().st_mtime > self.config.partial_ttl_s
            except FileNotFoundError:
                continue
            if old or uid in self.committed or p.suffix == ".tmp":
                p.unlink(missing_ok=True)
