"""Export episodes to MCAP with ROS 2 messages (Foxglove, ``ros2 bag play``, rosbags, mcap-ros2-support).

One ``.mcap`` per episode (or one for a whole session), profile ``ros2``, ``ros2msg`` schemas generated from
rosbags' real ROS 2 (Humble) definitions, CDR-encoded messages:

=====================================  ==============================  ==================================
topic                                  type                            what
=====================================  ==============================  ==================================
``/episode``                           std_msgs/String                 episode metadata as JSON (once)
``/<camera>/image_raw``                sensor_msgs/Image (rgb8)        per step
``/<camera>/depth/image_raw``          sensor_msgs/Image (16UC1, mm)   per step, when recorded
``/joint_states``                      sensor_msgs/JointState          per step
``/ee_pose``                           geometry_msgs/PoseStamped       per step, frame ``base_link`` (``world``
                                                                       for ManiSkill episodes)
``/action``                            std_msgs/Float64MultiArray      the 7-d action sent at the step
``/reward``                            std_msgs/Float32                per-step success label
``/intervention``                      std_msgs/Bool                   the safety filter / a person intervened
=====================================  ==============================  ==================================

Log times are wall-clock (Unix ns), so Foxglove shows when an episode was recorded: the episode's timestamps
when they are wall-clock already, else its timestamps shifted to start at ``info["start_unix_s"]`` (the
wall-clock time `robot.episode.EpisodeRecorder` stores for the first step; the recorded timestamps are a
monotonic or simulated clock). An episode recorded before that key existed keeps its own clock (starting near
1970) with a warning. In a session file an episode that would overlap the previous one starts one second after
it ended. Every channel carries rosbag2's ``offered_qos_profiles`` (reliable, volatile, keep-last 10, as rosbag2
writes it), so ``ros2 bag play`` republishes with that QoS. Joint names: ``info["joint_names"]``, else the
rig's (the simulated Panda: ``panda_joint1..7``, ``panda_finger_joint1..2``), else ``joint_<i>``. Files are
written to a temporary name and renamed when complete.

``wvl export-mcap store=<store> episodes=[0,3] out=<folder>`` (``episodes: null`` = every episode; the same key as `wvl view`).
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from omegaconf import DictConfig, OmegaConf

from robot import rosmsg
from robot.episode import START_UNIX_KEY, Episode

log = logging.getLogger(__name__)

# rosbag2's offered_qos_profiles (metadata v4-8, Humble: enums as ints, yaml-cpp's layout): RELIABLE (1),
# VOLATILE (2), KEEP_LAST (1) depth 10 - what our nodes publish with - and the infinite durations and AUTOMATIC
# liveliness a DDS publisher with default QoS offers.
_INFINITE = "    sec: 9223372036\n    nsec: 854775807"
OFFERED_QOS_PROFILES = (
    "- history: 1\n  depth: 10\n  reliability: 1\n  durability: 2\n"
    f"  deadline:\n{_INFINITE}\n  lifespan:\n{_INFINITE}\n  liveliness: 1\n"
    f"  liveliness_lease_duration:\n{_INFINITE}\n  avoid_ros_namespace_conventions: false"
)
PANDA_JOINTS = tuple(f"panda_joint{i}" for i in range(1, 8)) + ("panda_finger_joint1", "panda_finger_joint2")
RIG_JOINT_NAMES: dict[str, tuple[str, ...]] = {"sim-maniskill": PANDA_JOINTS, "sim-libero": PANDA_JOINTS}
RIG_POSE_FRAMES: dict[str, str] = {"sim-maniskill": "world"}  # robot.sim.maniskill: the TCP pose is in the world frame
WALL_CLOCK_AFTER_S = 1e9  # timestamps beyond this (2001-09-09) are Unix seconds, not a loop clock started at 0


@dataclass
class ExportSummary:
    path: Path
    episodes: int
    messages: int
    bytes: int


class _McapRos2Writer:
    """A thin ROS 2 profile on mcap's writer: schemas from rosbags' typestore, CDR from rosbags."""

    def __init__(self, f, types: rosmsg.MsgTypes) -> None:
        from mcap.writer import CompressionType, Writer

        self.types, self.ts = types, types.typestore
        self.w = Writer(f, compression=CompressionType.ZSTD)
        self.w.start(profile="ros2", library="world-vla-loop")
        self.schemas: dict[str, int] = {}
        self.channels: dict[str, int] = {}
        self.messages = 0

    def write(self, topic: str, msg: Any, t_ns: int) -> None:
        msgtype = msg.__msgtype__
        if topic not in self.channels:
            if msgtype not in self.schemas:
                text, _ = self.ts.generate_msgdef(msgtype, ros_version=2)
                self.schemas[msgtype] = self.w.register_schema(name=msgtype, encoding="ros2msg", data=text.encode())
            self.channels[topic] = self.w.register_channel(topic=topic, message_encoding="cdr", schema_id=self.schemas[msgtype],
                                                           metadata={"offered_qos_profiles": OFFERED_QOS_PROFILES})
        data = bytes(self.ts.serialize_cdr(msg, msgtype))
        self.w.add_message(self.channels[topic], log_time=t_ns, data=data, publish_time=t_ns, sequence=self.messages)
        self.messages += 1

    def finish(self) -> None:
        self.w.finish()


def joint_names(ep: Episode) -> list[str]:
    """The episode's joint names: ``info["joint_names"]``, else its rig's, else ``joint_<i>``."""
    J = ep.joints.shape[1]
    names = ep.info.get("joint_names")
    if names:
        if len(names) != J:
            raise ValueError(f"info.joint_names: {len(names)} names for {J} joints")
        return [str(n) for n in names]
    rig = RIG_JOINT_NAMES.get(ep.rig)
    return list(rig) if rig is not None and len(rig) == J else [f"joint_{i}" for i in range(J)]


def wall_clock_offset_s(ep: Episode) -> float:
    """Seconds to add to the episode's timestamps to make them wall-clock (Unix) time: 0 when they already are,
    else ``info["start_unix_s"] - timestamps[0]``; 0 (with a warning) when the episode has no wall-clock start."""
    t0 = float(ep.timestamps[0])
    if t0 >= WALL_CLOCK_AFTER_S:
        return 0.0
    start = ep.info.get(START_UNIX_KEY)
    if isinstance(start, (int, float)) and not isinstance(start, bool) and math.isfinite(start) and start >= WALL_CLOCK_AFTER_S:
        return float(start) - t0
    log.warning("episode %s: no wall-clock start (info.%s); its log times keep the recording clock (from %.3f s, i.e. 1970)",
                ep.uuid, START_UNIX_KEY, t0)
    return 0.0


def _write_episode(w: _McapRos2Writer, ep: Episode, offset_s: float) -> None:
    T = w.types
    names = joint_names(ep)
    frame = RIG_POSE_FRAMES.get(ep.rig, "base_link")
    t0 = float(ep.timestamps[0]) + offset_s
    w.write("/episode", rosmsg.string_msg(json.dumps(ep.meta(), default=str), types=T), int(round(t0 * 1e9)))
    for i in range(len(ep)):
        t = float(ep.timestamps[i]) + offset_s
        ns = int(round(t * 1e9))
        for cam, frames in ep.images.items():
            w.write(f"/{cam}/image_raw", rosmsg.image_msg(frames[i], t, f"{cam}_color_optical_frame", types=T), ns)
        for cam, frames in ep.depth.items():
            w.write(f"/{cam}/depth/image_raw", rosmsg.image_msg(frames[i], t, f"{cam}_color_optical_frame", types=T), ns)
        w.write("/joint_states", rosmsg.joint_state_msg(names, ep.joints[i], t, types=T), ns)
        w.write("/ee_pose", rosmsg.pose_stamped_msg(ep.ee_pose[i], t, frame, types=T), ns)
        w.write("/action", rosmsg.float64_array_msg(ep.actions[i], label="action", types=T), ns)
        w.write("/reward", T.new("std_msgs/msg/Float32", data=float(ep.rewards[i])), ns)
        w.write("/intervention", T.new("std_msgs/msg/Bool", data=bool(ep.interventions[i])), ns)


def export_episodes_mcap(episodes: Iterable[Episode], path: str | os.PathLike, types: rosmsg.MsgTypes | None = None) -> ExportSummary:
    """Write ``episodes`` back to back into one MCAP file at ``path`` (atomic)."""
    types = types or rosmsg.default_types()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    n = 0
    try:
        with open(tmp, "wb") as f:
            w = _McapRos2Writer(f, types)
            last_end = None
            for ep in episodes:
                offset = wall_clock_offset_s(ep)
                if last_end is not None and ep.timestamps[0] + offset <= last_end:
                    offset = last_end + 1.0 - float(ep.timestamps[0])
                _write_episode(w, ep, offset)
                last_end = float(ep.timestamps[-1]) + offset
                n += 1
            w.finish()
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return ExportSummary(path, n, w.messages, path.stat().st_size)


def export_episode_mcap(episode: Episode, path: str | os.PathLike, types: rosmsg.MsgTypes | None = None) -> ExportSummary:
    """One episode -> one MCAP file."""
    return export_episodes_mcap([episode], path, types)


def main(cfg: DictConfig, mode: str | None = None) -> int:
    from learning.data.store import EpisodeStore
    from robot.console import print_table, progress

    c: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    if not c["store"]:
        raise ValueError("store: the episode store folder to export from is required (store=<folder>)")
    store = EpisodeStore(c["store"], create=False)
    sel = c["episodes"]
    if sel is not None and not (isinstance(sel, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in sel)):
        raise ValueError(f"episodes: a list of episode indices (e.g. episodes=[0,1]) or null for all, got {sel!r}")
    indices = list(range(len(store))) if sel is None else sel
    bad = [i for i in indices if not 0 <= i < len(store)]
    if bad:
        raise ValueError(f"episodes: {bad} not in the store ({len(store)} episodes in {c['store']})")
    if not indices:
        raise ValueError(f"episodes: nothing to export ({c['store']} has {len(store)} episodes)")
    out = Path(c["out"])
    rows = []
    with progress() as bar:
        task = bar.add_task("export mcap", total=len(indices), status="")
        if c["session"]:
            s = export_episodes_mcap((store.read(i) for i in indices), out / "session.mcap")
            rows.append(("all", s.path, s.messages, f"{s.bytes / 1e6:.2f}"))
            bar.update(task, completed=len(indices))
        else:
            for i in indices:
                ep = store.read(i)
                s = export_episode_mcap(ep, out / f"episode_{i:06d}_{ep.uuid[:8]}.mcap")
                rows.append((i, s.path, s.messages, f"{s.bytes / 1e6:.2f}"))
                bar.update(task, advance=1, status=str(s.path.name))
    print_table("MCAP export", ["episode", "file", "messages", "MB"], rows)
    return 0
