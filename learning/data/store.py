"""The episode store: LeRobotDataset v3 layout + SANS fields, append-only and crash-safe.

Layout (LeRobot v3: https://huggingface.co/docs/lerobot/lerobot-dataset-v3)::

    root/meta/info.json                          codebase_version "v3.0", features, fps, totals, path templates
    root/meta/stats.json                         per-feature min/max/mean/std/count (images: per channel, (3, 1, 1), in [0, 1])
    root/meta/tasks.parquet                      task_index, indexed by task (pandas index, as LeRobot reads it)
    root/meta/episodes/chunk-XXX/file-YYY.parquet  one row per episode (index, length, file pointers, SANS fields)
    root/data/chunk-XXX/file-YYY.parquet          per-step rows (state, action, reward, timestamps, ...)
    root/videos/observation.images.<cam>/chunk-XXX/file-YYY.mp4

We write one file per episode (v3 allows any number of episodes per file; one per file makes appends atomic
without rewriting anything). An append writes data and videos to temporary names, renames them into place,
and only then renames the episode's row file into ``meta/episodes/`` -- that rename is the commit point.
A crash before it leaves orphan files that the next append of that index overwrites; readers only ever see
episodes whose row file exists. ``info.json``/``stats.json``/``tasks.parquet`` are derived summaries,
rewritten after each commit and rebuilt on open if a crash left them stale.

SANS fields on each episode row: ``uuid``, ``outcome``, ``source``, ``policy_version``, ``loop_iteration``,
``rig``, ``operator_note``, ``info_json``, and for episodes that came over the learner link ``received_sha256`` (of
the bytes as received) and ``robot_id`` (the authenticated uploader). Per step: ``observation.success`` (1 where
observation t shows the task in its success state: ``Episode.rewards``), ``next.reward`` (LeRobot's convention, the
reward received after action t: the success flag of observation t+1, the last one repeated) and ``intervention``.
Stores written before ``observation.success`` existed held the per-observation flag in ``next.reward``;
`EpisodeStore.success` and `EpisodeStore.read` read either.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from learning.data.video import CODECS as VIDEO_CODECS
from learning.data.video import PIX_FMTS, decode_video, encode_video
from robot.episode import Episode
from robot.files import fsync_dir
from robot.state import state_matrix

log = logging.getLogger(__name__)

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
DEPTH_PATH = "depth/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.npz"


class StoreError(RuntimeError):
    """The store on disk is unusable (corrupt file, unwritable folder); the message says which file and what to do."""


@dataclass(frozen=True)
class VideoSettings:
    """How camera frames are encoded. ``lossless=True`` overrides codec and crf with libx264rgb at crf 0 (bit-exact
    RGB frames: a stored episode then re-serialises to the canonical bytes it came from, see `EpisodeStore.read`)."""

    codec: str = "libx264"
    crf: int = 12
    lossless: bool = False

    def __post_init__(self) -> None:
        if self.codec not in VIDEO_CODECS:
            raise ValueError(f"video.codec: {self.codec!r} is not one of {VIDEO_CODECS}")
        if type(self.crf) is not int or not 0 <= self.crf <= 63:
            raise ValueError(f"video.crf: must be an int in [0, 63], got {self.crf!r}")
        if type(self.lossless) is not bool:
            raise ValueError(f"video.lossless: must be true or false, got {self.lossless!r}")

    @property
    def encoder_codec(self) -> str:
        return "libx264rgb" if self.lossless else self.codec

    @property
    def encoder_crf(self) -> int:
        return 0 if self.lossless else self.crf

    @property
    def is_lossless(self) -> bool:
        return self.encoder_codec == "libx264rgb" and self.encoder_crf == 0


def image_key(cam: str) -> str:
    return f"observation.images.{cam}"


def _chunk_file(index: int) -> dict[str, int]:
    return {"chunk_index": index // CHUNKS_SIZE, "file_index": index % CHUNKS_SIZE}


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _tmp_path(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _commit_file(tmp: Path, final: Path) -> None:
    """fsync a fully written temporary file and rename it over ``final`` (atomic on POSIX)."""
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)


STATS_FEATURES = ("observation.state", "observation.ee_pose", "observation.gripper", "action", "next.reward", "observation.success")


def _feature_stats(arr: np.ndarray) -> dict[str, list[float]]:
    a = np.asarray(arr, dtype=np.float64).reshape(len(arr), -1)
    return {"min": a.min(0).tolist(), "max": a.max(0).tolist(), "mean": a.mean(0).tolist(), "std": a.std(0).tolist(), "count": [len(a)]}


def _image_sample_indices(T: int) -> np.ndarray:
    """Frames LeRobot's stats sample from an episode of T frames: all of them below 100, else ~T**0.75 (100..10000),
    evenly spaced."""
    n = T if T < 100 else max(100, min(int(T**0.75), 10_000))
    return np.round(np.linspace(0, T - 1, n)).astype(np.int64)


def _image_stats(frames: np.ndarray) -> dict[str, Any]:
    """Per-channel statistics of one camera as LeRobot writes them: pixels scaled to [0, 1], over a subsample of the
    frames (`_image_sample_indices`; frames of 300 px or more strided down to ~150 px), mean/std/min/max shaped
    (3, 1, 1), count = frames sampled. Computed in batches (exact integer sums), never the whole episode as floats."""
    idx = _image_sample_indices(len(frames))
    step = max(frames.shape[1:3]) // 150 if max(frames.shape[1:3]) >= 300 else 1
    s = np.zeros(3, np.float64)
    ss = np.zeros(3, np.float64)
    lo, hi, npix = np.full(3, 255, np.int64), np.zeros(3, np.int64), 0
    for b in range(0, len(idx), 64):
        x = frames[idx[b:b + 64], ::step, ::step].reshape(-1, 3)  # (pixels, 3) uint8
        xi = x.astype(np.int64)
        s += xi.sum(0)
        ss += (xi * xi).sum(0)
        lo, hi, npix = np.minimum(lo, x.min(0)), np.maximum(hi, x.max(0)), npix + len(x)
    mean = s / npix / 255.0
    std = np.sqrt(np.maximum(ss / npix / 255.0**2 - mean**2, 0.0))

    def c11(v: np.ndarray) -> list:
        return np.asarray(v, np.float64).reshape(3, 1, 1).tolist()

    return {"min": c11(lo / 255.0), "max": c11(hi / 255.0), "mean": c11(mean), "std": c11(std), "count": [len(idx)]}


def aggregate_stats(per_episode: list[dict[str, dict[str, list]]]) -> dict[str, dict[str, list]]:
    """Combine per-episode statistics into dataset statistics (exact for mean and std, count-weighted; any shape,
    e.g. (D,) for vectors, (3, 1, 1) for images). A feature missing from some episodes (image statistics of episodes
    stored before they existed) is aggregated over the episodes that have it."""
    out = {}
    feats: list[str] = []
    for p in per_episode:
        feats.extend(f for f in p if f not in feats)
    for feat in feats:
        parts = [p[feat] for p in per_episode if feat in p]
        mean = np.array([p["mean"] for p in parts], dtype=np.float64)  # (E, *shape)
        n = np.array([p["count"][0] for p in parts], dtype=np.float64).reshape((-1,) + (1,) * (mean.ndim - 1))
        var = np.array([p["std"] for p in parts], dtype=np.float64) ** 2
        total = n.sum()
        m = (n * mean).sum(0) / total
        v = (n * (var + mean**2)).sum(0) / total - m**2
        out[feat] = {
            "min": np.min([p["min"] for p in parts], 0).tolist(), "max": np.max([p["max"] for p in parts], 0).tolist(),
            "mean": m.tolist(), "std": np.sqrt(np.maximum(v, 0)).tolist(), "count": [int(total)],
        }
    return out


def next_reward(success: np.ndarray) -> np.ndarray:
    """LeRobot's ``next.reward`` from per-observation success flags: the reward received after action t is the flag
    of observation t+1; the last step repeats its own (there is no observation after it). (T,) -> (T,)."""
    success = np.asarray(success, np.float32)
    return np.concatenate([success[1:], success[-1:]])


def tasks_table(tasks: list[str]) -> pa.Table:
    """meta/tasks.parquet as LeRobot writes it with pandas (``DataFrame({"task_index": ...}, index=Index(tasks,
    name="task")).to_parquet``): a column task_index, the task strings stored as column ``task`` and named as the
    pandas index in the schema's pandas metadata, so ``pd.read_parquet(...)`` gives the task as the index."""
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "task": pa.array(tasks, pa.string())})
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
                            "metadata": {"encoding": "UTF-8"}}],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64", "metadata": None},
            {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": None},
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.3",
    }
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


def read_tasks(path: str | os.PathLike) -> list[str]:
    """The task strings of a meta/tasks.parquet in task_index order: ours (old: plain columns task_index, task; new:
    task as the pandas index) or one pandas wrote with an unnamed index (``__index_level_0__``)."""
    t = pq.read_table(path)
    names = t.column_names
    col = "task" if "task" in names else "__index_level_0__" if "__index_level_0__" in names else None
    if col is None or "task_index" not in names:
        raise StoreError(f"{path}: expected columns task_index and task (or a task index), found {names}")
    order = np.argsort(np.asarray(t.column("task_index").to_pylist(), np.int64), kind="stable")
    tasks = t.column(col).to_pylist()
    return [tasks[i] for i in order]


# Episode-row columns that may be None: typed explicitly, so every meta/episodes file has the same schema and
# pyarrow / LeRobot can read the folder as one table (a None alone would make the column type `null`).
NULLABLE_ROW_TYPES = {"policy_version": pa.string(), "loop_iteration": pa.int64(), "operator_note": pa.string(), "rig": pa.string(),
                      "received_sha256": pa.string(), "robot_id": pa.string()}


class EpisodeConflictError(StoreError):
    """An episode uuid is stored already, from other bytes (another robot's episode, or a forgery): nothing written."""


def _typed_row_table(row: dict) -> pa.Table:
    table = pa.Table.from_pylist([row])
    for name, typ in NULLABLE_ROW_TYPES.items():
        i = table.schema.get_field_index(name)
        if i >= 0 and table.schema.field(i).type != typ:
            table = table.set_column(i, name, table.column(i).cast(typ))
    return table


class EpisodeStore:
    """Append-only episode store. One writer at a time (a file lock enforces it); any number of readers."""

    def __init__(self, root: str | os.PathLike, video: VideoSettings = VideoSettings(), create: bool = True) -> None:
        self.root = Path(root)
        self.video = video
        if create:
            try:
                (self.root / "meta" / "episodes").mkdir(parents=True, exist_ok=True)
                probe = self.root / "meta" / ".write-probe"
                probe.write_bytes(b"")
                probe.unlink()
            except OSError as e:
                raise StoreError(f"store folder {self.root} is not writable ({e.strerror}); choose another out= folder or fix its permissions") from e
        elif not (self.root / "meta").is_dir():
            raise StoreError(f"{self.root} is not an episode store (no meta/ folder); collect episodes into it first (wvl collect ...)")
        self._rows: list[dict[str, Any]] = []
        self._uuid_to_index: dict[str, int] = {}
        self.refresh()

    # ------------------------------------------------------------------ reading the index
    def refresh(self) -> None:
        """Pick up episodes committed since the last look (by this or another process). The store is
        append-only, so only index files beyond the ones already read are opened."""
        rows = list(self._rows)
        for path in sorted((self.root / "meta" / "episodes").glob("chunk-*/file-*.parquet")):
            index = int(path.parent.name[6:]) * CHUNKS_SIZE + int(path.stem[5:])
            if index < len(self._rows):
                continue
            try:
                rows.extend(pq.read_table(path).to_pylist())
            except Exception as e:
                raise StoreError(f"episode index file {path} is corrupt ({e}); move it aside to drop that episode, or restore it from a backup") from e
        rows.sort(key=lambda r: r["episode_index"])
        for want, row in enumerate(rows):
            if row["episode_index"] != want:
                raise StoreError(f"episode index has a gap at {want} (found {row['episode_index']}) in {self.root / 'meta' / 'episodes'}")
        self._rows = rows
        self._uuid_to_index = {r["uuid"]: r["episode_index"] for r in rows}

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def rows(self) -> list[dict[str, Any]]:
        """One dict per committed episode (index, length, outcome, source, ... as in meta/episodes)."""
        return list(self._rows)

    def episodes_table(self) -> pa.Table:
        return pa.Table.from_pylist(self._rows) if self._rows else pa.table({})

    def index_of(self, uuid: str) -> int | None:
        return self._uuid_to_index.get(uuid)

    def indices(self, outcomes: tuple[str, ...] | None = None, **equals: Any) -> list[int]:
        """Episode indices filtered by outcome and exact field values (e.g. ``source="policy"``)."""
        out = []
        for r in self._rows:
            if outcomes is not None and r["outcome"] not in outcomes:
                continue
            if any(r.get(k) != v for k, v in equals.items()):
                continue
            out.append(r["episode_index"])
        return out

    @property
    def info(self) -> dict[str, Any]:
        p = self.root / "meta" / "info.json"
        return json.loads(p.read_text()) if p.exists() else {}

    # ------------------------------------------------------------------ writing
    @contextmanager
    def _lock(self) -> Iterator[None]:
        with open(self.root / "meta" / ".lock", "a+") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def append(self, episode: Episode, *, received_sha256: str | None = None, robot_id: str | None = None) -> int:
        """Write one episode atomically; returns its index. ``received_sha256`` (hex SHA-256 of the bytes the episode
        was parsed from) and ``robot_id`` (who sent them) are recorded on its row when it came over the link.

        Appending a UUID already stored returns its index and writes nothing (idempotent: a resend after a lost
        acknowledgement does not duplicate) -- unless both rows know their received SHA-256 and they differ: then
        EpisodeConflictError (another episode under that uuid; the stored one stays)."""
        with self._lock():
            self.refresh()
            existing = self.index_of(episode.uuid)
            if existing is not None:
                stored = self._rows[existing].get("received_sha256")
                if received_sha256 is not None and stored is not None and stored != received_sha256:
                    raise EpisodeConflictError(
                        f"episode {episode.uuid} is stored already (#{existing}, from {self._rows[existing].get('robot_id')!r}) "
                        f"from other bytes (sha256 {stored[:12]}... != {received_sha256[:12]}...); nothing was written")
                return existing
            index = len(self._rows)
            try:
                row = self._write_episode_files(episode, index)
                row["received_sha256"], row["robot_id"] = received_sha256, robot_id
                final = self.root / EPISODES_PATH.format(**_chunk_file(index))
                tmp = _tmp_path(final)
                pq.write_table(_typed_row_table(row), tmp)
                _commit_file(tmp, final)  # commit point
                fsync_dir(final.parent)
            except OSError as e:
                hint = "the disk is full; free space and retry" if e.errno == errno.ENOSPC else "check the folder's permissions"
                raise StoreError(f"could not append episode {episode.uuid} to {self.root}: {e.strerror} ({hint}); nothing was committed") from e
            self._rows.append(row)
            self._uuid_to_index[episode.uuid] = index
            self._write_summaries()
            return index

    def _write_episode_files(self, ep: Episode, index: int) -> dict[str, Any]:
        T = len(ep)
        cf = _chunk_file(index)
        global_from = sum(r["length"] for r in self._rows)
        task_index = self._task_index(ep.task)
        # Per-step table (LeRobot names where LeRobot has one).
        columns: dict[str, Any] = {
            "observation.state": list(ep.joints),
            "observation.ee_pose": list(ep.ee_pose),
            "observation.gripper": ep.gripper,
            "action": list(ep.actions),
            "next.reward": next_reward(ep.rewards),
            "observation.success": ep.rewards,
            "intervention": ep.interventions,
            "timestamp": (ep.timestamps - ep.timestamps[0]).astype(np.float32),
            "wvl.stamp": ep.timestamps,
            "frame_index": np.arange(T, dtype=np.int64),
            "episode_index": np.full(T, index, dtype=np.int64),
            "index": np.arange(global_from, global_from + T, dtype=np.int64),
            "task_index": np.full(T, task_index, dtype=np.int64),
        }
        extras_spec = {}
        for name, arr in ep.extras.items():
            flat = arr.reshape(T, -1)
            columns[f"extras.{name}"] = list(flat) if flat.shape[1] > 1 or arr.ndim > 1 else flat[:, 0]
            extras_spec[name] = {"dtype": arr.dtype.str, "shape": list(arr.shape[1:])}
        data_path = self.root / DATA_PATH.format(**cf)
        tmp = _tmp_path(data_path)
        pq.write_table(pa.table(columns), tmp)
        _commit_file(tmp, data_path)
        row: dict[str, Any] = {
            "episode_index": index,
            "tasks": [ep.task],
            "length": T,
            "data/chunk_index": cf["chunk_index"],
            "data/file_index": cf["file_index"],
            "dataset_from_index": global_from,
            "dataset_to_index": global_from + T,
            "meta/episodes/chunk_index": cf["chunk_index"],
            "meta/episodes/file_index": cf["file_index"],
            "uuid": ep.uuid,
            "outcome": ep.outcome,
            "success": ep.outcome == "success",
            "source": ep.source,
            "policy_version": ep.policy_version,
            "loop_iteration": ep.loop_iteration,
            "rig": ep.rig,
            "operator_note": ep.operator_note,
            "fps": float(ep.fps),
            # Key order kept (not sorted): Episode.to_bytes of the episode read back is then the canonical bytes.
            "info_json": json.dumps(ep.info),
            "extras_json": json.dumps(extras_spec),
            "cameras": ep.cameras,
            "depth_cameras": list(ep.depth),
            "image_shapes_json": json.dumps({c: list(v.shape[1:3]) for c, v in ep.images.items()}),
            "state_dim": int(ep.joints.shape[1]),
            "stats_json": json.dumps({
                "observation.state": _feature_stats(ep.joints), "observation.ee_pose": _feature_stats(ep.ee_pose),
                "observation.gripper": _feature_stats(ep.gripper), "action": _feature_stats(ep.actions),
                "next.reward": _feature_stats(next_reward(ep.rewards)), "observation.success": _feature_stats(ep.rewards),
                **{image_key(cam): _image_stats(frames) for cam, frames in ep.images.items()},
            }),
        }
        duration = T / ep.fps
        for cam, frames in ep.images.items():
            key = image_key(cam)
            path = self.root / VIDEO_PATH.format(video_key=key, **cf)
            tmp = _tmp_path(path)
            encode_video(frames, tmp, ep.fps, self.video.encoder_codec, self.video.encoder_crf)
            _commit_file(tmp, path)
            row[f"videos/{key}/chunk_index"] = cf["chunk_index"]
            row[f"videos/{key}/file_index"] = cf["file_index"]
            row[f"videos/{key}/from_timestamp"] = 0.0
            row[f"videos/{key}/to_timestamp"] = duration
        for cam, depth in ep.depth.items():
            # Depth is uint16 mm: lossless compressed numpy, not a lossy video.
            path = self.root / DEPTH_PATH.format(video_key=f"observation.depth.{cam}", **cf)
            tmp = _tmp_path(path)
            with open(tmp, "wb") as f:
                np.savez_compressed(f, depth=depth)
            _commit_file(tmp, path)
        return row

    def _task_index(self, task: str) -> int:
        tasks = self._tasks()
        return tasks.index(task) if task in tasks else len(tasks)

    def _tasks(self) -> list[str]:
        seen: list[str] = []
        for r in self._rows:
            for t in r["tasks"]:
                if t not in seen:
                    seen.append(t)
        return seen

    def _write_summaries(self) -> None:
        """info.json, tasks.parquet, stats.json: derived from the committed episodes."""
        rows = self._rows
        tasks = self._tasks()
        tasks_path = self.root / "meta" / "tasks.parquet"
        tmp = _tmp_path(tasks_path)
        pq.write_table(tasks_table(tasks), tmp)
        _commit_file(tmp, tasks_path)
        first = rows[0] if rows else {}
        fps = first.get("fps", 10.0)
        features: dict[str, Any] = {
            "observation.state": {"dtype": "float32", "shape": [first.get("state_dim", 0)], "names": None},
            "observation.ee_pose": {"dtype": "float32", "shape": [7], "names": ["x", "y", "z", "qx", "qy", "qz", "qw"]},
            "observation.gripper": {"dtype": "float32", "shape": [1], "names": None},
            "action": {"dtype": "float32", "shape": [7], "names": ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"]},
            "next.reward": {"dtype": "float32", "shape": [1], "names": None},
            "observation.success": {"dtype": "float32", "shape": [1], "names": None},
            "intervention": {"dtype": "bool", "shape": [1], "names": None},
            "timestamp": {"dtype": "float32", "shape": [1], "names": None},
            "wvl.stamp": {"dtype": "float64", "shape": [1], "names": None},
            "frame_index": {"dtype": "int64", "shape": [1], "names": None},
            "episode_index": {"dtype": "int64", "shape": [1], "names": None},
            "index": {"dtype": "int64", "shape": [1], "names": None},
            "task_index": {"dtype": "int64", "shape": [1], "names": None},
        }
        for cam, (h, w) in json.loads(first.get("image_shapes_json") or "{}").items():
            features[image_key(cam)] = {
                "dtype": "video",
                "shape": [h, w, 3],
                "names": ["height", "width", "channels"],
                "info": {"video.fps": fps, "video.codec": self.video.encoder_codec, "video.pix_fmt": PIX_FMTS[self.video.encoder_codec]},
            }
        info = {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": first.get("rig", "unknown"),
            "total_episodes": len(rows),
            "total_frames": sum(r["length"] for r in rows),
            "total_tasks": len(tasks),
            "chunks_size": CHUNKS_SIZE,
            "fps": fps,
            "splits": {"train": f"0:{len(rows)}"},
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH,
            "features": features,
            "wvl": {"outcomes": _count(r["outcome"] for r in rows), "sources": _count(r["source"] for r in rows)},
        }
        _atomic_write_bytes(self.root / "meta" / "info.json", json.dumps(info, indent=2).encode())
        _atomic_write_bytes(self.root / "meta" / "stats.json", json.dumps(self.stats(), indent=2).encode())

    def tasks(self) -> list[str]:
        """Task strings in task_index order (meta/tasks.parquet, old or new layout; the episode rows if it is missing)."""
        path = self.root / "meta" / "tasks.parquet"
        return read_tasks(path) if path.exists() else self._tasks()

    def stats(self, indices: list[int] | None = None) -> dict[str, dict[str, list]]:
        """Per-feature min/max/mean/std/count over the given (default: all) committed episodes (images: per channel,
        nested (3, 1, 1) lists in [0, 1], count = frames sampled)."""
        rows = self._rows if indices is None else [self.row(i) for i in indices]
        return aggregate_stats([json.loads(r["stats_json"]) for r in rows])

    # ------------------------------------------------------------------ reading episodes
    def _data_path(self, index: int) -> Path:
        return self.root / DATA_PATH.format(**_chunk_file(index))

    def row(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self._rows):
            raise IndexError(f"episode {index} is not in the store ({len(self._rows)} episodes in {self.root})")
        return self._rows[index]

    def read(self, index: int, images: bool = True) -> Episode:
        """The committed episode ``index`` as an Episode (images decoded from MP4 unless ``images=False``,
        in which case each camera holds a (T, 1, 1, 3) placeholder).

        What comes back exactly: every per-step array (state, pose, gripper, actions, success flags, interventions,
        timestamps, extras with their dtypes), depth, and the metadata including ``info`` with its key order. Images
        are exact only when the video settings were lossless (`VideoSettings.is_lossless`); then
        ``read(i).to_bytes()`` equals ``Episode.to_bytes()`` of the episode appended (the canonical, "raw" codec form),
        whatever codec the bytes it arrived in used. Episodes stored before key order was kept have sorted ``info``
        and extras keys."""
        row = self.row(index)
        path = self._data_path(index)
        try:
            t = pq.read_table(path)
        except Exception as e:
            raise StoreError(f"data file {path} of episode {index} is corrupt or missing ({e}); the episode cannot be read") from e
        T = row["length"]
        if t.num_rows != T:
            raise StoreError(f"data file {path} has {t.num_rows} rows, the episode index says {T}; the store is corrupt")

        def col(name: str, dtype) -> np.ndarray:
            return np.asarray(t.column(name).to_pylist(), dtype=dtype)

        imgs, depth = {}, {}
        cf = _chunk_file(index)
        for cam in row["cameras"]:
            if images:
                imgs[cam] = decode_video(self.root / VIDEO_PATH.format(video_key=image_key(cam), **cf), expected_frames=T)
            else:
                imgs[cam] = np.zeros((T, 1, 1, 3), np.uint8)
        for cam in row.get("depth_cameras") or []:
            with np.load(self.root / DEPTH_PATH.format(video_key=f"observation.depth.{cam}", **cf)) as z:
                depth[cam] = z["depth"]
        if not images:
            depth = {}
        extras = {}
        for name, spec in json.loads(row.get("extras_json") or "{}").items():
            extras[name] = col(f"extras.{name}", np.dtype(spec["dtype"])).reshape([T] + spec["shape"])
        return Episode(
            task=row["tasks"][0], fps=row["fps"], timestamps=col("wvl.stamp", np.float64), images=imgs, depth=depth,
            joints=col("observation.state", np.float32), ee_pose=col("observation.ee_pose", np.float32),
            gripper=col("observation.gripper", np.float32), actions=col("action", np.float32),
            rewards=col(_success_column(t.column_names), np.float32), interventions=col("intervention", bool), extras=extras,
            uuid=row["uuid"], rig=row["rig"], source=row["source"], outcome=row["outcome"],
            policy_version=row["policy_version"], loop_iteration=row["loop_iteration"],
            operator_note=row["operator_note"], info=json.loads(row["info_json"]),
        )

    def frames(self, index: int, cam: str | None = None) -> np.ndarray:
        """(T, H, W, 3) uint8 frames of one camera (the first by default) without the rest of the episode."""
        row = self.row(index)
        cam = cam or row["cameras"][0]
        if cam not in row["cameras"]:
            raise KeyError(f"episode {index} has no camera {cam!r}; it has {row['cameras']}")
        return decode_video(self.root / VIDEO_PATH.format(video_key=image_key(cam), **_chunk_file(index)), expected_frames=row["length"])

    def step_table(self, index: int, columns: list[str] | None = None) -> pa.Table:
        return pq.read_table(self._data_path(index), columns=columns)

    def step_columns(self, index: int) -> list[str]:
        """The per-step column names of episode ``index`` (from the file's schema; no data is read)."""
        return list(pq.read_schema(self._data_path(index)).names)

    def states(self, index: int, features) -> np.ndarray:
        """(T, S) float32 robot state at every observation of episode ``index``, in ``features`` order (`robot.state`
        names: what a state-input policy takes and the world model's state head predicts)."""
        t = self.step_table(index, ["observation.ee_pose", "observation.gripper"])
        return state_matrix(features, np.asarray(t.column("observation.ee_pose").to_pylist(), np.float32),
                            np.asarray(t.column("observation.gripper").to_pylist(), np.float32))

    def success(self, index: int) -> np.ndarray:
        """(T,) float32 per-observation success flags of episode ``index`` (``Episode.rewards``: 1 where observation t
        shows the task in its success state) -- ``observation.success``, or ``next.reward`` in stores written before
        that column existed (they held the per-observation flag there)."""
        col = _success_column(self.step_columns(index))
        return np.asarray(self.step_table(index, [col]).column(col).to_pylist(), np.float32)


def _success_column(columns: list[str]) -> str:
    return "observation.success" if "observation.success" in columns else "next.reward"


def _count(values) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out
