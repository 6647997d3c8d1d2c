"""`wvl robot [run|collect]`: the whole robot in one process, without ROS.

camera(s) + arm + (policy | scripted expert | teleop device) + safety filter + episode sink, with the same
classes the ROS 2 nodes use (`robot.runner.EpisodeRunner`, `robot.safety.SafetyFilter`,
`teleop.session.SansSession`, ...).

- ``wvl robot run``: ``episodes`` rollouts from ``source`` (``policy``: an ONNX policy artifact through
  `robot.policy_runtime.PolicyRuntime`; ``scripted``: the simulator's scripted expert; ``teleop``: a device).
  On the simulated robot each rollout is labelled by the simulator's success flag.
- ``wvl robot collect``: the SANS teleop session (success / near-success about 1:1, live labels) with a
  keyboard, SpaceMouse, gamepad, or ``scripted`` (a simulated operator that follows the session's prompts).

Rigs: ``sim`` (ManiSkill, or LIBERO with ``sim.kind=libero``, built by `robot.sim.registry`; time is the simulator's
own unless ``realtime``), ``dry`` (a kinematic arm and a synthetic camera: the control stack without any simulator),
``custom`` (a Python arm driver from ``arm_factory`` plus cameras from the registry, e.g. RealSense).
Episodes go to ``sink``: ``folder`` (``<outbox>/<uuid>.episode``, atomic) or ``link`` (`robot.link.outbox.Outbox`,
uploaded to the learner). No torch is imported except by the simulator.
"""

from __future__ import annotations

import importlib
import logging
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf

from robot.arms.base import Arm
from robot.cameras import make_camera
from robot.cameras.group import CameraGroup
from robot.console import print_table
from robot.control import make_clock
from robot.rig import Rig, play_episodes
from robot.runner import EpisodeRunner, RunnerConfig
from robot.safety import SafetyConfig, SafetyFilter
from robot.sim.registry import make_sim_robot, sim_kind
from robot.sinks import EpisodeSink, FolderSink

log = logging.getLogger(__name__)

RIGS = ("sim", "dry", "custom")
SOURCES = ("policy", "scripted", "teleop")
DEVICES = ("scripted", "keyboard", "spacemouse", "gamepad")


def _import(target: str) -> Any:
    module, _, name = target.partition(":")
    if not name:
        raise ValueError(f"factory {target!r}: expected 'package.module:function'")
    return getattr(importlib.import_module(module), name)


def build_rig(cfg: dict[str, Any]) -> Rig:
    kind = cfg["rig"]
    if kind == "sim":
        sim_cfg = dict(cfg["sim"])
        if sim_cfg.get("max_steps") is None:
            sim_cfg.pop("max_steps", None)  # the simulator's own default
        robot = make_sim_robot(sim_cfg)  # libero: reset(i) = the task's initial state i
        robot.connect()
        from robot.sim.rollout import reset_unsolved

        seed0 = int(cfg["seed"])
        return Rig(robot.arm, dict(robot.cameras), robot.instruction,
                   lambda i, stride=1: reset_unsolved(robot.sim, seed0 + i, stride),
                   lambda: robot.sim.success, robot.close, sim=robot.sim)
    if kind == "dry":
        from robot.arms.fake import KinematicArm, KinematicArmConfig
        from robot.cameras.fake import SyntheticCamera, SyntheticCameraConfig

        # The dry rig stands in for the simulated one (same safety block): its pose is in the box's frame.
        arm = KinematicArm(KinematicArmConfig(pose_frame=rig_safety_config(cfg).workspace_frame))
        arm.connect()
        cam = SyntheticCamera(SyntheticCameraConfig(name="front", width=64, height=64, fps=30))
        return Rig(arm, {"front": cam}, cfg["instruction"] or "move the gripper", lambda i, stride=1: arm.reset(), None, lambda: None)
    if kind == "custom":
        if not cfg["arm_factory"]:
            raise ValueError("arm_factory: rig=custom needs 'package.module:function' returning a robot.arms Arm")
        arm = _import(cfg["arm_factory"])()
        if not isinstance(arm, Arm):
            raise ValueError(f"arm_factory: {cfg['arm_factory']} returned {type(arm).__name__}, not a robot.arms.base.Arm")
        arm.connect()
        cams = {}
        for c in cfg["cameras"] or []:
            c = dict(c)
            kind_c = c.pop("kind", None)
            if kind_c is None or "name" not in c:
                raise ValueError(f"cameras: every camera needs 'kind' and 'name', got {c}")
            cams[c["name"]] = make_camera(kind_c, **c)
        if not cams:
            raise ValueError("cameras: rig=custom needs at least one camera (e.g. {kind: realsense, name: front})")
        if not cfg["instruction"]:
            raise ValueError("instruction: rig=custom needs the task instruction")
        return Rig(arm, cams, cfg["instruction"], lambda i, stride=1: input(f"reset the scene for episode {i + 1}, then press Enter ") and None,
                   None, arm.disconnect)
    raise ValueError(f"rig: {kind!r} is not one of {RIGS}")


def build_sink(cfg: dict[str, Any]) -> tuple[EpisodeSink, Callable[[], None]]:
    if cfg["sink"] == "folder":
        return FolderSink(cfg["outbox"]), lambda: None
    if cfg["sink"] == "link":
        from robot import wire
        from robot.link.outbox import Outbox

        lk = cfg["link"]
        keys = wire.PLAINTEXT if lk["plaintext"] else wire.RobotKeys.load(lk["secret_key"], lk["learner_key"])
        outbox = Outbox(cfg["outbox"], lk["endpoint"], keys, robot_id=lk["robot_id"])
        put: list[str] = []

        def sink(episode) -> None:
            put.append(outbox.put(episode))  # durable on return; uploaded in the background

        def close() -> None:
            log.info("waiting up to %.0f s for the learner to commit %d episode(s)", lk["commit_timeout_s"], len(put))
            try:
                outbox.wait_committed(put, timeout=lk["commit_timeout_s"])
            except Exception as e:
                log.warning("not all episodes committed yet (%s); they stay in %s and go out on the next run", e, cfg["outbox"])
            outbox.close()

        return sink, close
    raise ValueError(f"sink: {cfg['sink']!r} is not 'folder' or 'link'")


def build_device(cfg: dict[str, Any], rig: Rig, mapping, hz: float):
    from teleop import make_device
    from teleop.scripted import CompositeDevice, ExpertOperator

    kind = cfg["device"]
    if kind == "scripted":
        if rig.sim is None:
            raise ValueError("device: 'scripted' (the simulated operator) needs rig=sim; use keyboard/spacemouse/gamepad on a real rig")
        dev = ExpertOperator(rig.sim, mapping, hz, rig.arm.limits, seed=int(cfg["seed"]))
    elif kind in DEVICES:
        dev = make_device(kind, map_file=cfg["map_file"])
    else:
        raise ValueError(f"device: {kind!r} is not one of {DEVICES}")
    if cfg["label_device"]:
        dev = CompositeDevice(dev, make_device(cfg["label_device"]))
    return dev


def _sim_safety_overrides(c: dict[str, Any]) -> dict[str, Any]:
    """The simulator's own workspace box (LIBERO's scene is not ManiSkill's table; robot.sim.rollout)."""
    if c["rig"] != "sim" or sim_kind(c["sim"]) != "libero":
        return {}
    from robot.sim.libero import LiberoConfig

    return LiberoConfig.safety_overrides()


def rig_safety_config(c: dict[str, Any]) -> SafetyConfig:
    """The rig's safety limits, one source per rig: rig=sim / dry: the ``safety`` block (the simulated rig's limits,
    with the simulator's own box for LIBERO); rig=custom (a real arm): `SafetyConfig`'s defaults, the real arm's
    conservative limits, with ``custom_safety``'s overrides."""
    if c["rig"] == "custom":
        return SafetyConfig.from_dict(dict(c.get("custom_safety") or {}))
    return SafetyConfig.from_dict({**c["safety"], **_sim_safety_overrides(c)})


def episode_max_steps(max_steps: int | None, teleop_max_steps: Any, *, teleop: bool, sim_steps: int | None = None) -> int:
    """Steps per episode: ``runner.max_steps`` when set; else a teleoperated episode (``collect``, ``source=teleop``)
    gets ``runner.teleop_max_steps`` (a person needs 20-60 s per demonstration: 600 at 10 Hz), a rollout on the
    simulated rig the simulator's episode length (what `wvl eval-policy` plays), any other rollout `RunnerConfig`'s."""
    if max_steps is not None:
        return int(max_steps)
    if teleop:
        if not isinstance(teleop_max_steps, int) or isinstance(teleop_max_steps, bool) or teleop_max_steps < 1:
            raise ValueError(f"runner.teleop_max_steps: must be an int >= 1, got {teleop_max_steps!r}")
        return teleop_max_steps
    return int(sim_steps) if sim_steps is not None else RunnerConfig.max_steps


def check_settings(c: dict[str, Any], mode: str) -> None:
    """Settings that would otherwise fail only after the simulator has started or the link has waited: checked
    before anything is built (the policy artifact, the link's key files). build_sink, which runs before the rig,
    checks the sink's kind."""
    if mode == "run" and c["source"] == "policy":
        from robot.policy_artifact import read_artifact

        if not c["policy"]["artifact"]:
            raise ValueError("policy.artifact: source=policy needs a policy artifact folder (policy.onnx + manifest.json)")
        read_artifact(Path(c["policy"]["artifact"]))  # an ArtifactError names what is missing or wrong
    if (mode == "deploy" or c["sink"] == "link") and not c["link"]["plaintext"]:
        from robot import wire

        for key in ("secret_key", "learner_key"):
            path = c["link"][key]
            if not path or not Path(path).is_file():
                raise ValueError(f"link.{key}: no key file at {path!r} (relative to {Path.cwd()}); `wvl keys name=<robot id>` "
                                 "writes one pair per machine (README: keys)")
        wire.RobotKeys.load(c["link"]["secret_key"], c["link"]["learner_key"])


def main(cfg: DictConfig, mode: str | None = None) -> int:
    c: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    mode = mode or "run"
    if c["source"] not in SOURCES:
        raise ValueError(f"source: {c['source']!r} is not one of {SOURCES}")
    from teleop.mapping import TeleopMapping

    safety_cfg = rig_safety_config(c)
    mapping = TeleopMapping.from_dict(c["mapping"])
    check_settings(c, mode)
    teleop = mode == "collect" or c["source"] == "teleop"
    realtime = c["realtime"] if c["realtime"] is not None else (teleop and c["device"] != "scripted") or c["rig"] != "sim"
    source_kind = "teleop" if teleop else ("policy" if c["source"] == "policy" else "scripted")
    rc = dict(c["runner"])
    hz = float(c["sim"]["control_hz"]) if c["rig"] == "sim" else float(rc.pop("hz", 10.0))
    rc.pop("hz", None)
    teleop_steps = rc.pop("teleop_max_steps", None)
    if teleop and rc["max_steps"] is None:
        rc["max_steps"] = episode_max_steps(rc["max_steps"], teleop_steps, teleop=True)
    # Bad runner values fail here, before anything starts (max_steps=null is resolved once the rig exists).
    RunnerConfig(hz=hz, source_kind=source_kind, rig=c["rig_name"], **{**rc, "max_steps": 1 if rc["max_steps"] is None else rc["max_steps"]})

    # deploy builds its own outbox (with the policy inbox on the same connection)
    sink, close_sink = (None, lambda: None) if mode == "deploy" else build_sink(c)
    rig = build_rig(c)
    if rc["max_steps"] is None:
        rc["max_steps"] = episode_max_steps(None, teleop_steps, teleop=False, sim_steps=rig.sim.config.max_steps if rig.sim is not None else None)
    runner_cfg = RunnerConfig(hz=hz, source_kind=source_kind, rig=c["rig_name"], **rc)
    cams = CameraGroup(rig.cameras, **c["camera_group"])
    try:
        runner = EpisodeRunner(rig.arm, cams, SafetyFilter(safety_cfg, rig.arm.limits), runner_cfg, make_clock(realtime))
        runner.connect()
        log.info("robot: rig=%s mode=%s source=%s at %g Hz (%s time)", c["rig"], mode, source_kind, hz, "real" if realtime else "simulated")
        if mode == "collect":
            return _collect(c, rig, runner, mapping, sink, realtime)
        if mode == "deploy":
            from robot.deploy import deploy

            return deploy(c, rig, runner)
        return _run(c, rig, runner, mapping, sink, realtime)
    finally:
        cams.disconnect()
        rig.close()
        close_sink()


def _collect(c, rig: Rig, runner: EpisodeRunner, mapping, sink, realtime: bool) -> int:
    from teleop.session import SansSession, SessionConfig

    device = build_device(c, rig, mapping, runner.config.hz)
    if c["device"] == "keyboard" or c["label_device"] == "keyboard":
        from teleop.keyboard import KeyMap

        for line in KeyMap.load(c["map_file"] if c["device"] == "keyboard" else None).help_lines():
            print(line)
    session = SansSession(runner, device, mapping, sink, SessionConfig(**c["session"]), rig.instruction,
                          reset_scene=rig.reset_scene, success=rig.success, realtime=realtime)
    try:
        s = session.run()
    finally:
        if device.is_connected:
            device.disconnect()
    print_table("SANS session", ["outcome", "episodes"], [*sorted(s.counts.items()), ("discarded", s.discarded)])
    return 0


def _run(c, rig: Rig, runner: EpisodeRunner, mapping, sink, realtime: bool) -> int:
    from robot.policy_source import PolicySource

    device = None
    if c["source"] == "policy":
        from robot.policy_runtime import PolicyRuntime, RigSpec

        cam = c["policy"]["camera"]
        if rig.sim is not None and cam in rig.cameras:
            rig.reset_scene(0)  # a simulated camera has nothing to show before its first reset
        frame = rig.cameras[cam].read() if cam in rig.cameras else None
        if frame is None:
            raise ValueError(f"policy.camera: {cam!r} is not one of the rig's cameras {sorted(rig.cameras)}")
        runtime = PolicyRuntime(RigSpec(camera=cam, image_size=tuple(frame.rgb.shape[:2]), control_hz=runner.config.hz))
        manifest = runtime.load(c["policy"]["artifact"])
        source = PolicySource(runtime, camera=cam)
        meta = {"policy_version": manifest.policy_version}
    elif c["source"] == "scripted":
        if rig.sim is None:
            raise ValueError("source: 'scripted' (the simulator's expert) needs rig=sim")
        from robot.sim.expert import ExpertSource

        source, meta = ExpertSource(rig.sim), {}
    else:
        from teleop.source import TeleopSource

        device = build_device(c, rig, mapping, runner.config.hz)
        device.connect()
        source, meta = TeleopSource(device, mapping, runner.config.hz, rig.arm.limits, realtime=realtime), {}
    if c["loop_iteration"] is not None:
        meta["loop_iteration"] = int(c["loop_iteration"])
    counts: Counter = Counter()
    rows = []
    try:
        for i, res in play_episodes(rig, runner, source, int(c["episodes"]), meta=meta):
            if res.episode is None:
                log.error("episode %d: nothing recorded (%s: %s)", i, res.end_reason, res.detail)
                break
            sink(res.episode)
            ep = res.episode
            counts[ep.outcome] += 1
            s = ep.info["safety"]
            rows.append((i, ep.outcome, len(ep), res.end_reason, s["interventions"], ep.info.get("control", {}).get("jitter_p99_ms")))
            if res.end_reason in ("camera_lost", "camera_stalled", "arm_lost", "teleop_lost"):
                log.error("stopping: %s", res.detail)
                break
    finally:
        if device is not None and device.is_connected:
            device.disconnect()
    print_table("wvl robot run", ["episode", "outcome", "steps", "ended by", "interventions", "jitter p99 ms"], rows)
    n = sum(counts.values())
    if n:
        print(f"success {counts['success']}/{n} ({counts['success'] / n:.0%})")
    return 0
