"""Policies going down the link: an artifact published as one immutable blob (its files concatenated in a fixed order,
under ``<state>/policies/<version>-<sha12>/``), offered to every robot and served chunk by chunk. ``current.json``
names the offer a restarted learner serves again."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robot import wire
from robot.files import sha256_file
from robot.policy_artifact import MANIFEST_FILE, ArtifactError, PolicyManifest, read_artifact

log = logging.getLogger(__name__)


@dataclass
class PolicyOffer:
    version: str
    sha256: str
    size: int
    chunk_size: int
    files: list[tuple[str, int, str]]
    blob: Path
    manifest: PolicyManifest
    fd: int | None = None

    @property
    def n_chunks(self) -> int:
        return wire.n_chunks(self.size, self.chunk_size)

    def header(self) -> dict[str, Any]:
        return {"version": self.version, "sha256": self.sha256, "size": self.size, "chunk_size": self.chunk_size,
                "n_chunks": self.n_chunks, "files": [list(f) for f in self.files]}

    def read_chunk(self, idx: int) -> bytes:
        if self.fd is None:
            self.fd = os.open(self.blob, os.O_RDONLY)
        return os.pread(self.fd, self.chunk_size, idx * self.chunk_size)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def publish_artifact(artifact_folder: str | os.PathLike, policies_dir: Path, chunk_size: int) -> PolicyOffer:
    """Verify an artifact (manifest + hashes) and snapshot it as the current offer under ``policies_dir``. Raises
    ArtifactError naming the problem."""
    folder = Path(artifact_folder)
    manifest = read_artifact(folder)
    version = manifest.policy_version
    if not wire.NAME_RE.match(version):
        raise ArtifactError(f"manifest field 'policy_version': {version!r} must match {wire.NAME_RE.pattern} to be shipped")
    names = sorted(manifest.sha256) + [MANIFEST_FILE]
    files = [(n, (folder / n).stat().st_size, manifest.sha256.get(n) or sha256_file(folder / n)) for n in names]
    size = sum(s for _, s, _ in files)
    if size > wire.MAX_POLICY_BYTES:
        raise ArtifactError(f"artifact {folder} is {size} bytes, over the {wire.MAX_POLICY_BYTES} byte limit")
    # One blob (files concatenated in `files` order) that later edits of the source folder cannot touch.
    h = hashlib.sha256()
    tmp = policies_dir / f".{version}.{os.getpid()}.{threading.get_ident()}.tmp"
    with open(tmp, "wb") as out:
        for name, _, digest in files:
            fh = hashlib.sha256()
            with open(folder / name, "rb") as f:
                while buf := f.read(1 << 20):
                    h.update(buf)
                    fh.update(buf)
                    out.write(buf)
            if fh.hexdigest() != digest:
                tmp.unlink(missing_ok=True)
                raise ArtifactError(f"{folder / name} changed while it was being published; publish again")
        out.flush()
        os.fsync(out.fileno())
    sha = h.hexdigest()
    dest = policies_dir / f"{version}-{sha[:12]}"
    dest.mkdir(exist_ok=True)
    os.replace(tmp, dest / "blob")
    (dest / "offer.json").write_text(json.dumps({"version": version, "sha256": sha, "size": size, "files": files}))
    cur = policies_dir / "current.json"
    cur.with_suffix(".tmp").write_text(json.dumps({"dir": dest.name}))
    os.replace(cur.with_suffix(".tmp"), cur)
    return PolicyOffer(version, sha, size, chunk_size, files, dest / "blob", manifest)


def load_current_offer(policies_dir: Path, chunk_size: int) -> PolicyOffer | None:
    """The offer ``current.json`` names, or None when nothing was published (or its state is unreadable: logged)."""
    cur = policies_dir / "current.json"
    if not cur.exists():
        return None
    try:
        d = json.loads(cur.read_text())
        folder = policies_dir / d["dir"]
        o = json.loads((folder / "offer.json").read_text())
        blob = folder / "blob"
        if blob.stat().st_size != o["size"]:
            raise ValueError(f"{blob} has {blob.stat().st_size} bytes, offer.json says {o['size']}")
        files = [tuple(f) for f in o["files"]]
        manifest = PolicyManifest.from_dict(json.loads(_read_blob_file(blob, files, MANIFEST_FILE)))
    except (OSError, ValueError, KeyError, TypeError, ArtifactError) as e:
        log.error("published policy state in %s is unreadable (%s); publish a policy again", policies_dir, e)
        return None
    return PolicyOffer(o["version"], o["sha256"], o["size"], chunk_size, files, blob, manifest)


def _read_blob_file(blob: Path, files: list, name: str) -> bytes:
    off = 0
    for n, size, _ in files:
        if n == name:
            with open(blob, "rb") as f:
                f.seek(off)
                return f.read(size)
        off += size
    raise KeyError(name)
