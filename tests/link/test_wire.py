"""The wire protocol on its own: framing, strict decoding with error codes, bitmaps, key files."""

from __future__ import annotations

import os
import stat
import uuid

import msgpack
import pytest

from robot import wire

UID = str(uuid.uuid4())
SHA = "ab" * 32


def test_every_message_type_round_trips():
    samples = {
        wire.HELLO: {"robot_id": "robot-1", "schema": wire.schema_hash(), "wall_time": 1.5, "running_policy": None},
        wire.WELCOME: {"wall_time": 2.0},
        wire.BYE: {},
        wire.PING: {"t": 1.0},
        wire.PONG: {"t": 1.0, "wall_time": 3.0},
        wire.EP_BEGIN: {"id": UID, "size": 10_000, "sha256": SHA, "chunk_size": 4096, "n_chunks": 3},
        wire.EP_READY: {"id": UID, "have": wire.pack_bitmap(bytearray([1, 0, 1]))},
        wire.ACK: {"id": UID, "idx": 2},
        wire.EP_END: {"id": UID},
        wire.COMMIT: {"id": UID, "index": 7, "duplicate": False, "ingest_s": 0.5},
        wire.POL_OFFER: {"version": "v1", "sha256": SHA, "size": 5, "chunk_size": 4096, "n_chunks": 1,
                         "files": [["policy.onnx", 3, SHA], ["manifest.json", 2, SHA]]},
        wire.POL_GET: {"version": "v1", "sha256": SHA, "idx": 0},
        wire.POL_STATUS: {"running": "v1", "ready": None, "rejected": None, "reason": ""},
        wire.ERROR: {"code": wire.ERR_CRC, "message": "bad", "ref": "CHUNK", "id": UID, "idx": 3},
    }
    with_payload = {
        wire.CHUNK: {"id": UID, "idx": 0, "crc32": wire.crc32(b"abc")},
        wire.POL_CHUNK: {"version": "v1", "sha256": SHA, "idx": 0, "crc32": 1},
        wire.INFER: {"req": 1, "shape": [2, 2, 3], "dtype": "|u1", "instruction": "pick", "budget_s": 0.1},
        wire.ACTION: {"req": 1, "shape": [4, 7], "dtype": "<f4"},
    }
    assert set(samples) | set(with_payload) == set(wire.TYPES)
    for t, h in samples.items():
        m = wire.decode(wire.encode(t, h))
        assert m.type == t and m.payload is None
        assert m.header == ({**h, "files": [tuple(f) for f in h["files"]]} if t == wire.POL_OFFER else h)
    for t, h in with_payload.items():
        m = wire.decode(wire.encode(t, h, b"abc"))
        assert m.header == ({**h, "shape": tuple(h["shape"])} if "shape" in h else h) and bytes(m.payload) == b"abc"


def _code(frames) -> str:
    with pytest.raises(wire.WireError) as e:
        wire.decode(frames)
    return e.value.code


def test_malformed_messages_raise_with_machine_readable_codes():
    good = wire.encode(wire.EP_END, {"id": UID})
    assert _code([b"CHUNK"]) == wire.ERR_MALFORMED  # too few frames
    assert _code(good + [b"x", b"y"]) == wire.ERR_MALFORMED  # too many
    assert _code([b"NOPE", good[1]]) == wire.ERR_UNKNOWN_TYPE
    assert _code([os.urandom(4000), good[1]]) == wire.ERR_UNKNOWN_TYPE
    assert _code([wire.EP_END, good[1][:-3]]) == wire.ERR_MALFORMED  # truncated msgpack
    assert _code([wire.EP_END, os.urandom(50)]) in (wire.ERR_MALFORMED, wire.ERR_VERSION)
    assert _code([wire.EP_END, msgpack.packb([1, 2, 3])]) == wire.ERR_MALFORMED  # not a map
    assert _code([wire.EP_END, msgpack.packb({1: 2})]) == wire.ERR_MALFORMED  # non-string keys
    assert _code([wire.EP_END, msgpack.packb({"v": 99, "id": UID})]) == wire.ERR_VERSION
    assert _code([wire.EP_END, b"\xc4" + b"\xff" * 8]) == wire.ERR_MALFORMED  # lying bin length
    assert _code([wire.EP_END, msgpack.packb({"v": 1, "id": "x" * 200_000})]) == wire.ERR_TOO_LARGE  # oversized header
    assert _code(wire.encode(wire.EP_END, {})) == wire.ERR_BAD_FIELD  # missing field
    assert _code(wire.encode(wire.EP_END, {"id": "not-a-uuid"})) == wire.ERR_BAD_FIELD
    assert _code(wire.encode(wire.ACK, {"id": UID, "idx": -1})) == wire.ERR_BAD_FIELD
    assert _code(wire.encode(wire.ACK, {"id": UID, "idx": True})) == wire.ERR_BAD_FIELD  # bool is not an int
    assert _code(wire.encode(wire.EP_BEGIN, {"id": UID, "size": 1 << 62, "sha256": SHA, "chunk_size": 4096, "n_chunks": 1})) == wire.ERR_BAD_FIELD
    assert _code(wire.encode(wire.EP_BEGIN, {"id": UID, "size": 10, "sha256": "XYZ", "chunk_size": 4096, "n_chunks": 1})) == wire.ERR_BAD_FIELD
    assert _code(wire.encode(wire.CHUNK, {"id": UID, "idx": 0, "crc32": 1})) == wire.ERR_MALFORMED  # payload missing
    assert _code(wire.encode(wire.EP_END, {"id": UID}, b"unexpected")) == wire.ERR_MALFORMED
    assert _code(wire.encode(wire.PING, {"t": float("nan")})) == wire.ERR_BAD_FIELD
    assert _code(wire.encode(wire.POL_OFFER, {"version": "../../etc", "sha256": SHA, "size": 1, "chunk_size": 4096, "n_chunks": 1,
                                              "files": [["policy.onnx", 1, SHA]]})) == wire.ERR_BAD_FIELD
    assert _code(wire.encode(wire.POL_OFFER, {"version": "v1", "sha256": SHA, "size": 1, "chunk_size": 4096, "n_chunks": 1,
                                              "files": [["../policy.onnx", 1, SHA]]})) == wire.ERR_BAD_FIELD
    with pytest.raises(wire.WireError) as e:
        wire.decode(wire.encode(wire.CHUNK, {"id": UID, "idx": 0, "crc32": 1}, b"x" * 100), max_payload=10)
    assert e.value.code == wire.ERR_TOO_LARGE and e.value.detail == {"id": UID, "idx": 0}


def test_deeply_nested_or_ext_headers_are_refused():
    nested = b"\x91" * 100_000  # 100k nested one-element arrays
    assert _code([wire.EP_END, nested]) in (wire.ERR_MALFORMED, wire.ERR_TOO_LARGE)
    ext = msgpack.packb({"v": 1, "id": msgpack.ExtType(5, b"abc")})
    assert _code([wire.EP_END, ext]) in (wire.ERR_MALFORMED, wire.ERR_BAD_FIELD)


def test_bitmap_round_trip_and_length_check():
    have = bytearray([1, 0, 0, 1, 1, 1, 0, 1, 1])
    assert wire.unpack_bitmap(wire.pack_bitmap(have), len(have)) == have
    with pytest.raises(wire.WireError):
        wire.unpack_bitmap(b"\x00", 9)


def test_crc32_matches_zlib():
    import zlib

    data = os.urandom(100_003)
    assert wire.crc32(data) == zlib.crc32(data)
    assert wire.crc32(memoryview(data)[5:]) == zlib.crc32(data[5:])


def test_key_files(tmp_path):
    pub, sec = wire.generate_keypair(tmp_path, "robot-7")
    assert stat.S_IMODE(sec.stat().st_mode) == 0o600
    public, secret = wire.load_keypair(sec)
    assert wire.load_public(pub) == public and len(secret) == 40
    with pytest.raises(FileExistsError, match="overwrite=true"):
        wire.generate_keypair(tmp_path, "robot-7")
    with pytest.raises(wire.KeyFileError, match="name"):
        wire.generate_keypair(tmp_path, "../evil")
    with pytest.raises(wire.KeyFileError, match="no secret key"):
        wire.load_keypair(pub)
    with pytest.raises(wire.KeyFileError, match="does not exist"):
        wire.load_public(tmp_path / "missing.key")
    (tmp_path / "junk.key").write_text("hello")
    with pytest.raises(wire.KeyFileError, match="not a ZeroMQ certificate"):
        wire.load_public(tmp_path / "junk.key")
    wire.generate_keypair(tmp_path, "learner")
    rk = wire.RobotKeys.load(sec, tmp_path / "learner.key")
    assert rk.name == "robot-7" and rk.secret.decode() not in repr(rk)
    allow = tmp_path / "allow"
    allow.mkdir()
    (allow / "robot-7.key").write_bytes(pub.read_bytes())
    (allow / "junk.key").write_text("hello")  # ignored with a warning
    lk = wire.LearnerKeys.load(tmp_path / "learner.key_secret", allow)
    assert lk.allowed_keys() == {public: "robot-7"}
    with pytest.raises(wire.KeyFileError, match="allow list folder"):
        wire.LearnerKeys.load(tmp_path / "learner.key_secret", tmp_path / "nope")


def test_schema_hash_is_stable():
    assert wire.schema_hash() == wire.schema_hash() and len(wire.schema_hash()) == 16
