"""The Episode record: THE data contract between robot, store, wire and learner.

One episode = metadata + T steps. Step t holds what the robot saw at t (images, state) and the action it
then commanded. Conventions, fixed here once:

- ``timestamps``   (T,)        float64 seconds, strictly increasing (monotonic clock of the recorder; a
                               simulated rig's clock starts at 0). ``info["start_unix_s"]`` (set by
                               `EpisodeRecorder`): the wall-clock time (Unix seconds) of the first step.
- ``images[cam]``  (T, H, W, 3) uint8 RGB, one array per camera name.
- ``depth[cam]``   (T, H, W)   uint16 millimetres, optional, aligned to ``images[cam]``.
- ``joints``       (T, J)      float32 joint positions (rad / m for fingers).
- ``ee_pose``      (T, 7)      float32 end-effector pose in the base frame: xyz (m) + quaternion xyzw.
- ``gripper``      (T,)        float32 gripper opening, 0 = closed, 1 = open.
- ``actions``      (T, 7)      float32: EE delta xyz, delta rpy (both normalised to [-1, 1] by the rig's
                               scale), gripper target (-1 close, +1 open).
- ``rewards``      (T,)        float32 in {0, 1}: 1 where the task is in its success state at observation t
                               (a per-frame success label, what the world model's reward head predicts).
- ``interventions`` (T,)       bool: the safety filter or a human changed the commanded action at t.
- ``extras[name]`` (T, ...)    any further numeric per-step arrays (control timing, safety flags, ...).

Serialised form (``to_bytes`` / ``from_bytes``): one msgpack map with raw numpy buffers (optionally
zlib-compressed per array), self-describing (dtype, shape) and never pickle. The robot's outbox writes it to
disk and the learner link ships it as is.
"""

from __future__ import annotations

import math
import time
import uuid as uuid_lib
import zlib
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

FORMAT_NAME = "wvl-episode"
FORMAT_VERSION = 1
OUTCOMES = ("success", "near_success", "failure", "unlabeled")
SOURCES = ("teleop", "policy", "scripted")
ACTION_DIM = 7
EE_POSE_DIM = 7
# An episode bigger than this in serialised form is refused on read (a lying or corrupted header must not
# make us allocate without bound). 8 GiB holds about 5 minutes of 640x480 RGB at 30 Hz from one camera (raw).
MAX_SERIALISED_BYTES = 8 << 30
# The arrays' declared (decoded) sizes are summed and checked against this before anything is inflated.
MAX_DECODED_BYTES = 8 << 30
# A zlib array may declare at most this many times its compressed size. `to_bytes("zlib")` (level 1) tops out at
# ~229x (an all-black camera); a decompression bomb (level 9 zeros) reaches ~1000x. So no episode this code writes
# is refused, and a forged one inflates to at most 256x what was received.
MAX_INFLATE_RATIO = 256
_INFLATE_STEP = 16 << 20  # zlib output is written into the array in pieces of this size (no second copy)
_CODECS = ("raw", "zlib")
START_UNIX_KEY = "start_unix_s"  # info key: wall-clock time (Unix s) of the first step


class EpisodeValidationError(ValueError):
    """An Episode field is malformed; the message names the field."""


class EpisodeFormatError(ValueError):
    """Serialised bytes are not a valid episode (truncated, corrupted, wrong format or version)."""


def _per_step_arrays(ep: "Episode") -> dict[str, np.ndarray]:
    return {
        "timestamps": ep.timestamps,
        "joints": ep.joints,
        "ee_pose": ep.ee_pose,
        "gripper": ep.gripper,
        "actions": ep.actions,
        "rewards": ep.rewards,
        "interventions": ep.interventions,
    }


@dataclass
class Episode:
    task: str
    fps: float
    timestamps: np.ndarray
    images: dict[str, np.ndarray]
    joints: np.ndarray
    ee_pose: np.ndarray
    gripper: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    interventions: np.ndarray
    depth: dict[str, np.ndarray] = field(default_factory=dict)
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    uuid: str = field(default_factory=lambda: str(uuid_lib.uuid4()))
    rig: str = "sim"
    source: str = "scripted"
    outcome: str = "unlabeled"
    policy_version: str | None = None
    loop_iteration: int | None = None
    operator_note: str = ""
    # Episode-level metadata that is not part of the fixed schema (seed, perturbation kind, safety counts,
    # camera calibration id, ...). JSON-able values only.
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._coerce()
        self.validate()

    # ------------------------------------------------------------------ validation
    def _coerce(self) -> None:
        """Cast to the contract's dtypes where that loses nothing (lists, float64 state, int rewards)."""

        def as_float(name: str, value: Any, dtype=np.float32) -> np.ndarray:
            try:
                arr = np.asarray(value)
            except Exception as e:  # ragged lists
                raise EpisodeValidationError(f"{name}: cannot be read as an array ({e})") from e
            if arr.dtype.kind not in "fiub":
                raise EpisodeValidationError(f"{name}: expected numbers, got dtype {arr.dtype}")
            return np.ascontiguousarray(arr, dtype=dtype)

        self.timestamps = as_float("timestamps", self.timestamps, np.float64)
        self.joints = as_float("joints", self.joints)
        self.ee_pose = as_float("ee_pose", self.ee_pose)
        self.gripper = as_float("gripper", self.gripper)
        self.actions = as_float("actions", self.actions)
        self.rewards = as_float("rewards", self.rewards)
        inter = np.asarray(self.interventions)
        if inter.dtype.kind not in "biu":
            raise EpisodeValidationError(f"interventions: expected booleans, got dtype {inter.dtype}")
        self.interventions = np.ascontiguousarray(inter, dtype=bool)
        if not isinstance(self.images, dict) or not isinstance(self.depth, dict) or not isinstance(self.extras, dict):
            raise EpisodeValidationError("images, depth and extras must be dicts of name -> array")
        self.images = {str(k): np.ascontiguousarray(v) for k, v in self.images.items()}
        self.depth = {str(k): np.ascontiguousarray(v) for k, v in self.depth.items()}
        self.extras = {str(k): np.ascontiguousarray(v) for k, v in self.extras.items()}

    def validate(self) -> None:
        """Raise EpisodeValidationError naming the first malformed field."""
        if not isinstance(self.task, str) or not self.task.strip():
            raise EpisodeValidationError("task: must be a non-empty instruction string")
        if not isinstance(self.fps, (int, float)) or not math.isfinite(self.fps) or self.fps <= 0:
            raise EpisodeValidationError(f"fps: must be a positive finite number, got {self.fps!r}")
        try:
            uuid_lib.UUID(str(self.uuid))
        except ValueError as e:
            raise EpisodeValidationError(f"uuid: {self.uuid!r} is not a UUID") from e
        if self.outcome not in OUTCOMES:
            raise EpisodeValidationError(f"outcome: {self.outcome!r} is not one of {OUTCOMES}")
        if self.source not in SOURCES:
            raise EpisodeValidationError(f"source: {self.source!r} is not one of {SOURCES}")
        if not isinstance(self.rig, str) or not self.rig:
            raise EpisodeValidationError("rig: must be a non-empty string")
        if self.policy_version is not None and not isinstance(self.policy_version, str):
            raise EpisodeValidationError("policy_version: must be a string or None")
        if self.loop_iteration is not None and (not isinstance(self.loop_iteration, int) or self.loop_iteration < 0):
            raise EpisodeValidationError(f"loop_iteration: must be a non-negative int or None, got {self.loop_iteration!r}")
        if not isinstance(self.operator_note, str):
            raise EpisodeValidationError("operator_note: must be a string")
        if not isinstance(self.info, dict):
            raise EpisodeValidationError("info: must be a dict")

        ts = self.timestamps
        if ts.ndim != 1 or ts.shape[0] == 0:
            raise EpisodeValidationError(f"timestamps: expected shape (T,) with T >= 1, got {ts.shape}")
        T = ts.shape[0]
        if not np.all(np.isfinite(ts)):
            raise EpisodeValidationError("timestamps: contain NaN or inf")
        if T > 1 and not np.all(np.diff(ts) > 0):
            bad = int(np.argmin(np.diff(ts) > 0)) + 1
            raise EpisodeValidationError(f"timestamps: not strictly increasing at step {bad}")

        def check(name: str, arr: np.ndarray, shape_tail: tuple, finite: bool = True) -> None:
            if arr.ndim != 1 + len(shape_tail) or arr.shape[0] != T or any(
                want is not None and got != want for got, want in zip(arr.shape[1:], shape_tail)
            ):
                want = "(" + ", ".join(["T=%d" % T] + ["*" if s is None else str(s) for s in shape_tail]) + ")"
                raise EpisodeValidationError(f"{name}: expected shape {want}, got {arr.shape}")
            if finite and arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
                raise EpisodeValidationError(f"{name}: contains NaN or inf")

        check("joints", self.joints, (None,))
        check("ee_pose", self.ee_pose, (EE_POSE_DIM,))
        check("gripper", self.gripper, ())
        check("actions", self.actions, (ACTION_DIM,))
        check("rewards", self.rewards, ())
        check("interventions", self.interventions, ())
        if not np.all((self.rewards == 0) | (self.rewards == 1)):
            raise EpisodeValidationError("rewards: must be 0 or 1 per step")

        if not self.images:
            raise EpisodeValidationError("images: at least one camera is required")
        for cam, img in self.images.items():
            if img.dtype != np.uint8:
                raise EpisodeValidationError(f"images[{cam!r}]: expected dtype uint8, got {img.dtype}")
            check(f"images[{cam!r}]", img, (None, None, 3))
        for cam, d in self.depth.items():
            if cam not in self.images:
                raise EpisodeValidationError(f"depth[{cam!r}]: no RGB camera of that name to align to")
            if d.dtype != np.uint16:
                raise EpisodeValidationError(f"depth[{cam!r}]: expected dtype uint16 (mm), got {d.dtype}")
            check(f"depth[{cam!r}]", d, self.images[cam].shape[1:3])
        for name, arr in self.extras.items():
            if arr.dtype.kind not in "fiub":
                raise EpisodeValidationError(f"extras[{name!r}]: expected a numeric array, got dtype {arr.dtype}")
            if arr.ndim < 1 or arr.shape[0] != T:
                raise EpisodeValidationError(f"extras[{name!r}]: expected first dimension T={T}, got {arr.shape}")

    # ------------------------------------------------------------------ convenience
    def __len__(self) -> int:
        return int(self.timestamps.shape[0])

    @property
    def cameras(self) -> list[str]:
        return list(self.images)

    @property
    def duration_s(self) -> float:
        return float(self.timestamps[-1] - self.timestamps[0]) if len(self) > 1 else 0.0

    def meta(self) -> dict[str, Any]:
        """Episode-level fields as a JSON-able dict (what the store's episode index holds)."""
        return {
            "uuid": self.uuid,
            "task": self.task,
            "fps": float(self.fps),
            "rig": self.rig,
            "source": self.source,
            "outcome": self.outcome,
            "policy_version": self.policy_version,
            "loop_iteration": self.loop_iteration,
            "operator_note": self.operator_note,
            "info": self.info,
        }

    def equals(self, other: "Episode", *, images: bool = True) -> bool:
        """Exact equality of metadata and per-step data (images optional: video stores are lossy)."""
        if self.meta() != other.meta():
            return False
        for name, arr in _per_step_arrays(self).items():
            if not np.array_equal(arr, _per_step_arrays(other)[name]):
                return False
        if set(self.extras) != set(other.extras) or any(
            not np.array_equal(v, other.extras[k]) for k, v in self.extras.items()
        ):
            return False
        if images:
            for a, b in ((self.images, other.images), (self.depth, other.depth)):
                if set(a) != set(b) or any(not np.array_equal(v, b[k]) for k, v in a.items()):
                    return False
        return True

    # ------------------------------------------------------------------ serialisation
    def to_bytes(self, codec: str = "raw") -> bytes:
        """Self-contained msgpack form. ``codec="zlib"`` compresses each array (slower, ~3x smaller images)."""
        if codec not in _CODECS:
            raise ValueError(f"codec: {codec!r} is not one of {_CODECS}")
        arrays: dict[str, np.ndarray] = dict(_per_step_arrays(self))
        arrays.update({f"images/{k}": v for k, v in self.images.items()})
        arrays.update({f"depth/{k}": v for k, v in self.depth.items()})
        arrays.update({f"extras/{k}": v for k, v in self.extras.items()})
        packed = {}
        for name, arr in arrays.items():
            raw = np.ascontiguousarray(arr).tobytes()
            packed[name] = {
                "dtype": arr.dtype.str,
                "shape": list(arr.shape),
                "codec": codec,
                "data": zlib.compress(raw, 1) if codec == "zlib" else raw,
            }
        doc = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "meta": self.meta(), "arrays": packed}
        return msgpack.packb(doc, use_bin_type=True)

    @classmethod
    def from_bytes(cls, data: bytes | memoryview, *, max_decoded_bytes: int = MAX_DECODED_BYTES,
                   max_inflate_ratio: int = MAX_INFLATE_RATIO) -> "Episode":
        """Parse and validate; raises EpisodeFormatError (bytes) or EpisodeValidationError (content).

        Memory is bounded by what the header declares, checked before anything is inflated: the arrays' declared
        sizes must sum to at most ``max_decoded_bytes``, and each zlib array may declare at most ``max_inflate_ratio``
        times its compressed size; inflation stops at the declared size."""
        if len(data) > MAX_SERIALISED_BYTES:
            raise EpisodeFormatError(f"episode is {len(data)} bytes, over the {MAX_SERIALISED_BYTES} byte limit")
        try:
            doc = msgpack.unpackb(data, raw=False, strict_map_key=True, max_bin_len=MAX_SERIALISED_BYTES)
        except Exception as e:
            raise EpisodeFormatError(f"not a msgpack episode (truncated or corrupted?): {type(e).__name__}: {e}") from e
        if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
            raise EpisodeFormatError(f"format: expected {FORMAT_NAME!r}")
        if doc.get("version") != FORMAT_VERSION:
            raise EpisodeFormatError(
                f"version: episode format {doc.get('version')!r} is not supported (this build reads {FORMAT_VERSION}); "
                "upgrade world-vla-loop on this side"
            )
        meta, packed = doc.get("meta"), doc.get("arrays")
        if not isinstance(meta, dict) or not isinstance(packed, dict):
            raise EpisodeFormatError("meta/arrays: missing or not maps")
        specs = {name: _array_spec(name, spec, max_inflate_ratio) for name, spec in packed.items()}
        declared = sum(sp[3] for sp in specs.values())
        if declared > max_decoded_bytes:
            raise EpisodeFormatError(f"arrays: declare {declared} decoded bytes in all, over the {max_decoded_bytes} byte limit")
        arrays = {name: _decode_array(name, *sp) for name, sp in specs.items()}
        groups: dict[str, dict[str, np.ndarray]] = {"images": {}, "depth": {}, "extras": {}}
        flat: dict[str, np.ndarray] = {}
        for name, arr in arrays.items():
            prefix, _, rest = name.partition("/")
            if rest and prefix in groups:
                groups[prefix][rest] = arr
            else:
                flat[name] = arr
        missing = [k for k in ("timestamps", "joints", "ee_pose", "gripper", "actions", "rewards", "interventions") if k not in flat]
        if missing:
            raise EpisodeFormatError(f"arrays: missing {missing}")
        known_meta = ("uuid", "task", "fps", "rig", "source", "outcome", "policy_version", "loop_iteration", "operator_note", "info")
        unknown = set(meta) - set(known_meta)
        if unknown:
            raise EpisodeFormatError(f"meta: unknown keys {sorted(unknown)}")
        kwargs = {k: meta[k] for k in known_meta if k in meta}
        if "task" not in kwargs or "fps" not in kwargs:
            raise EpisodeFormatError("meta: task and fps are required")
        return cls(**kwargs, **flat, **groups)


def _array_spec(name: str, spec: Any, max_inflate_ratio: int) -> tuple[np.dtype, tuple[int, ...], str, int, Any]:
    """(dtype, shape, codec, declared decoded bytes, data) of one packed array, checked without inflating anything."""
    if not isinstance(spec, dict):
        raise EpisodeFormatError(f"arrays[{name!r}]: not a map")
    try:
        dtype = np.dtype(spec["dtype"])
        shape = tuple(int(s) for s in spec["shape"])
        codec, data = spec.get("codec", "raw"), spec["data"]
    except Exception as e:
        raise EpisodeFormatError(f"arrays[{name!r}]: bad dtype/shape/data ({e})") from e
    if dtype.kind not in "fiub" or dtype.hasobject:
        raise EpisodeFormatError(f"arrays[{name!r}]: dtype {dtype} is not a plain numeric type")
    if any(s < 0 for s in shape):
        raise EpisodeFormatError(f"arrays[{name!r}]: negative dimension in {shape}")
    if codec not in _CODECS:
        raise EpisodeFormatError(f"arrays[{name!r}]: unknown codec {codec!r}")
    if not isinstance(data, (bytes, bytearray)):
        raise EpisodeFormatError(f"arrays[{name!r}]: data is {type(data).__name__}, not bytes")
    nbytes = math.prod(shape) * dtype.itemsize  # Python ints: a lying shape cannot overflow into a small number
    if codec == "zlib" and nbytes > max_inflate_ratio * len(data):
        raise EpisodeFormatError(
            f"arrays[{name!r}]: {len(data)} zlib bytes declare {nbytes} decoded bytes (shape {shape}), more than "
            f"{max_inflate_ratio}x; refused as a decompression bomb"
        )
    return dtype, shape, codec, nbytes, data


def _decode_array(name: str, dtype: np.dtype, shape: tuple[int, ...], codec: str, nbytes: int, data: bytes) -> np.ndarray:
    if codec == "raw":
        if len(data) != nbytes:
            raise EpisodeFormatError(f"arrays[{name!r}]: {len(data)} bytes for dtype {dtype} shape {shape} (expected {nbytes}; truncated?)")
        return np.frombuffer(data, dtype=dtype).reshape(shape).copy()
    out = np.empty(shape, dtype=dtype)
    buf = memoryview(out.reshape(-1).view(np.uint8)) if nbytes else memoryview(bytearray())
    d = zlib.decompressobj()
    pos, src, prev = 0, data, -1
    try:
        while True:
            piece = d.decompress(src, min(_INFLATE_STEP, nbytes - pos + 1))  # never more than declared (+1 to see excess)
            if len(piece) > nbytes - pos:
                raise EpisodeFormatError(f"arrays[{name!r}]: zlib data inflates past the declared {nbytes} bytes (dtype {dtype} shape {shape})")
            buf[pos:pos + len(piece)] = piece
            pos += len(piece)
            src = d.unconsumed_tail
            if d.eof or (not piece and len(src) == prev):  # end of stream, or no progress (truncated)
                break
            prev = len(src)
    except zlib.error as e:
        raise EpisodeFormatError(f"arrays[{name!r}]: zlib data corrupted ({e})") from e
    if pos != nbytes:
        raise EpisodeFormatError(f"arrays[{name!r}]: {pos} bytes for dtype {dtype} shape {shape} (expected {nbytes}; truncated?)")
    return out


class EpisodeRecorder:
    """Builds an Episode one step at a time (used by the sim collector, teleop sessions, the control loop)."""

    def __init__(self, task: str, fps: float, **meta: Any) -> None:
        self.task, self.fps, self.meta = task, fps, meta
        self._steps: list[dict[str, Any]] = []
        self.start_unix_s: float | None = None  # wall-clock time of the first step (timestamps are a loop clock's)

    def __len__(self) -> int:
        return len(self._steps)

    def timestamp_after_last(self, t: float) -> float:
        """``t``, moved just past the last step's timestamp when it is not later: an episode's timestamps strictly
        increase even when a clock repeats a reading."""
        return t if not self._steps else max(t, self._steps[-1]["timestamp"] + 1e-6)

    def add_step(
        self,
        *,
        timestamp: float,
        images: dict[str, np.ndarray],
        joints: np.ndarray,
        ee_pose: np.ndarray,
        gripper: float,
        action: np.ndarray,
        reward: float = 0.0,
        intervention: bool = False,
        depth: dict[str, np.ndarray] | None = None,
        extras: dict[str, Any] | None = None,
    ) -> None:
        if not self._steps:
            self.start_unix_s = time.time()
        if self._steps:
            cams, extra_keys = set(self._steps[0]["images"]), set(self._steps[0]["extras"])
            if set(images) != cams:
                raise EpisodeValidationError(f"images: step {len(self)} has cameras {sorted(images)}, expected {sorted(cams)}")
            if set(extras or {}) != extra_keys:
                raise EpisodeValidationError(f"extras: step {len(self)} has keys {sorted(extras or {})}, expected {sorted(extra_keys)}")
        self._steps.append(
            dict(timestamp=timestamp, images=images, joints=joints, ee_pose=ee_pose, gripper=gripper, action=action,
                 reward=reward, intervention=intervention, depth=depth or {}, extras=extras or {})
        )

    def finish(self, outcome: str = "unlabeled", **meta: Any) -> Episode:
        if not self._steps:
            raise EpisodeValidationError("timestamps: an episode needs at least one step")
        s = self._steps
        first = s[0]
        kwargs = dict(self.meta)
        kwargs.update(meta)
        info = dict(kwargs.get("info") or {})
        if self.start_unix_s is not None:
            info.setdefault(START_UNIX_KEY, round(self.start_unix_s, 6))
        kwargs["info"] = info
        return Episode(
            task=self.task,
            fps=self.fps,
            timestamps=np.array([x["timestamp"] for x in s], dtype=np.float64),
            images={c: np.stack([x["images"][c] for x in s]) for c in first["images"]},
            depth={c: np.stack([x["depth"][c] for x in s]) for c in first["depth"]},
            joints=np.stack([np.asarray(x["joints"], dtype=np.float32) for x in s]),
            ee_pose=np.stack([np.asarray(x["ee_pose"], dtype=np.float32) for x in s]),
            gripper=np.array([x["gripper"] for x in s], dtype=np.float32),
            actions=np.stack([np.asarray(x["action"], dtype=np.float32) for x in s]),
            rewards=np.array([x["reward"] for x in s], dtype=np.float32),
            interventions=np.array([x["intervention"] for x in s], dtype=bool),
            extras={k: np.stack([np.asarray(x["extras"][k]) for x in s]) for k in first["extras"]},
            outcome=outcome,
            **kwargs,
        )
