"""The policy artifact: what the learner ships to the robot (DESIGN section 4).

A folder with ``policy.onnx`` and ``manifest.json``. The manifest says what the network expects and promises:

- ``format`` "wvl-policy", ``manifest_version`` (this build reads up to MANIFEST_VERSION),
- ``policy_version``: a human/ordering string set by the learner (e.g. "loop-2"),
- ``sha256``: {file name: hex digest} for every file of the artifact except the manifest itself,
- ``camera``, ``image_size`` [H, W]: the RGB input the policy was trained on (uint8, HWC),
- ``instruction`` and ``instruction_tokens``: the task instruction and its token ids (the robot PC has no
  tokenizer; the ids go into the graph as they are),
- ``action_dim`` (7), ``chunk_length`` K, ``action_low`` / ``action_high``: bounds every output must respect,
- ``control_hz``: the rate the chunk is meant to be played at,
- ``state``: the robot-state features the graph's ``state`` input takes, in order (`robot.state`; empty: the
  policy sees images only, and the graph has no ``state`` input),
- ``inputs`` / ``outputs``: ONNX tensor names -> {shape, dtype} (batch dimension 1 on the robot),
- ``normalization``: statistics baked into or used around the graph (informational on the robot),
- ``created``, ``extra``: free metadata.

Reading an artifact verifies structure and hashes; `robot.policy_runtime` then validates the graph itself
(shapes against the manifest and the rig, a smoke inference, finite in-range outputs).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from robot.files import sha256_file

FORMAT_NAME = "wvl-policy"
# 2: the ``state`` field (robot state as a policy input). Version-1 manifests are still read (no state).
MANIFEST_VERSION = 2
MODEL_FILE = "policy.onnx"
MANIFEST_FILE = "manifest.json"


class ArtifactError(ValueError):
    """A policy artifact is malformed, tampered with or incompatible; the message names the field or file."""


@dataclass(frozen=True)
class PolicyManifest:
    policy_version: str
    camera: str
    image_size: tuple[int, int]
    instruction: str
    instruction_tokens: tuple[int, ...]
    chunk_length: int
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]
    control_hz: float
    inputs: dict[str, dict[str, Any]]
    outputs: dict[str, dict[str, Any]]
    sha256: dict[str, str] = field(default_factory=dict)
    action_dim: int = 7
    normalization: dict[str, Any] = field(default_factory=dict)
    state: tuple[str, ...] = ()
    created: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT_NAME
    manifest_version: int = MANIFEST_VERSION

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ArtifactError:
            return ArtifactError(f"manifest field {name!r}: {why}")

        if self.format != FORMAT_NAME:
            raise bad("format", f"expected {FORMAT_NAME!r}, got {self.format!r}")
        if not isinstance(self.manifest_version, int) or self.manifest_version < 1:
            raise bad("manifest_version", f"must be a positive int, got {self.manifest_version!r}")
        if self.manifest_version > MANIFEST_VERSION:
            raise bad("manifest_version", f"{self.manifest_version} is newer than this robot reads ({MANIFEST_VERSION}); upgrade world-vla-loop on the robot PC")
        if not self.policy_version:
            raise bad("policy_version", "must be a non-empty string")
        if len(self.image_size) != 2 or any(int(s) < 1 for s in self.image_size):
            raise bad("image_size", f"must be [H, W] with positive sizes, got {list(self.image_size)}")
        if self.action_dim < 1:
            raise bad("action_dim", f"must be >= 1, got {self.action_dim}")
        if self.chunk_length < 1:
            raise bad("chunk_length", f"must be >= 1, got {self.chunk_length}")
        for name in ("action_low", "action_high"):
            if len(getattr(self, name)) != self.action_dim:
                raise bad(name, f"has {len(getattr(self, name))} values, action_dim is {self.action_dim}")
        if any(lo > hi for lo, hi in zip(self.action_low, self.action_high)):
            raise bad("action_low", "is above action_high somewhere")
        if self.control_hz <= 0:
            raise bad("control_hz", f"must be positive, got {self.control_hz}")
        from robot.state import STATE_FEATURES

        unknown = [f for f in self.state if f not in STATE_FEATURES]
        if unknown:
            raise bad("state", f"unknown state feature(s) {unknown}; this robot knows {list(STATE_FEATURES)}")
        if len(set(self.state)) != len(self.state):
            raise bad("state", f"repeats a feature: {list(self.state)}")
        if not self.inputs or not self.outputs:
            raise bad("inputs" if not self.inputs else "outputs", "must name at least one tensor")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PolicyManifest":
        if not isinstance(d, dict):
            raise ArtifactError("manifest: not a JSON object")
        names = {f.name for f in fields(cls)}
        version = d.get("manifest_version", MANIFEST_VERSION)
        unknown = set(d) - names
        if unknown and (not isinstance(version, int) or version <= MANIFEST_VERSION):
            raise ArtifactError(f"manifest: unknown fields {sorted(unknown)}")
        required = {"policy_version", "camera", "image_size", "instruction", "instruction_tokens", "chunk_length",
                    "action_low", "action_high", "control_hz", "inputs", "outputs"}
        missing = sorted(required - set(d))
        if missing:
            raise ArtifactError(f"manifest: missing fields {missing}")
        kw = {k: v for k, v in d.items() if k in names}
        try:
            kw["image_size"] = tuple(int(x) for x in kw["image_size"])
            kw["instruction_tokens"] = tuple(int(x) for x in kw["instruction_tokens"])
            kw["action_low"] = tuple(float(x) for x in kw["action_low"])
            kw["action_high"] = tuple(float(x) for x in kw["action_high"])
            kw["state"] = tuple(str(x) for x in kw.get("state") or ())
            kw["chunk_length"] = int(kw["chunk_length"])
            kw["control_hz"] = float(kw["control_hz"])
        except (TypeError, ValueError) as e:
            raise ArtifactError(f"manifest: a numeric field has a non-numeric value ({e})") from e
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("image_size", "instruction_tokens", "action_low", "action_high", "state"):
            d[k] = list(d[k])
        return d


def write_artifact(folder: Path, manifest: PolicyManifest) -> PolicyManifest:
    """Hash every file in ``folder`` (except the manifest), write manifest.json, return the final manifest."""
    folder = Path(folder)
    if not (folder / MODEL_FILE).exists():
        raise ArtifactError(f"{folder / MODEL_FILE} does not exist; export the model first")
    hashes = {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST_FILE and not p.name.startswith(".")}
    final = PolicyManifest.from_dict({**manifest.to_dict(), "sha256": hashes})
    tmp = folder / f".{MANIFEST_FILE}.tmp"
    tmp.write_text(json.dumps(final.to_dict(), indent=2))
    tmp.replace(folder / MANIFEST_FILE)
    return final


def read_artifact(folder: Path) -> PolicyManifest:
    """Load and verify an artifact folder: manifest structure, every listed hash, no unlisted model file."""
    folder = Path(folder)
    mpath = folder / MANIFEST_FILE
    if not mpath.exists():
        raise ArtifactError(f"{mpath} does not exist: not a policy artifact")
    try:
        d = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{mpath}: not valid JSON ({e})") from e
    m = PolicyManifest.from_dict(d)
    if MODEL_FILE not in m.sha256:
        raise ArtifactError(f"manifest field 'sha256': has no entry for {MODEL_FILE}")
    for name, digest in m.sha256.items():
        p = folder / name
        if "/" in name or name.startswith("."):
            raise ArtifactError(f"manifest field 'sha256': file name {name!r} is not a plain file name")
        if not p.exists():
            raise ArtifactError(f"{p} is listed in the manifest but missing")
        got = sha256_file(p)
        if got != digest:
            raise ArtifactError(f"{p}: sha256 {got[:12]}... does not match the manifest's {digest[:12]}... (corrupted or tampered)")
    return m
