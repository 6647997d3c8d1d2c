"""The deployed policy on the robot PC: an ONNX artifact run by onnxruntime (no torch), verified before use,
swapped only between episodes, with rollback.

Validation of an artifact (`load_artifact` / `validate_artifact`), in order; any failure is an
`ArtifactError` naming the manifest field or file, and the robot keeps its current policy:

1. `read_artifact`: manifest structure and version (a newer ``manifest_version`` is refused), every sha256;
2. manifest vs the rig (`RigSpec`): camera, image size, robot-state features the rig's arm can supply, action
   dimension, action bounds within the rig's, control rate;
3. the graph vs the manifest: input ``image`` uint8 (1, H, W, 3) with the manifest's image size, input
   ``instruction_tokens`` int64 (1, L) with L = len(manifest instruction_tokens), input ``state`` float32
   (1, S) with S = len(manifest state) (present exactly when the manifest lists state features), output
   ``action_chunk`` float32 (1, K, D) with the manifest's chunk length and action dimension (a manifest that
   lies is caught here);
4. smoke inference on a few frames (black, white, grey, noise; the training mean state): outputs finite and
   within [action_low, action_high].

At run time `PolicyRuntime.act(image, state)` returns the (K, D) chunk; ``state`` is the arm's `ArmState`
(the runtime picks the manifest's features out of it, `robot.state`) or a ready (S,) vector. Non-finite or out-of-bounds outputs are
*not* repaired here: they are counted and logged, and the safety filter (which holds on NaN and clamps)
decides; ``strict=True`` raises `PolicyOutputError` instead.

Swapping: `stage(folder)` validates a new version and holds it; `reset()` -- called by the episode runner's
`PolicySource` at the start of every episode -- makes it current (the old one is kept); `rollback()`
brings the previous version back at the next episode start. No swap ever happens inside an episode.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robot.config_dict import dataclass_from_dict
from robot.policy_artifact import MODEL_FILE, ArtifactError, PolicyManifest, read_artifact
from robot.state import STATE_FEATURES, state_vector

log = logging.getLogger(__name__)

# Tried in this order among what the installed onnxruntime offers (onnxruntime-gpu adds the first two).
PROVIDER_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
IMAGE_INPUT, TOKENS_INPUT, STATE_INPUT, CHUNK_OUTPUT = "image", "instruction_tokens", "state", "action_chunk"
_ORT_DTYPES = {"tensor(uint8)": "uint8", "tensor(int64)": "int64", "tensor(float)": "float32", "tensor(double)": "float64",
               "tensor(int32)": "int32", "tensor(float16)": "float16", "tensor(bool)": "bool"}
BOUND_TOL = 1e-6


class PolicyRuntimeError(RuntimeError):
    """The runtime was used wrongly (act before a policy is loaded, rollback with nothing to roll back to)."""


class PolicyOutputError(PolicyRuntimeError):
    """A loaded policy produced a non-finite or out-of-bounds chunk (``strict=True`` only)."""


class ObservationError(ValueError):
    """The image handed to `act` does not match the policy's input (size, channels, dtype)."""


@dataclass(frozen=True)
class RigSpec:
    """What the robot offers a policy: the camera it sees through, the robot state its arm reports and the action
    space it accepts."""

    camera: str = "front"
    image_size: tuple[int, int] = (64, 64)  # (H, W) of the frames handed to the policy
    state: tuple[str, ...] = tuple(STATE_FEATURES)  # robot.state features the arm supplies (every ArmState has all)
    action_dim: int = 7
    action_low: tuple[float, ...] = (-1.0,) * 7
    action_high: tuple[float, ...] = (1.0,) * 7
    control_hz: float = 10.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_size", tuple(int(x) for x in self.image_size))
        object.__setattr__(self, "action_low", tuple(float(x) for x in self.action_low))
        object.__setattr__(self, "action_high", tuple(float(x) for x in self.action_high))
        object.__setattr__(self, "state", tuple(str(x) for x in self.state))
        unknown = [f for f in self.state if f not in STATE_FEATURES]
        if unknown:
            raise ValueError(f"rig.state: unknown state feature(s) {unknown}; known: {list(STATE_FEATURES)}")
        if len(self.image_size) != 2 or min(self.image_size) < 1:
            raise ValueError(f"rig.image_size: expected (H, W) > 0, got {self.image_size}")
        if len(self.action_low) != self.action_dim or len(self.action_high) != self.action_dim:
            raise ValueError(f"rig.action_low/action_high: need {self.action_dim} values each")
        if self.control_hz <= 0:
            raise ValueError(f"rig.control_hz: must be positive, got {self.control_hz}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RigSpec":
        return dataclass_from_dict(cls, d, "rig")


def available_providers(preferred: tuple[str, ...] | list[str] | None = None) -> list[str]:
    """The providers to use, best first, among those the installed onnxruntime offers (CPU always last)."""
    import onnxruntime as ort

    have = set(ort.get_available_providers())
    order = list(preferred) if preferred else list(PROVIDER_PREFERENCE)
    chosen = [p for p in order if p in have]
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


def _bad(name: str, why: str) -> ArtifactError:
    return ArtifactError(f"manifest field {name!r}: {why}")


def check_manifest_against_rig(m: PolicyManifest, rig: RigSpec) -> None:
    if m.camera != rig.camera:
        raise _bad("camera", f"policy wants camera {m.camera!r}, this rig gives it {rig.camera!r}")
    if tuple(m.image_size) != tuple(rig.image_size):
        raise _bad("image_size", f"policy wants {list(m.image_size)} frames, this rig's camera gives {list(rig.image_size)}")
    missing = [f for f in m.state if f not in rig.state]
    if missing:
        raise _bad("state", f"policy takes the robot state {list(m.state)}, this rig's arm supplies {list(rig.state)} "
                            f"(missing {missing})")
    if m.action_dim != rig.action_dim:
        raise _bad("action_dim", f"policy outputs {m.action_dim}-d actions, this rig takes {rig.action_dim}-d")
    lo_bad = [i for i, (a, b) in enumerate(zip(m.action_low, rig.action_low)) if a < b - BOUND_TOL]
    hi_bad = [i for i, (a, b) in enumerate(zip(m.action_high, rig.action_high)) if a > b + BOUND_TOL]
    if lo_bad:
        raise _bad("action_low", f"below the rig's bounds in dimension(s) {lo_bad}")
    if hi_bad:
        raise _bad("action_high", f"above the rig's bounds in dimension(s) {hi_bad}")
    if abs(m.control_hz - rig.control_hz) > 1e-6:
        raise _bad("control_hz", f"policy chunks are meant for {m.control_hz:g} Hz, this rig runs at {rig.control_hz:g} Hz")


def _shape(dims: list[Any]) -> list[Any]:
    return [d if isinstance(d, int) else None for d in dims]


def check_graph_against_manifest(session: Any, m: PolicyManifest) -> None:
    ins = {i.name: i for i in session.get_inputs()}
    outs = {o.name: o for o in session.get_outputs()}
    expected = {IMAGE_INPUT, TOKENS_INPUT} | ({STATE_INPUT} if m.state else set())
    if set(ins) != expected:
        raise _bad("state" if STATE_INPUT in set(ins) ^ expected else "inputs",
                   f"the graph's inputs are {sorted(ins)}, expected {sorted(expected)} for a manifest with state {list(m.state)}")
    if CHUNK_OUTPUT not in outs:
        raise _bad("outputs", f"the graph has no output {CHUNK_OUTPUT!r} (it has {sorted(outs)})")
    for kind, declared, actual in (("inputs", m.inputs, ins), ("outputs", m.outputs, outs)):
        for name, spec in declared.items():
            if name not in actual:
                raise _bad(kind, f"declares {name!r}, which the graph does not have")
            got_dtype = _ORT_DTYPES.get(actual[name].type, actual[name].type)
            if spec.get("dtype") and spec["dtype"] != got_dtype:
                raise _bad(kind, f"{name!r} declared {spec['dtype']}, the graph has {got_dtype}")
            if spec.get("shape") is not None and _shape(actual[name].shape) != [d if isinstance(d, int) else None for d in spec["shape"]]:
                raise _bad(kind, f"{name!r} declared shape {spec['shape']}, the graph has {actual[name].shape}")
    H, W = m.image_size
    img = ins[IMAGE_INPUT]
    if _ORT_DTYPES.get(img.type) != "uint8":
        raise _bad("inputs", f"{IMAGE_INPUT!r} must be uint8, the graph has {img.type}")
    if _shape(img.shape) != [1, H, W, 3]:
        raise _bad("image_size", f"says [{H}, {W}], but the graph's input {IMAGE_INPUT!r} is {img.shape}")
    tok = ins[TOKENS_INPUT]
    if _ORT_DTYPES.get(tok.type) != "int64":
        raise _bad("inputs", f"{TOKENS_INPUT!r} must be int64, the graph has {tok.type}")
    L = len(m.instruction_tokens)
    if len(tok.shape) != 2 or (isinstance(tok.shape[1], int) and tok.shape[1] != L):
        raise _bad("instruction_tokens", f"holds {L} tokens, but the graph's input {TOKENS_INPUT!r} is {tok.shape}")
    if m.state:
        st = ins[STATE_INPUT]
        if _ORT_DTYPES.get(st.type) != "float32":
            raise _bad("inputs", f"{STATE_INPUT!r} must be float32, the graph has {st.type}")
        if _shape(st.shape) != [1, len(m.state)]:
            raise _bad("state", f"lists {len(m.state)} features {list(m.state)}, but the graph's input {STATE_INPUT!r} is {st.shape}")
    out = outs[CHUNK_OUTPUT]
    if _ORT_DTYPES.get(out.type) != "float32":
        raise _bad("outputs", f"{CHUNK_OUTPUT!r} must be float32, the graph has {out.type}")
    shp = _shape(out.shape)
    if len(shp) != 3:
        raise _bad("outputs", f"{CHUNK_OUTPUT!r} must be (1, K, D), the graph has {out.shape}")
    if shp[2] is not None and shp[2] != m.action_dim:
        raise _bad("action_dim", f"says {m.action_dim}, but the graph's output {CHUNK_OUTPUT!r} is {out.shape}")
    if shp[1] is not None and shp[1] != m.chunk_length:
        raise _bad("chunk_length", f"says {m.chunk_length}, but the graph's output {CHUNK_OUTPUT!r} is {out.shape}")


def check_chunk(chunk: np.ndarray, m: PolicyManifest) -> str | None:
    """None if ``chunk`` (K, D) is finite and within the manifest's bounds, else what is wrong."""
    if chunk.shape != (m.chunk_length, m.action_dim):
        return f"shape {chunk.shape}, expected ({m.chunk_length}, {m.action_dim})"
    if not np.all(np.isfinite(chunk)):
        return "contains NaN or inf"
    lo, hi = np.asarray(m.action_low), np.asarray(m.action_high)
    below, above = chunk < lo - BOUND_TOL, chunk > hi + BOUND_TOL
    if below.any() or above.any():
        dims = sorted(set(np.nonzero(below | above)[1].tolist()))
        return f"outside [action_low, action_high] in dimension(s) {dims} (min {chunk.min():.3g}, max {chunk.max():.3g})"
    return None


def smoke_images(image_size: tuple[int, int], seed: int = 0) -> dict[str, np.ndarray]:
    H, W = image_size
    rng = np.random.default_rng(seed)
    return {"black": np.zeros((H, W, 3), np.uint8), "white": np.full((H, W, 3), 255, np.uint8),
            "grey": np.full((H, W, 3), 128, np.uint8), "noise": rng.integers(0, 256, (H, W, 3), dtype=np.uint8)}


@dataclass
class LoadedPolicy:
    """A validated artifact with its onnxruntime session. ``run(image, state)`` -> (K, D) float32, no checks."""

    folder: Path
    manifest: PolicyManifest
    session: Any
    providers: list[str]
    smoke_ms: float
    tokens: np.ndarray = field(repr=False)  # (1, L) int64

    def run(self, image: np.ndarray, state: np.ndarray | None = None) -> np.ndarray:
        feeds = {IMAGE_INPUT: image[None], TOKENS_INPUT: self.tokens}
        if self.manifest.state:
            feeds[STATE_INPUT] = np.asarray(state, dtype=np.float32).reshape(1, -1)
        return self.session.run([CHUNK_OUTPUT], feeds)[0][0]

    @property
    def version(self) -> str:
        return self.manifest.policy_version


def load_artifact(folder: str | Path, rig: RigSpec, providers: list[str] | None = None, threads: int | None = None) -> LoadedPolicy:
    """Verify and validate an artifact (see the module docstring); raises ArtifactError naming the field."""
    import onnxruntime as ort

    folder = Path(folder)
    rig = rig if isinstance(rig, RigSpec) else RigSpec.from_dict(dict(rig))
    m = read_artifact(folder)
    check_manifest_against_rig(m, rig)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # warnings about unused providers are noise on a CPU-only PC
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    chosen = providers or available_providers()
    try:
        session = ort.InferenceSession(str(folder / MODEL_FILE), sess_options=opts, providers=chosen)
    except Exception as e:  # onnxruntime raises its own exception types for a malformed graph
        raise ArtifactError(f"{folder / MODEL_FILE}: onnxruntime cannot load it ({type(e).__name__}: {e})") from e
    check_graph_against_manifest(session, m)
    lp = LoadedPolicy(folder, m, session, session.get_providers(), 0.0, np.asarray([m.instruction_tokens], dtype=np.int64))
    smoke_state = None
    if m.state:  # the training data's mean state where the manifest records it (a plausible robot), else zeros
        mean = (m.normalization.get("state") or {}).get("mean")
        smoke_state = np.asarray(mean if mean is not None and len(mean) == len(m.state) else np.zeros(len(m.state)), np.float32)
    t0 = time.perf_counter()
    for name, img in smoke_images(tuple(m.image_size)).items():
        try:
            chunk = lp.run(img, smoke_state)
        except Exception as e:
            raise ArtifactError(f"{folder / MODEL_FILE}: smoke inference on a {name} frame failed ({type(e).__name__}: {e})") from e
        problem = check_chunk(np.asarray(chunk), m)
        if problem:
            field_name = "outputs" if "NaN" in problem or "shape" in problem else "action_low"
            raise _bad(field_name, f"smoke inference on a {name} frame: {CHUNK_OUTPUT!r} {problem}")
    lp.smoke_ms = (time.perf_counter() - t0) * 1000 / 4
    return lp


def validate_artifact(folder: str | Path, rig: RigSpec) -> PolicyManifest:
    """The learner link's ``validate`` hook: the manifest of a fully validated artifact, or ArtifactError.
    Use as ``functools.partial(validate_artifact, rig=rig)``."""
    return load_artifact(folder, rig, providers=["CPUExecutionProvider"], threads=1).manifest


class PolicyRuntime:
    """The robot's current policy. Implements ``act(image, state) -> (K, D)`` and ``reset()`` (the episode
    boundary), the `robot.policy_source.ChunkPolicy` the episode runner drives."""

    def __init__(self, rig: RigSpec = RigSpec(), providers: list[str] | None = None, threads: int | None = None,
                 strict: bool = False) -> None:
        self.rig = rig if isinstance(rig, RigSpec) else RigSpec.from_dict(dict(rig))
        self.providers, self.threads, self.strict = providers, threads, strict
        self._lock = threading.Lock()
        self._active: LoadedPolicy | None = None
        self._previous: LoadedPolicy | None = None
        self._pending: LoadedPolicy | None = None
        self.bad_outputs = 0  # chunks that were non-finite or out of bounds (passed on to the safety filter)
        self.latencies_ms: list[float] = []

    # ------------------------------------------------------------------ loading and swapping
    def load(self, folder: str | Path) -> PolicyManifest:
        """Validate; make it current right away if no policy runs yet, else stage it for the next episode."""
        lp = load_artifact(folder, self.rig, self.providers, self.threads)
        with self._lock:
            if self._active is None:
                self._active = lp
                log.info("policy %s loaded from %s (providers %s, smoke %.2f ms)", lp.version, lp.folder, lp.providers, lp.smoke_ms)
            else:
                self._pending = lp
                log.info("policy %s validated; it becomes current at the next episode start", lp.version)
        return lp.manifest

    def stage(self, folder: str | Path) -> PolicyManifest:
        """Validate a new version and hold it until the next `reset()`. A refused artifact raises ArtifactError
        and changes nothing."""
        return self.load(folder)

    def reset(self) -> PolicyManifest:
        """The episode boundary: a staged version (new, or the rollback target) becomes current here."""
        with self._lock:
            if self._pending is not None:
                old = self._active
                self._previous, self._active, self._pending = old, self._pending, None
                log.info("policy swapped: %s -> %s", old.version if old else None, self._active.version)
            if self._active is None:
                raise PolicyRuntimeError("no policy loaded: call load(folder) with a policy artifact first")
            return self._active.manifest

    def rollback(self) -> PolicyManifest:
        """Bring the previous version back at the next episode start; returns its manifest."""
        with self._lock:
            if self._previous is None:
                raise PolicyRuntimeError("rollback: there is no previous policy version to return to")
            self._pending = self._previous
            log.warning("rolling back to policy %s at the next episode start", self._previous.version)
            return self._previous.manifest

    # ------------------------------------------------------------------ running
    def act(self, image: np.ndarray, state: Any = None) -> np.ndarray:
        """(H, W, 3) uint8 RGB [+ the arm's `ArmState`, or an (S,) vector of the manifest's state features]
        -> (K, D) float32 chunk from the current policy."""
        lp = self._active
        if lp is None:
            raise PolicyRuntimeError("act: no policy loaded")
        img = np.asarray(image)
        H, W = lp.manifest.image_size
        if img.dtype != np.uint8 or img.shape != (H, W, 3):
            raise ObservationError(f"image: policy {lp.version} takes ({H}, {W}, 3) uint8 RGB from camera "
                                   f"{lp.manifest.camera!r}, got {img.shape} {img.dtype}")
        vec = self._state_vector(lp, state)
        t0 = time.perf_counter()
        chunk = np.asarray(lp.run(np.ascontiguousarray(img), vec), dtype=np.float32)
        self.latencies_ms.append((time.perf_counter() - t0) * 1000)
        if len(self.latencies_ms) > 10000:
            del self.latencies_ms[:5000]
        problem = check_chunk(chunk, lp.manifest)
        if problem:
            self.bad_outputs += 1
            msg = f"policy {lp.version}: action chunk {problem}"
            if self.strict:
                raise PolicyOutputError(msg)
            log.warning("%s; passing it to the safety filter", msg)
        return chunk

    @staticmethod
    def _state_vector(lp: LoadedPolicy, state: Any) -> np.ndarray | None:
        feats = lp.manifest.state
        if not feats:
            return None
        if state is None:
            raise ObservationError(f"state: policy {lp.version} takes the robot state {list(feats)}; pass the arm's ArmState")
        vec = state_vector(feats, state) if hasattr(state, "ee_pose") else np.asarray(state, dtype=np.float32).reshape(-1)
        if vec.shape != (len(feats),):
            raise ObservationError(f"state: policy {lp.version} takes {len(feats)} features {list(feats)}, got shape {vec.shape}")
        if not np.all(np.isfinite(vec)):
            raise ObservationError(f"state: the arm reported a non-finite state {vec.tolist()} for {list(feats)}")
        return vec

    # ------------------------------------------------------------------ state
    @property
    def manifest(self) -> PolicyManifest | None:
        return self._active.manifest if self._active else None

    @property
    def version(self) -> str | None:
        return self._active.version if self._active else None

    @property
    def pending_version(self) -> str | None:
        return self._pending.version if self._pending else None

    @property
    def previous_version(self) -> str | None:
        return self._previous.version if self._previous else None

    @property
    def active_providers(self) -> list[str]:
        return list(self._active.providers) if self._active else []
