"""The robot's policy inbox: policies the learner offers land here, verified, and become current only between
episodes.

Downloads land in ``staging/``; each file is checked against the offer's SHA-256, then `read_artifact` (manifest +
hashes), then the pluggable ``validate(folder) -> PolicyManifest`` hook (the ONNX runtime's shape / smoke-inference /
range checks). A good artifact becomes *ready*; ``swap_if_ready()`` -- called by the control loop between episodes,
never from the link thread -- makes it *current* and keeps the old one as *previous* for ``rollback()``. A refused
artifact never touches *current*. The `Outbox` connection does the downloading.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
from pathlib import Path
from typing import Any, Callable

from robot.files import fsync_dir
from robot.policy_artifact import ArtifactError, PolicyManifest, read_artifact

log = logging.getLogger(__name__)
Validate = Callable[[Path], PolicyManifest]


class PolicyInbox:
    """Policies received from the learner: staging -> ready -> current (-> previous). Thread-safe.

    Layout: ``folder/versions/<version>-<sha12>/`` (artifact folders), ``folder/staging/`` (downloads),
    ``folder/state.json`` {current, previous, ready, rejected} -- replacing it is the commit point of every swap.
    """

    def __init__(self, folder: str | os.PathLike, validate: Validate, *, max_policy_bytes: int = 4 << 30,
                 min_free_bytes: int = 64 << 20) -> None:
        if not callable(validate):
            raise TypeError("validate: must be a callable folder -> PolicyManifest (the policy runtime's check)")
        self.folder = Path(folder)
        self.validate = validate
        self.max_policy_bytes = max_policy_bytes
        self.min_free_bytes = min_free_bytes
        self.versions, self.staging = self.folder / "versions", self.folder / "staging"
        self.versions.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.staging, ignore_errors=True)  # downloads restart from scratch after a restart
        self.staging.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._state: dict[str, Any] = {"current": None, "previous": None, "ready": None, "rejected": {}}
        self._manifests: dict[str, PolicyManifest] = {}
        self.generation = 0       # bumped on every change (the link reports the new status)
        self.last_reason = ""
        self._load()

    # ------------------------------------------------------------------ for the control loop
    @property
    def running_version(self) -> str | None:
        m = self.current
        return m.policy_version if m else None

    @property
    def current(self) -> PolicyManifest | None:
        with self._lock:
            return self._manifests.get(self._state["current"]) if self._state["current"] else None

    @property
    def current_folder(self) -> Path | None:
        with self._lock:
            return self.versions / self._state["current"] if self._state["current"] else None

    @property
    def ready_version(self) -> str | None:
        with self._lock:
            return self._version_of(self._state["ready"])

    @property
    def previous_version(self) -> str | None:
        with self._lock:
            return self._version_of(self._state["previous"])

    def swap_if_ready(self) -> PolicyManifest | None:
        """Call ONLY between episodes. Makes a validated ready policy current (keeping the old one for rollback);
        returns its manifest, or None when nothing is ready. The artifact's hashes are checked again first."""
        with self._lock:
            ready = self._state["ready"]
            if ready is None:
                return None
            try:
                manifest = read_artifact(self.versions / ready)
            except ArtifactError as e:
                self._reject_key(ready, f"changed on disk after validation: {e}")
                self._state["ready"] = None
                self._commit_state()
                return None
            old_previous = self._state["previous"]
            self._state.update(previous=self._state["current"], current=ready, ready=None)
            self._manifests[ready] = manifest
            self._commit_state()
            if old_previous and old_previous not in (self._state["current"], self._state["previous"]):
                shutil.rmtree(self.versions / old_previous, ignore_errors=True)
            log.info("policy %s is now running (previous: %s)", manifest.policy_version, self.previous_version)
            return manifest

    def rollback(self) -> PolicyManifest | None:
        """Go back to the previous policy (between episodes). The abandoned one is not accepted again. Returns the
        manifest now running, or None (and changes nothing) when there is no previous policy."""
        with self._lock:
            prev, cur = self._state["previous"], self._state["current"]
            if prev is None:
                log.warning("rollback asked but there is no previous policy; keeping %s", self.running_version)
                return None
            try:
                manifest = read_artifact(self.versions / prev)
            except ArtifactError as e:
                log.error("cannot roll back: the previous policy is damaged on disk (%s); keeping %s", e, self.running_version)
                return None
            self._state.update(current=prev, previous=None)
            self._manifests[prev] = manifest
            if cur:
                self._reject_key(cur, "rolled back")
            self._commit_state()
            if cur:
                shutil.rmtree(self.versions / cur, ignore_errors=True)
            log.warning("rolled back to policy %s", manifest.policy_version)
            return manifest

    def status(self) -> dict[str, Any]:
        with self._lock:
            rejected = list(self._state["rejected"])
            return {"running": self.running_version, "ready": self.ready_version,
                    "rejected": self._version_of(rejected[-1]) if rejected else None, "reason": self.last_reason[:512],
                    "generation": self.generation}

    # ------------------------------------------------------------------ for the link thread
    @staticmethod
    def key(version: str, sha256: str) -> str:
        return f"{version}-{sha256[:12]}"

    def wants(self, offer: dict[str, Any]) -> bool:
        """Should the link download this POL_OFFER? (Not when already current/ready/refused, too big, or no room.)"""
        k = self.key(offer["version"], offer["sha256"])
        with self._lock:
            if k in (self._state["current"], self._state["ready"]) or k in self._state["rejected"]:
                return False
            if offer["size"] > self.max_policy_bytes:
                self._reject_key(k, f"{offer['size']} bytes is over this robot's max_policy_bytes {self.max_policy_bytes}")
                self._commit_state()
                return False
        free = shutil.disk_usage(self.folder).free
        if free - offer["size"] < self.min_free_bytes:
            self.last_reason = f"no disk room for policy {offer['version']} ({free >> 20} MiB free)"
            log.error("%s; not downloading it now", self.last_reason)
            return False
        return True

    def install(self, offer: dict[str, Any], blob: Path) -> bool:
        """Verify a downloaded blob against the offer, unpack, check the manifest and run ``validate``. On success the
        policy becomes *ready* (True); on any failure it is recorded as refused (False) and *current* is untouched."""
        k = self.key(offer["version"], offer["sha256"])
        tmp = self.staging / f"{k}.unpack"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            with open(blob, "rb") as f:
                for name, size, digest in offer["files"]:
                    h = hashlib.sha256()
                    with open(tmp / name, "wb") as out:
                        left = size
                        while left:
                            buf = f.read(min(left, 1 << 20))
                            if not buf:
                                raise ArtifactError(f"download is shorter than the offer's file list ({name} truncated)")
                            h.update(buf)
                            out.write(buf)
                            left -= len(buf)
                        out.flush()
                        os.fsync(out.fileno())
                    if h.hexdigest() != digest:
                        raise ArtifactError(f"{name}: sha256 {h.hexdigest()[:12]}... does not match the offer's {digest[:12]}... "
                                            "(corrupted or tampered artifact)")
                if f.read(1):
                    raise ArtifactError("download is longer than the offer's file list")
            manifest = read_artifact(tmp)
            if manifest.policy_version != offer["version"]:
                raise ArtifactError(f"manifest policy_version {manifest.policy_version!r} differs from the offer's {offer['version']!r}")
            validated = self.validate(tmp)
            if not isinstance(validated, PolicyManifest):
                raise ArtifactError(f"validate hook returned {type(validated).__name__}, not a PolicyManifest")
        except Exception as e:  # the validate hook may raise anything: every failure is a refusal, never a crash
            shutil.rmtree(tmp, ignore_errors=True)
            with self._lock:
                self._reject_key(k, f"{type(e).__name__}: {e}")
                self._commit_state()
            log.error("refused policy %s: %s: %s (still running %s)", offer["version"], type(e).__name__, e, self.running_version)
            return False
        finally:
            blob.unlink(missing_ok=True)
        with self._lock:
            dest = self.versions / k
            shutil.rmtree(dest, ignore_errors=True)
            os.replace(tmp, dest)
            fsync_dir(self.versions)
            old_ready = self._state["ready"]
            self._state["ready"] = k
            self._manifests[k] = validated
            self.last_reason = ""
            self._commit_state()
            if old_ready and old_ready not in (k, self._state["current"], self._state["previous"]):
                shutil.rmtree(self.versions / old_ready, ignore_errors=True)
        log.info("policy %s verified and validated; it will run from the next episode boundary", offer["version"])
        return True

    # ------------------------------------------------------------------ state
    def _version_of(self, key: str | None) -> str | None:
        if key is None:
            return None
        m = self._manifests.get(key)
        return m.policy_version if m else key.rsplit("-", 1)[0]

    def _reject_key(self, k: str, reason: str) -> None:
        rej = self._state["rejected"]
        rej.pop(k, None)
        rej[k] = reason[:512]
        while len(rej) > 32:  # bounded memory of refusals
            rej.pop(next(iter(rej)))
        self.last_reason = reason

    def _commit_state(self) -> None:
        path = self.folder / "state.json"
        tmp = path.with_suffix(".json.tmp")
        with open(tmp, "w") as f:
            json.dump(self._state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(self.folder)
        self.generation += 1

    def _load(self) -> None:
        path = self.folder / "state.json"
        if path.exists():
            try:
                st = json.loads(path.read_text())
                self._state.update({k: st.get(k) for k in ("current", "previous", "ready")})
                self._state["rejected"] = dict(st.get("rejected") or {})
            except (OSError, ValueError) as e:
                log.error("policy inbox state %s is unreadable (%s); starting with no policy", path, e)
        for slot in ("current", "ready", "previous"):
            k = self._state[slot]
            if k is None:
                continue
            try:
                self._manifests[k] = read_artifact(self.versions / k)
            except ArtifactError as e:
                log.error("policy inbox: the %s policy %s is damaged on disk (%s); dropping it", slot, k, e)
                self._state[slot] = None
        if self._state["current"] is None and self._state["previous"] is not None:
            log.warning("policy inbox: falling back to the previous policy %s", self._state["previous"])
            self._state.update(current=self._state["previous"], previous=None)
        keep = {self._state[s] for s in ("current", "previous", "ready")}
        for d in self.versions.iterdir():
            if d.name not in keep:
                shutil.rmtree(d, ignore_errors=True)
        if path.exists() or any(keep - {None}):
            self._commit_state()
