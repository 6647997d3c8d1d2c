"""The learner link's wire protocol, shared by the robot (`robot/link/`) and the learner (`learning/server/`).

Sockets: the robot's DEALER connects to the learner's ROUTER (one connection carries episodes up and
policies down); remote inference uses a second DEALER/ROUTER pair so that a 1 MiB episode chunk never
queues in front of a 20 ms action request.

Every message is a multipart ZeroMQ message ``[type, header, payload?]``:

- ``type``    ASCII message type, one of ``TYPES`` (b"CHUNK", ...);
- ``header``  a msgpack map (``use_bin_type``) with ``"v": PROTOCOL_VERSION`` and the type's fields;
- ``payload`` raw bytes (episode / policy chunk, image, action chunk), present only for the types that
  carry one. Never pickle: a header is plain maps, strings, numbers and byte strings.

`decode` is the only way in: it bounds every size before parsing, parses msgpack with explicit limits,
and checks every field of the type's schema (type, range, pattern), so that the code above it only ever
sees well-formed values. Anything else raises `WireError` with a machine-readable ``code`` (one of the
``ERR_*`` names, sent back in an ERROR message) and a human message naming the field.

The conversation (R = robot, L = learner):

    R HELLO{robot_id, schema, wall_time, running_policy}  ->  L WELCOME{wall_time} (+ POL_OFFER if any)
    R EP_BEGIN{id, size, sha256, chunk_size, n_chunks}    ->  L EP_READY{id, have} | COMMIT (already stored, same
                                                              sha256) | ERROR{uuid_conflict} (stored, other bytes)
    R CHUNK{id, idx, crc32} + bytes   (window of W)       ->  L ACK{id, idx} | ERROR{crc}
    R EP_END{id}                                          ->  L COMMIT{id, index} after the store's atomic write
    L POL_OFFER{version, sha256, size, files, ...}        ->  R POL_GET{version, sha256, idx} (window)
                                                          <-  L POL_CHUNK{version, idx, crc32} + bytes
    R POL_STATUS{running, ready, rejected, reason}        (after every change; the learner's robot_status())
    R PING{t} -> L PONG{t, wall_time}                     (heartbeat; clock offset estimate)
    either ERROR{code, message, ref, ...}; R BYE on close.
    R INFER{req, shape, dtype, instruction, budget_s} + image  ->  L ACTION{req, shape, dtype} + chunk

Authentication (`RobotKeys` / `LearnerKeys`): ZeroMQ CURVE. The learner holds an allow list of robot public
keys (a folder of ``<robot name>.key`` files written by ``wvl keys``); the key's file name *is* the robot
id, so a robot cannot claim another's id. The robot pins the learner's public key: the CURVE handshake
fails against any other key, so **a policy can only reach a robot from the holder of the pinned learner
secret key** -- that is how "a policy signed by another key is refused": every policy byte arrives inside a
CURVE session authenticated against the pinned key, and the robot accepts POL_OFFER/POL_CHUNK on no other
path. Plain text (`PLAINTEXT`) must be asked for explicitly and logs a warning.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import uuid as uuid_lib
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import msgpack

from robot import episode as episode_mod
from robot import policy_artifact

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1

# Hard limits every decoder enforces before trusting anything (a config may only lower them).
MAX_HEADER_BYTES = 64 << 10      # a header is a few hundred bytes; 64 KiB leaves room for a 512k-chunk bitmap
MAX_PAYLOAD_BYTES = 16 << 20     # one chunk / image / action chunk
MAX_EPISODE_BYTES = episode_mod.MAX_SERIALISED_BYTES
MAX_POLICY_BYTES = 16 << 30
MAX_CHUNKS = 1 << 20
MIN_CHUNK_BYTES = 1 << 10
MAX_POLICY_FILES = 64
MAX_IMAGE_PIXELS = 4096 * 4096

# Message types.
HELLO, WELCOME, BYE, PING, PONG = b"HELLO", b"WELCOME", b"BYE", b"PING", b"PONG"
EP_BEGIN, EP_READY, CHUNK, ACK, EP_END, COMMIT = b"EP_BEGIN", b"EP_READY", b"CHUNK", b"ACK", b"EP_END", b"COMMIT"
POL_OFFER, POL_GET, POL_CHUNK, POL_STATUS = b"POL_OFFER", b"POL_GET", b"POL_CHUNK", b"POL_STATUS"
INFER, ACTION, ERROR = b"INFER", b"ACTION", b"ERROR"

# Machine-readable error codes (ERROR.code).
ERR_MALFORMED = "malformed"            # frames or msgpack unreadable
ERR_UNKNOWN_TYPE = "unknown_type"
ERR_VERSION = "version"                # protocol or schema mismatch
ERR_BAD_FIELD = "bad_field"            # a header field is missing, of the wrong type or out of range
ERR_TOO_LARGE = "too_large"
ERR_NO_SESSION = "no_session"          # say HELLO first (the learner restarted?)
ERR_IDENTITY = "identity"              # robot_id does not match the CURVE key's name
ERR_DUPLICATE_ROBOT = "duplicate_robot"
ERR_UNKNOWN_TRANSFER = "unknown_transfer"
ERR_OUT_OF_RANGE = "out_of_range"      # chunk index / length disagrees with EP_BEGIN
ERR_CRC = "crc"
ERR_SHA256 = "sha256"
ERR_INCOMPLETE = "incomplete"
ERR_BAD_EPISODE = "bad_episode"        # bytes verified but not a valid Episode
ERR_DISK_FULL = "disk_full"
ERR_STORE = "store"
ERR_BUSY = "busy"
ERR_UNKNOWN_POLICY = "unknown_policy"
ERR_LATE = "late"
ERR_POLICY_FAILED = "policy_failed"
ERR_INTERNAL = "internal"              # a bug on the answering side; keep the data and retry
ERR_CONFLICT = "uuid_conflict"         # that episode uuid is stored from other bytes; never delete your copy
ERR_CODES = (ERR_MALFORMED, ERR_UNKNOWN_TYPE, ERR_VERSION, ERR_BAD_FIELD, ERR_TOO_LARGE, ERR_NO_SESSION, ERR_IDENTITY,
             ERR_DUPLICATE_ROBOT, ERR_UNKNOWN_TRANSFER, ERR_OUT_OF_RANGE, ERR_CRC, ERR_SHA256, ERR_INCOMPLETE,
             ERR_BAD_EPISODE, ERR_DISK_FULL, ERR_STORE, ERR_BUSY, ERR_UNKNOWN_POLICY, ERR_LATE, ERR_POLICY_FAILED,
             ERR_INTERNAL, ERR_CONFLICT)

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # robot ids, policy versions, file names
HEX64_RE = re.compile(r"^[0-9a-f]{64}$")


class WireError(ValueError):
    """A message broke the protocol. ``code`` is one of ERR_*; the message names the field."""

    def __init__(self, code: str, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.code = code
        self.detail = detail


def schema_hash() -> str:
    """Hash of everything both ends must agree on (agentlace-style config hash, checked at HELLO)."""
    text = (f"wire={PROTOCOL_VERSION};episode={episode_mod.FORMAT_NAME}/{episode_mod.FORMAT_VERSION};"
            f"policy={policy_artifact.FORMAT_NAME}/{policy_artifact.MANIFEST_VERSION};action_dim={episode_mod.ACTION_DIM}")
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def crc32(data: bytes | memoryview) -> int:
    """CRC-32 (the zlib / IEEE polynomial) of a chunk."""
    return _crc32(data) & 0xFFFFFFFF


try:  # ISA-L computes the same CRC-32 ~10x faster; optional (pip install isal), same numbers either way
    from isal.isal_zlib import crc32 as _crc32  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the install
    _crc32 = zlib.crc32


# ---------------------------------------------------------------------------------------------------- fields
# A field spec is a function value -> value that raises _Bad(why); schemas map field name -> (spec, required).
class _Bad(Exception):
    pass


def _int(lo: int, hi: int) -> Callable[[Any], int]:
    def check(v: Any) -> int:
        if type(v) is not int or not lo <= v <= hi:  # bool is not an int here
            raise _Bad(f"must be an int in [{lo}, {hi}], got {_show(v)}")
        return v
    return check


def _float(v: Any) -> float:
    if type(v) not in (int, float) or not math.isfinite(v):
        raise _Bad(f"must be a finite number, got {_show(v)}")
    return float(v)


def _bool(v: Any) -> bool:
    if type(v) is not bool:
        raise _Bad(f"must be true/false, got {_show(v)}")
    return v


def _str(maxlen: int, pattern: re.Pattern | None = None) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        if not isinstance(v, str) or len(v) > maxlen:
            raise _Bad(f"must be a string of at most {maxlen} characters, got {_show(v)}")
        if pattern is not None and not pattern.match(v):
            raise _Bad(f"{v[:80]!r} does not match {pattern.pattern}")
        return v
    return check


def _opt(spec: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def check(v: Any) -> Any:
        return None if v is None else spec(v)
    return check


def _uuid(v: Any) -> str:
    if not isinstance(v, str) or len(v) != 36:
        raise _Bad(f"must be a UUID string, got {_show(v)}")
    try:
        return str(uuid_lib.UUID(v))
    except ValueError as e:
        raise _Bad(f"{v!r} is not a UUID") from e


def _bin(maxlen: int) -> Callable[[Any], bytes]:
    def check(v: Any) -> bytes:
        if not isinstance(v, bytes) or len(v) > maxlen:
            raise _Bad(f"must be at most {maxlen} bytes, got {_show(v)}")
        return v
    return check


def _shape(v: Any) -> tuple[int, ...]:
    if not isinstance(v, list) or not 1 <= len(v) <= 4 or any(type(s) is not int or not 0 < s <= 1 << 16 for s in v):
        raise _Bad(f"must be a list of 1-4 positive ints, got {_show(v)}")
    return tuple(v)


def _files(v: Any) -> list[tuple[str, int, str]]:
    if not isinstance(v, list) or not 1 <= len(v) <= MAX_POLICY_FILES:
        raise _Bad(f"must be a list of 1-{MAX_POLICY_FILES} [name, size, sha256] entries")
    out = []
    for item in v:
        if not isinstance(item, list) or len(item) != 3:
            raise _Bad("each entry must be [name, size, sha256]")
        name = _str(64, NAME_RE)(item[0])
        size = _int(0, MAX_POLICY_BYTES)(item[1])
        digest = _str(64, HEX64_RE)(item[2])
        out.append((name, size, digest))
    if len({n for n, _, _ in out}) != len(out):
        raise _Bad("file names repeat")
    return out


def _show(v: Any) -> str:
    r = repr(v)
    return f"{type(v).__name__} {r[:60]}{'...' if len(r) > 60 else ''}"


_name = _str(64, NAME_RE)
_hex64 = _str(64, HEX64_RE)
_u32 = _int(0, 0xFFFFFFFF)
_req = _int(0, (1 << 63) - 1)

# type -> (fields: name -> (spec, required), payload: "none" | "required")
SCHEMAS: dict[bytes, tuple[dict[str, tuple[Callable[[Any], Any], bool]], str]] = {
    HELLO: ({"robot_id": (_name, True), "schema": (_str(64), True), "wall_time": (_float, True),
             "running_policy": (_opt(_name), False), "software": (_str(64), False)}, "none"),
    WELCOME: ({"wall_time": (_float, True), "server": (_str(64), False)}, "none"),
    BYE: ({}, "none"),
    PING: ({"t": (_float, True)}, "none"),
    PONG: ({"t": (_float, True), "wall_time": (_float, True)}, "none"),
    EP_BEGIN: ({"id": (_uuid, True), "size": (_int(1, MAX_EPISODE_BYTES), True), "sha256": (_hex64, True),
                "chunk_size": (_int(MIN_CHUNK_BYTES, MAX_PAYLOAD_BYTES), True), "n_chunks": (_int(1, MAX_CHUNKS), True)}, "none"),
    EP_READY: ({"id": (_uuid, True), "have": (_bin(MAX_CHUNKS // 8), True)}, "none"),
    CHUNK: ({"id": (_uuid, True), "idx": (_int(0, MAX_CHUNKS - 1), True), "crc32": (_u32, True)}, "required"),
    ACK: ({"id": (_uuid, True), "idx": (_int(0, MAX_CHUNKS - 1), True)}, "none"),
    EP_END: ({"id": (_uuid, True)}, "none"),
    COMMIT: ({"id": (_uuid, True), "index": (_int(0, 1 << 40), True), "duplicate": (_bool, False),
              "ingest_s": (_float, False)}, "none"),
    POL_OFFER: ({"version": (_name, True), "sha256": (_hex64, True), "size": (_int(1, MAX_POLICY_BYTES), True),
                 "chunk_size": (_int(MIN_CHUNK_BYTES, MAX_PAYLOAD_BYTES), True), "n_chunks": (_int(1, MAX_CHUNKS), True),
                 "files": (_files, True)}, "none"),
    POL_GET: ({"version": (_name, True), "sha256": (_hex64, True), "idx": (_int(0, MAX_CHUNKS - 1), True)}, "none"),
    POL_CHUNK: ({"version": (_name, True), "sha256": (_hex64, True), "idx": (_int(0, MAX_CHUNKS - 1), True),
                 "crc32": (_u32, True)}, "required"),
    POL_STATUS: ({"running": (_opt(_name), True), "ready": (_opt(_name), False), "rejected": (_opt(_name), False),
                  "reason": (_str(512), False)}, "none"),
    INFER: ({"req": (_req, True), "shape": (_shape, True), "dtype": (_str(8), True), "instruction": (_str(1024), True),
             "budget_s": (_float, True)}, "required"),
    ACTION: ({"req": (_req, True), "shape": (_shape, True), "dtype": (_str(8), True)}, "required"),
    ERROR: ({"code": (_str(32), True), "message": (_str(1024), True), "ref": (_str(16), False), "id": (_opt(_str(64)), False),
             "idx": (_opt(_int(0, MAX_CHUNKS - 1)), False), "req": (_opt(_req), False)}, "none"),
}
TYPES = tuple(SCHEMAS)


@dataclass(frozen=True)
class Message:
    type: bytes
    header: dict[str, Any]
    payload: memoryview | None = None

    @property
    def name(self) -> str:
        return self.type.decode()


def encode(mtype: bytes, header: dict[str, Any] | None = None, payload: bytes | memoryview | None = None) -> list:
    """Frames for ``send_multipart``. The payload is passed through untouched (zero-copy with copy=False)."""
    frames: list = [mtype, msgpack.packb({"v": PROTOCOL_VERSION, **(header or {})}, use_bin_type=True)]
    if payload is not None:
        frames.append(payload)
    return frames


def error(code: str, message: str, ref: bytes | None = None, **detail: Any) -> list:
    """Frames of an ERROR reply."""
    header: dict[str, Any] = {"code": code, "message": message[:1024]}
    if ref is not None:
        header["ref"] = ref.decode("ascii", "replace")[:16]
    header.update({k: v for k, v in detail.items() if k in ("id", "idx", "req")})
    return encode(ERROR, header)


def _buf(frame: Any) -> memoryview:
    return frame.buffer if hasattr(frame, "buffer") else memoryview(frame)


def decode(frames: Sequence[Any], max_payload: int = MAX_PAYLOAD_BYTES) -> Message:
    """Parse and validate one message (frames as bytes or zmq.Frame). Raises WireError naming the problem."""
    if not 2 <= len(frames) <= 3:
        raise WireError(ERR_MALFORMED, f"expected 2 or 3 frames [type, header, payload?], got {len(frames)}")
    tbuf, hbuf = _buf(frames[0]), _buf(frames[1])
    if len(tbuf) > 16:
        raise WireError(ERR_UNKNOWN_TYPE, f"type frame is {len(tbuf)} bytes (at most 16)")
    mtype = bytes(tbuf)
    if mtype not in SCHEMAS:
        raise WireError(ERR_UNKNOWN_TYPE, f"unknown message type {mtype[:16]!r}; known: {b', '.join(TYPES).decode()}")
    if len(hbuf) > MAX_HEADER_BYTES:
        raise WireError(ERR_TOO_LARGE, f"{mtype.decode()} header is {len(hbuf)} bytes (at most {MAX_HEADER_BYTES})")
    try:
        header = msgpack.unpackb(hbuf, raw=False, strict_map_key=True, use_list=True, max_str_len=MAX_HEADER_BYTES,
                                 max_bin_len=MAX_HEADER_BYTES, max_array_len=MAX_POLICY_FILES * 4, max_map_len=32,
                                 max_ext_len=0)
    except Exception as e:  # msgpack raises several types (ExtraData, FormatError, ValueError, ...)
        raise WireError(ERR_MALFORMED, f"{mtype.decode()} header is not valid msgpack ({type(e).__name__}: {str(e)[:120]})") from None
    if not isinstance(header, dict):
        raise WireError(ERR_MALFORMED, f"{mtype.decode()} header must be a map, got {type(header).__name__}")
    if header.get("v") != PROTOCOL_VERSION:
        raise WireError(ERR_VERSION, f"{mtype.decode()} header field 'v': protocol {_show(header.get('v'))}, this side speaks "
                                     f"{PROTOCOL_VERSION}; install the same world-vla-loop version on robot and learner")
    fields_spec, payload_rule = SCHEMAS[mtype]
    out: dict[str, Any] = {}
    for name, (spec, required) in fields_spec.items():
        if name not in header:
            if required:
                raise WireError(ERR_BAD_FIELD, f"{mtype.decode()} header field {name!r} is missing")
            continue
        try:
            out[name] = spec(header[name])
        except _Bad as e:
            raise WireError(ERR_BAD_FIELD, f"{mtype.decode()} header field {name!r}: {e}", **_ids(header)) from None
    payload = _buf(frames[2]) if len(frames) == 3 else None
    if payload_rule == "required" and payload is None:
        raise WireError(ERR_MALFORMED, f"{mtype.decode()} needs a payload frame", **_ids(out))
    if payload_rule == "none" and payload is not None:
        raise WireError(ERR_MALFORMED, f"{mtype.decode()} carries no payload, got a third frame of {len(payload)} bytes", **_ids(out))
    if payload is not None and len(payload) > max_payload:
        raise WireError(ERR_TOO_LARGE, f"{mtype.decode()} payload is {len(payload)} bytes (at most {max_payload})", **_ids(out))
    return Message(mtype, out, payload)


def _ids(header: dict[str, Any]) -> dict[str, Any]:
    """The id/idx/req of a (possibly half-valid) header, so an ERROR reply can say which transfer it is about."""
    out = {}
    if isinstance(header.get("id"), str) and len(header["id"]) <= 64:
        out["id"] = header["id"]
    if type(header.get("idx")) is int and 0 <= header["idx"] < MAX_CHUNKS:
        out["idx"] = header["idx"]
    if type(header.get("req")) is int and 0 <= header["req"] < 1 << 63:
        out["req"] = header["req"]
    return out


def n_chunks(size: int, chunk_size: int) -> int:
    return max(1, -(-size // chunk_size))


def pack_bitmap(have: bytearray | bytes) -> bytes:
    """One bit per chunk (LSB first) from a bytearray of 0/1 flags."""
    out = bytearray((len(have) + 7) // 8)
    for i, h in enumerate(have):
        if h:
            out[i >> 3] |= 1 << (i & 7)
    return bytes(out)


def unpack_bitmap(bits: bytes, n: int) -> bytearray:
    if len(bits) != (n + 7) // 8:
        raise WireError(ERR_BAD_FIELD, f"bitmap has {len(bits)} bytes for {n} chunks (expected {(n + 7) // 8})")
    return bytearray((bits[i >> 3] >> (i & 7)) & 1 for i in range(n))


# ---------------------------------------------------------------------------------------------------- keys
class KeyFileError(ValueError):
    """A key file is missing or malformed; the message names the file and the fix."""


@dataclass(frozen=True)
class Plaintext:
    """Explicit opt-out of CURVE (no authentication, no encryption). For loopback experiments only."""

    def __repr__(self) -> str:
        return "PLAINTEXT"


PLAINTEXT = Plaintext()


@dataclass(frozen=True, repr=False)
class RobotKeys:
    """The robot's CURVE key pair and the learner public key it pins (z85, 40 bytes each)."""

    public: bytes
    secret: bytes
    learner_public: bytes
    name: str | None = None  # the robot id the key was made for (its file name), when loaded from a file

    def __post_init__(self) -> None:
        for name in ("public", "secret", "learner_public"):
            _check_z85(name, getattr(self, name))

    @classmethod
    def load(cls, secret_file: str | Path, learner_public_file: str | Path) -> "RobotKeys":
        """From ``<robot>.key_secret`` (the robot id is the file name) and the learner's ``<learner>.key``."""
        public, secret = load_keypair(secret_file)
        return cls(public, secret, load_public(learner_public_file), Path(secret_file).name.removesuffix(".key_secret"))

    def __repr__(self) -> str:  # never print a secret key
        return f"RobotKeys(name={self.name!r}, public={self.public.decode()}, learner_public={self.learner_public.decode()})"


@dataclass(frozen=True, repr=False)
class LearnerKeys:
    """The learner's CURVE key pair and its allow list: robot name -> public key, or a folder of
    ``<robot name>.key`` files (re-read whenever the folder changes, so adding a robot needs no restart)."""

    public: bytes
    secret: bytes
    allowed: dict[str, bytes] | Path = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_z85("public", self.public)
        _check_z85("secret", self.secret)
        if isinstance(self.allowed, dict):
            for name, key in self.allowed.items():
                if not NAME_RE.match(name):
                    raise KeyFileError(f"allow list: robot name {name!r} must match {NAME_RE.pattern}")
                _check_z85(f"allowed[{name!r}]", key)
        elif not Path(self.allowed).is_dir():
            raise KeyFileError(f"allow list folder {self.allowed} does not exist; create it and copy robot public keys "
                            "(<name>.key from `wvl keys name=<robot>`) into it")

    @classmethod
    def load(cls, secret_file: str | Path, allow: str | Path | dict[str, bytes]) -> "LearnerKeys":
        public, secret = load_keypair(secret_file)
        return cls(public, secret, allow if isinstance(allow, dict) else Path(allow))

    def allowed_keys(self) -> dict[bytes, str]:
        """public key (z85) -> robot name."""
        if isinstance(self.allowed, dict):
            return {k: n for n, k in self.allowed.items()}
        out: dict[bytes, str] = {}
        for p in sorted(Path(self.allowed).glob("*.key")):
            name = p.stem
            if not NAME_RE.match(name):
                log.warning("allow list: ignoring %s (robot name must match %s)", p, NAME_RE.pattern)
                continue
            try:
                out[load_public(p)] = name
            except KeyFileError as e:
                log.warning("allow list: ignoring %s (%s)", p, e)
        return out

    def __repr__(self) -> str:
        allowed = sorted(self.allowed) if isinstance(self.allowed, dict) else str(self.allowed)
        return f"LearnerKeys(public={self.public.decode()}, allowed={allowed})"


def _check_z85(name: str, key: Any) -> None:
    if not isinstance(key, bytes) or len(key) != 40:
        raise KeyFileError(f"{name}: a CURVE key is 40 z85 characters, got {type(key).__name__} of length "
                        f"{len(key) if hasattr(key, '__len__') else '?'}")


def load_keypair(secret_file: str | Path) -> tuple[bytes, bytes]:
    """(public, secret) from a ``*.key_secret`` file written by ``wvl keys``."""
    import zmq.auth

    p = Path(secret_file)
    if not p.is_file():
        raise KeyFileError(f"secret key file {p} does not exist; create it with `wvl keys name=<name> out={p.parent}`")
    try:
        public, secret = zmq.auth.load_certificate(p)
    except Exception as e:
        raise KeyFileError(f"secret key file {p} is not a ZeroMQ certificate ({e})") from e
    if secret is None:
        raise KeyFileError(f"{p} holds no secret key (is it the public .key file? use the .key_secret one)")
    return public, secret


def load_public(public_file: str | Path) -> bytes:
    import zmq.auth

    p = Path(public_file)
    if not p.is_file():
        raise KeyFileError(f"public key file {p} does not exist; copy it from the machine that ran `wvl keys`")
    try:
        public, _ = zmq.auth.load_certificate(p)
    except Exception as e:
        raise KeyFileError(f"public key file {p} is not a ZeroMQ certificate ({e})") from e
    _check_z85(str(p), public)
    return public


def generate_keypair(folder: str | Path, name: str, overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``<name>.key`` (public, share it) and ``<name>.key_secret`` (mode 0600, keep it) into folder."""
    import os

    import zmq

    if not NAME_RE.match(name):
        raise KeyFileError(f"name: {name!r} must match {NAME_RE.pattern} (it becomes the robot id)")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pub, sec = folder / f"{name}.key", folder / f"{name}.key_secret"
    if not overwrite and (pub.exists() or sec.exists()):
        raise FileExistsError(f"{pub} or {sec} already exists; pass overwrite=true to replace it (robots holding the old "
                              "key will then be refused)")
    public, secret = zmq.curve_keypair()
    banner = "#   ****  Generated by world-vla-loop `wvl keys`  ****\n#   ZeroMQ CURVE {kind} certificate\n"
    pub.write_text(banner.format(kind="public") + f"metadata\n    name = \"{name}\"\ncurve\n    public-key = \"{public.decode()}\"\n")
    fd = os.open(sec, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(banner.format(kind="secret") + f"metadata\n    name = \"{name}\"\ncurve\n    public-key = \"{public.decode()}\"\n"
                f"    secret-key = \"{secret.decode()}\"\n")
    os.chmod(sec, 0o600)
    return pub, sec


# ---------------------------------------------------------------------------------------------------- sockets
def configure_client(sock: Any, keys: RobotKeys | Plaintext, what: str = "learner link", warn: bool = True) -> None:
    """Set CURVE client options (pinning the learner's key) on a DEALER before connect()."""
    if isinstance(keys, Plaintext):
        if warn:
            log.warning("%s: PLAINTEXT mode -- no authentication, no encryption; anyone on the network can read the traffic "
                        "and impersonate the learner. Use CURVE keys (`wvl keys`) outside loopback experiments.", what)
        return
    if not isinstance(keys, RobotKeys):
        raise TypeError(f"keys: expected RobotKeys or PLAINTEXT, got {type(keys).__name__}")
    sock.curve_publickey = keys.public
    sock.curve_secretkey = keys.secret
    sock.curve_serverkey = keys.learner_public


def configure_server(ctx: Any, sock: Any, keys: LearnerKeys | Plaintext, what: str = "learner") -> Any:
    """Set CURVE server options on a ROUTER before bind() and start a ZAP authenticator in ``ctx`` that admits only
    allow-listed robot keys and tags each message with the robot's name (``frame.get("User-Id")``).
    Returns the authenticator (stop it on close) or None in plaintext mode. Use one zmq.Context per server."""
    if isinstance(keys, Plaintext):
        log.warning("%s: PLAINTEXT mode -- any client that reaches this address can upload episodes and read policies; "
                    "use CURVE keys (`wvl keys`) outside loopback experiments.", what)
        return None
    if not isinstance(keys, LearnerKeys):
        raise TypeError(f"keys: expected LearnerKeys or PLAINTEXT, got {type(keys).__name__}")
    auth = _AllowListAuthenticator(ctx, keys)
    auth.start()
    sock.curve_server = True
    sock.curve_publickey = keys.public
    sock.curve_secretkey = keys.secret
    return auth


def _make_authenticator_class():
    from zmq.auth.thread import ThreadAuthenticator

    class AllowListAuthenticator(ThreadAuthenticator):
        """Admits robots whose public key is in the allow list; the User-Id of their messages is the robot name.
        The allow-list folder is re-read when its modification time changes (add a robot without a restart)."""

        def __init__(self, ctx: Any, keys: LearnerKeys) -> None:
            super().__init__(ctx, log=logging.getLogger(__name__ + ".auth"))
            self._keys = keys
            self._mtime: float | None = None
            self._names: dict[bytes, str] = {}
            self.denied = 0
            self.configure_curve_callback(domain="*", credentials_provider=self)

        def _refresh(self) -> None:
            allowed = self._keys.allowed
            mtime = Path(allowed).stat().st_mtime if isinstance(allowed, Path) else 0.0
            if mtime != self._mtime:
                self._names = self._keys.allowed_keys()
                self._mtime = mtime

        def callback(self, domain: str, key: bytes) -> bool:
            try:
                self._refresh()
            except OSError as e:
                log.error("allow list unreadable (%s); refusing %s", e, key.decode())
                return False
            ok = key in self._names
            if not ok:
                self.denied += 1
                log.warning("refused a CURVE client whose public key %s is not in the allow list", key.decode())
            return ok

        def curve_user_id(self, client_public_key: bytes) -> str:
            from zmq.utils import z85

            return self._names.get(z85.encode(client_public_key), "?")

    return AllowListAuthenticator


def _AllowListAuthenticator(ctx: Any, keys: LearnerKeys) -> Any:
    global _AUTH_CLASS
    if _AUTH_CLASS is None:
        _AUTH_CLASS = _make_authenticator_class()
    return _AUTH_CLASS(ctx, keys)


_AUTH_CLASS = None


def peer_name(frame: Any) -> str | None:
    """The authenticated robot name of a received message (CURVE), None in plaintext mode."""
    try:
        uid = frame.get("User-Id")
    except Exception:  # no ZAP metadata (plaintext)
        return None
    return uid if uid and uid != "?" else None
