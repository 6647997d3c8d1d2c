import numpy as np
import pytest

from robot.episode import Episode, EpisodeFormatError, EpisodeRecorder, EpisodeValidationError
from tests.factories import random_episode


def _fields(ep: Episode) -> dict:
    return dict(task=ep.task, fps=ep.fps, timestamps=ep.timestamps, images=ep.images, joints=ep.joints, ee_pose=ep.ee_pose,
                gripper=ep.gripper, actions=ep.actions, rewards=ep.rewards, interventions=ep.interventions)


@pytest.mark.parametrize(
    "field, bad, message",
    [
        ("task", "", "task"),
        ("fps", 0.0, "fps"),
        ("fps", float("nan"), "fps"),
        ("timestamps", np.array([0.0, 0.1, 0.1, 0.3] + [0.4 + i for i in range(8)]), "timestamps: not strictly increasing at step 2"),
        ("timestamps", np.zeros((12, 2)), "timestamps"),
        ("actions", np.zeros((12, 6), np.float32), "actions: expected shape"),
        ("actions", np.full((12, 7), np.nan, np.float32), "actions: contains NaN"),
        ("ee_pose", np.zeros((12, 6), np.float32), "ee_pose"),
        ("joints", np.zeros((11, 9), np.float32), "joints"),
        ("gripper", np.zeros((12, 2), np.float32), "gripper"),
        ("rewards", np.full(12, 0.5, np.float32), "rewards: must be 0 or 1"),
        ("interventions", np.zeros(11, bool), "interventions"),
        ("images", {"front": np.zeros((12, 8, 8, 3), np.float32)}, "images['front']: expected dtype uint8"),
        ("images", {"front": np.zeros((12, 8, 8), np.uint8)}, "images['front']: expected shape"),
        ("images", {"front": np.zeros((11, 8, 8, 3), np.uint8)}, "images['front']"),
        ("images", {}, "images: at least one camera"),
    ],
)
def test_validation_names_the_bad_field(field, bad, message):
    kwargs = _fields(random_episode())
    kwargs[field] = bad
    with pytest.raises(EpisodeValidationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Episode(**kwargs)


@pytest.mark.parametrize(
    "field, bad, message",
    [("outcome", "win", "outcome"), ("source", "magic", "source"), ("uuid", "not-a-uuid", "uuid"),
     ("loop_iteration", -1, "loop_iteration"), ("depth", {"wrist": np.zeros((12, 32, 32), np.uint16)}, "depth\\['wrist'\\]"),
     ("depth", {"front": np.zeros((12, 32, 32), np.float32)}, "uint16"), ("extras", {"x": np.zeros(3)}, "extras\\['x'\\]")],
)
def test_validation_of_metadata(field, bad, message):
    kwargs = _fields(random_episode())
    kwargs[field] = bad
    with pytest.raises(EpisodeValidationError, match=message):
        Episode(**kwargs)


@pytest.mark.parametrize("codec", ["raw", "zlib"])
def test_bytes_round_trip_is_exact(codec):
    ep = random_episode(depth=True, cams=("front", "wrist"), policy_version="v3", loop_iteration=2, operator_note="ok")
    back = Episode.from_bytes(ep.to_bytes(codec))
    assert back.equals(ep)
    assert back.uuid == ep.uuid and back.info == {"seed": 0}


def test_truncated_and_corrupted_bytes_are_refused_clearly():
    data = random_episode().to_bytes()
    with pytest.raises(EpisodeFormatError, match="truncated or corrupted"):
        Episode.from_bytes(data[: len(data) // 2])
    with pytest.raises(EpisodeFormatError):
        Episode.from_bytes(b"\x00" * 100)
    import msgpack

    doc = msgpack.unpackb(data, raw=False)
    doc["version"] = 99
    with pytest.raises(EpisodeFormatError, match="version"):
        Episode.from_bytes(msgpack.packb(doc, use_bin_type=True))
    doc["version"] = 1
    doc["arrays"]["actions"]["shape"] = [1000, 7]  # lying shape
    with pytest.raises(EpisodeFormatError, match="actions"):
        Episode.from_bytes(msgpack.packb(doc, use_bin_type=True))
    doc["arrays"]["actions"]["dtype"] = "|O"  # object dtype would mean pickle: never
    with pytest.raises(EpisodeFormatError, match="actions"):
        Episode.from_bytes(msgpack.packb(doc, use_bin_type=True))


def test_recorder_builds_a_valid_episode_and_refuses_changing_cameras():
    rec = EpisodeRecorder("task", 10.0, rig="r1", source="teleop")
    for t in range(3):
        rec.add_step(timestamp=t * 0.1, images={"front": np.zeros((4, 4, 3), np.uint8)}, joints=np.zeros(7), ee_pose=np.zeros(7),
                     gripper=1.0, action=np.zeros(7), reward=0.0)
    ep = rec.finish("near_success")
    assert len(ep) == 3 and ep.outcome == "near_success" and ep.rig == "r1"
    with pytest.raises(EpisodeValidationError, match="cameras"):
        rec.add_step(timestamp=1.0, images={"wrist": np.zeros((4, 4, 3), np.uint8)}, joints=np.zeros(7), ee_pose=np.zeros(7),
                     gripper=1.0, action=np.zeros(7))


def _bomb(T: int = 100, H: int = 720, W: int = 1280, level: int = 9) -> bytes:
    """A valid-looking episode whose all-black images are zlib-compressed (~1000x at level 9): ~260 KB on the wire,
    276 MB once inflated (issue 18 #8: a 249,710-byte upload like this took a learner from 98 to 591 MB RSS)."""
    import zlib

    import msgpack

    small = random_episode(T=T, H=1, W=1)
    doc = msgpack.unpackb(small.to_bytes(), raw=False)
    c = zlib.compressobj(level)
    zero = bytes(H * W * 3)
    data = b"".join(c.compress(zero) for _ in range(T)) + c.flush()
    doc["arrays"]["images/front"] = {"dtype": "|u1", "shape": [T, H, W, 3], "codec": "zlib", "data": data}
    return msgpack.packb(doc, use_bin_type=True)


def test_a_decompression_bomb_is_refused_before_inflating():
    import tracemalloc

    bomb = _bomb()
    assert len(bomb) < 300_000
    tracemalloc.start()
    try:
        with pytest.raises(EpisodeFormatError, match=r"images/front.*decompression bomb"):
            Episode.from_bytes(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"refusing the bomb allocated {peak >> 20} MiB"


def test_declared_sizes_are_capped_before_inflating():
    ep = random_episode(T=40, H=64, W=64)
    data = ep.to_bytes("zlib")
    decoded = sum(a.nbytes for a in [*ep.images.values(), ep.timestamps, ep.joints, ep.ee_pose, ep.gripper, ep.actions,
                                       ep.rewards, ep.interventions, *ep.extras.values()])
    assert Episode.from_bytes(data, max_decoded_bytes=decoded).equals(ep)
    with pytest.raises(EpisodeFormatError, match=f"declare {decoded} decoded bytes in all, over the {decoded - 1} byte limit"):
        Episode.from_bytes(data, max_decoded_bytes=decoded - 1)
    # A header that declares more than the stream holds, or less: refused, never over-allocated past the declaration.
    import msgpack

    doc = msgpack.unpackb(data, raw=False)
    doc["arrays"]["images/front"]["shape"] = [40, 64, 32, 3]
    with pytest.raises(EpisodeFormatError, match="inflates past the declared"):
        Episode.from_bytes(msgpack.packb(doc, use_bin_type=True))
    doc["arrays"]["images/front"]["shape"] = [40, 64, 128, 3]
    with pytest.raises(EpisodeFormatError, match="truncated"):
        Episode.from_bytes(msgpack.packb(doc, use_bin_type=True))


def test_our_own_zlib_output_is_never_taken_for_a_bomb():
    # All-black frames are the most compressible thing a robot records: level 1 (what to_bytes uses) stays < 256x.
    ep = random_episode(T=40, H=128, W=128)
    ep.images["front"][:] = 0
    assert Episode.from_bytes(ep.to_bytes("zlib")).equals(ep)
