"""Parameters of the ROS 2 nodes as typed dataclasses - rclpy-free, so they are validated and tested here.

A node shell calls `declare_config(node, Config)` (one ROS parameter per field, nested dataclasses as
dotted names: ``safety.max_translation_m``) and then `config_from_node(node, Config)`. The parameter
YAML files in ``launch/params/`` are checked by `config_from_params` (unknown keys are refused with the
list of valid ones). ROS parameters cannot be None: optional strings use "" for "not set".
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from robot.safety import SafetyConfig


@dataclass(frozen=True)
class CameraNodeConfig:
    camera_name: str = "front"  # the Episode image key
    kind: str = "realsense"  # realsense | replay | synthetic (robot.cameras registry)
    serial: str = ""  # RealSense serial ("" = the first device)
    playback_file: str = ""  # kind=replay: a .db3 / .episode recording
    width: int = 640
    height: int = 480
    fps: int = 30
    depth: bool = True
    topic_prefix: str = "camera"  # publishes <prefix>/color/image_raw, <prefix>/color/camera_info, <prefix>/aligned_depth_to_color/image_raw
    frame_id: str = "camera_color_optical_frame"
    camera_info_file: str = ""  # ROS camera_info YAML (calibration); "" = the driver's intrinsics

    def __post_init__(self) -> None:
        if self.kind not in ("realsense", "replay", "synthetic"):
            raise ValueError(f"camera_node.kind: {self.kind!r} is not realsense, replay or synthetic")
        if self.kind == "replay" and not self.playback_file:
            raise ValueError("camera_node.playback_file: kind=replay needs a recording")
        if min(self.width, self.height, self.fps) < 1:
            raise ValueError("camera_node.width/height/fps: must be positive")


@dataclass(frozen=True)
class ScriptSubscribers:
    """device=scripted: how many subscriptions each teleop publisher must have matched before the script plays. A
    script, unlike a person, does not wait for the screen: what it publishes before a listener is matched is lost to
    that listener (volatile topics), so every listener that must see the whole script is counted here."""

    twist: int = 1  # the arm driver (MoveIt Servo, sim_arm_node)
    action: int = 1  # the collector
    event: int = 1  # the collector, plus any other listener of every event (a test's probe: 2)

    def __post_init__(self) -> None:
        if min(self.twist, self.action, self.event) < 0:
            raise ValueError("teleop_node.wait_for_subscribers.twist/action/event: must be >= 0")


@dataclass(frozen=True)
class TeleopNodeConfig:
    device: str = "spacemouse"  # keyboard | spacemouse | gamepad | joy (sensor_msgs/Joy from joy_node) | scripted (script_file)
    map_file: str = ""  # key/button map YAML ("" = teleop/conf/<device>.yaml; joy uses gamepad.yaml)
    script_file: str = ""  # device=scripted: a YAML list of steps (teleop.scripted.load_script), one per tick
    rate_hz: float = 30.0  # twist publishing rate (MoveIt Servo's publish_period is 0.01-0.034 s)
    control_hz: float = 10.0  # the rate the recorded 7-d action is normalised to (the collector's rate)
    twist_topic: str = "/servo_node/delta_twist_cmds"
    action_topic: str = "teleop/action"  # std_msgs/Float64MultiArray, the 7-d action (what the collector records)
    event_topic: str = "teleop/event"  # std_msgs/String, episode events
    joy_topic: str = "/joy"
    frame_id: str = "base_link"  # twist frame (Servo's robot_link_command_frame / planning_frame)
    linear_speed_m_s: float = 0.15
    angular_speed_rad_s: float = 0.5
    deadband: float = 0.05
    axis_remap: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    max_translation_m: float = 0.05  # the arm's ArmLimits: what action 1.0 means per control step
    max_rotation_rad: float = 0.1
    wait_for_subscribers: ScriptSubscribers = field(default_factory=ScriptSubscribers)  # device=scripted only

    def __post_init__(self) -> None:
        if self.device not in ("keyboard", "spacemouse", "gamepad", "joy", "scripted"):
            raise ValueError(f"teleop_node.device: {self.device!r} is not keyboard, spacemouse, gamepad, joy or scripted")
        if self.device == "scripted" and not self.script_file:
            raise ValueError("teleop_node.script_file: device=scripted needs a script (a YAML list of steps)")
        for name in ("rate_hz", "control_hz", "max_translation_m", "max_rotation_rad"):
            if not getattr(self, name) > 0:
                raise ValueError(f"teleop_node.{name}: must be positive")


@dataclass(frozen=True)
class CollectorNodeConfig:
    task: str = "pick up the cube"
    rig: str = "real"
    cameras: tuple[str, ...] = ("front",)  # Episode image keys, one per image topic
    image_topics: tuple[str, ...] = ("/camera/camera/color/image_raw",)
    depth_topics: tuple[str, ...] = ()  # aligned depth per camera, or empty
    joint_state_topic: str = "/joint_states"
    ee_pose_topic: str = "/franka_robot_state_broadcaster/current_pose"  # geometry_msgs/PoseStamped
    action_topic: str = "teleop/action"
    event_topic: str = "teleop/event"
    gripper_joints: tuple[str, ...] = ("panda_finger_joint1", "panda_finger_joint2")
    gripper_max_m: float = 0.08  # summed finger opening when fully open
    rate_hz: float = 10.0
    max_steps: int = 600
    max_age_s: float = 0.2
    success: int = 50
    near_success: int = 50
    outbox: str = "outbox/robot"

    def __post_init__(self) -> None:
        if len(self.cameras) != len(self.image_topics):
            raise ValueError(f"collector_node.image_topics: {len(self.image_topics)} topics for {len(self.cameras)} cameras")
        if self.depth_topics and len(self.depth_topics) != len(self.cameras):
            raise ValueError("collector_node.depth_topics: one per camera, or none")
        if not self.rate_hz > 0 or not self.gripper_max_m > 0:
            raise ValueError("collector_node.rate_hz / gripper_max_m: must be positive")


@dataclass(frozen=True)
class DeployParams:
    """policy_node ``mode: deploy``: `robot.deploy.deploy` (`wvl robot deploy`'s loop) over the topics, policies
    from the learner link (robot/conf/robot.yaml's ``deploy`` block, same meanings)."""

    policies: str = "policies/robot"  # policy inbox folder (staging/, versions/, state.json)
    episodes: int = 10  # evaluation episodes per policy version (a manifest's extra.eval_episodes overrides)
    eval_seed: int = 2000000  # episode i of every version resets the simulated arm with seed eval_seed + i
    max_versions: int = 0  # leave after evaluating this many versions (0: until stopped)
    max_idle_s: float = 0.0  # leave after this long without a new policy (0: never)
    status_every_s: float = 30.0  # while idle, log what it waits for this often
    commit_timeout_s: float = 30.0  # at the end, wait this long for the learner to commit the episodes sent
    startup_timeout_s: float = 120.0  # wait this long for the simulated arm driver's first status (it loads a simulator)

    def __post_init__(self) -> None:
        if self.episodes < 1 or self.max_versions < 0 or self.max_idle_s < 0 or not self.status_every_s > 0:
            raise ValueError("policy_node.deploy.episodes / max_versions / max_idle_s / status_every_s: out of range")


@dataclass(frozen=True)
class PolicyNodeConfig:
    mode: str = "events"  # events: one episode of `artifact` per start on event_topic | deploy: `wvl robot deploy` over the
    # topics (policies from the learner link, sink=link; scenes reset through sim_event_topic, labelled by success_topic)
    artifact: str = ""  # policy artifact folder (policy.onnx + manifest.json); mode=deploy: not used
    camera: str = "front"
    image_topic: str = "/camera/camera/color/image_raw"
    joint_state_topic: str = "/joint_states"
    ee_pose_topic: str = "/franka_robot_state_broadcaster/current_pose"
    event_topic: str = "policy/event"  # std_msgs/String: start (an episode), stop, estop
    output: str = "twist"  # twist (MoveIt Servo) | joint_trajectory (joint_trajectory_controller, needs ik_factory)
    twist_topic: str = "/servo_node/delta_twist_cmds"
    trajectory_topic: str = "/joint_trajectory_controller/joint_trajectory"
    gripper_topic: str = "policy/gripper"  # std_msgs/Float64MultiArray [target]: bridge to the gripper action
    joint_names: tuple[str, ...] = tuple(f"panda_joint{i}" for i in range(1, 8))
    gripper_joints: tuple[str, ...] = ("panda_finger_joint1", "panda_finger_joint2")
    gripper_max_m: float = 0.08
    ik_factory: str = ""  # "package.module:function" -> ik(state, ee_target) -> joint positions
    frame_id: str = "base_link"
    rate_hz: float = 10.0
    max_steps: int = 300
    replan_every: int = 0  # 0 = play whole chunks
    max_translation_m: float = 0.05
    max_rotation_rad: float = 0.1
    pose_frame: str = "base"  # the frame of the EE pose topic (base; world for ManiSkill's simulated Panda): the safety box's
    outbox: str = "outbox/robot"
    sink: str = "folder"  # folder (<outbox>/<uuid>.episode) | link (robot.link.outbox.Outbox: spooled in outbox, shipped to the learner)
    link_endpoint: str = "tcp://127.0.0.1:5555"  # sink=link: the learner's address
    link_secret_key: str = ""  # sink=link: this robot's CURVE secret key file ("" with link_plaintext)
    link_learner_key: str = ""  # sink=link: the learner's public key file
    link_plaintext: bool = False  # sink=link: no CURVE (loopback experiments only)
    robot_id: str = "robot-1"
    status_topic: str = "policy/status"  # std_msgs/String JSON, one per finished episode (uuid, end_reason, steps, outcome)
    success_topic: str = ""  # std_msgs/String JSON {"success": bool} from a simulated rig (sim_arm_node's status): labels episodes
    sim_event_topic: str = ""  # mode=deploy: the simulated arm driver's event topic ("reset <seed> <stride>" before each episode)
    lockstep: bool = False  # with a simulated driver stepping per command: each action returns once the driver stepped with it
    # and its state + frame arrived (success_topic's status), as the in-process simulated arm does (robot.ros_rig)
    deploy: DeployParams = field(default_factory=DeployParams)
    safety: SafetyConfig = field(default_factory=SafetyConfig)

    def __post_init__(self) -> None:
        if self.mode not in ("events", "deploy"):
            raise ValueError(f"policy_node.mode: {self.mode!r} is not events or deploy")
        if self.lockstep and not self.success_topic:
            raise ValueError("policy_node.lockstep: needs success_topic (the simulated arm driver's status says which command it applied)")
        if self.mode == "deploy" and (self.sink != "link" or not self.success_topic or not self.sim_event_topic):
            raise ValueError("policy_node mode=deploy: needs sink=link (policies come and episodes go over the learner link), "
                             "success_topic and sim_event_topic (the simulated arm driver's status and event topics)")
        if self.sink not in ("folder", "link"):
            raise ValueError(f"policy_node.sink: {self.sink!r} is not folder or link")
        if self.sink == "link" and not self.link_plaintext and not (self.link_secret_key and self.link_learner_key):
            raise ValueError("policy_node.link_secret_key / link_learner_key: sink=link needs both key files (or link_plaintext)")
        if self.output not in ("twist", "joint_trajectory"):
            raise ValueError(f"policy_node.output: {self.output!r} is not twist or joint_trajectory")
        if self.output == "joint_trajectory" and not self.ik_factory:
            raise ValueError("policy_node.ik_factory: output=joint_trajectory needs the robot's IK ('package.module:function')")
        if not self.rate_hz > 0 or self.max_steps < 1 or self.replan_every < 0:
            raise ValueError("policy_node.rate_hz / max_steps / replan_every: out of range")


@dataclass(frozen=True)
class SimArmNodeConfig:
    """A simulated arm behind ROS 2 topics, the way a Franka driver + MoveIt Servo + a RealSense present a real one."""

    kind: str = "kinematic"  # kinematic (robot.arms.fake.KinematicArm + a rendered view) | maniskill (robot.sim.maniskill)
    sim_json: str = ""  # kind=maniskill: robot.sim.maniskill.ManiSkillConfig fields as JSON ("" = its defaults)
    camera_name: str = "front"  # the simulator camera published (maniskill); the Episode image key downstream
    image_size: int = 64  # kind=kinematic: rendered view, px (maniskill: sim_json's image_size)
    rate_hz: float = 10.0  # driver rate: one simulator step + one state/image message per period
    step_on: str = "timer"  # timer: step every period with the newest command (a driver) | command: one step per command
    twist_topic: str = "/servo_node/delta_twist_cmds"  # geometry_msgs/TwistStamped in (MoveIt Servo's input)
    gripper_topic: str = "policy/gripper"  # std_msgs/Float64MultiArray [target -1 close .. 1 open] in
    joint_state_topic: str = "/joint_states"
    ee_pose_topic: str = "/franka_robot_state_broadcaster/current_pose"
    topic_prefix: str = "camera"  # <prefix>/color/image_raw + <prefix>/color/camera_info (realsense2_camera layout)
    event_topic: str = "sim/event"  # std_msgs/String in: "reset <seed>", "camera_off", "camera_on"
    status_topic: str = "sim/status"  # std_msgs/String JSON out, every period: seed, step, success
    command_timeout_s: float = 0.3  # a twist older than this is zero motion (MoveIt Servo's incoming_command_timeout)
    joint_names: tuple[str, ...] = tuple(f"panda_joint{i}" for i in range(1, 8)) + ("panda_finger_joint1", "panda_finger_joint2")
    gripper_max_m: float = 0.08  # summed finger opening when fully open (the JointState's finger positions)
    frame_id: str = "base_link"
    camera_frame_id: str = "camera_color_optical_frame"
    seed: int = 0  # the first scene (maniskill)

    def __post_init__(self) -> None:
        if self.kind not in ("kinematic", "maniskill"):
            raise ValueError(f"sim_arm_node.kind: {self.kind!r} is not kinematic or maniskill")
        if self.step_on not in ("timer", "command"):
            raise ValueError(f"sim_arm_node.step_on: {self.step_on!r} is not timer or command")
        if not self.rate_hz > 0 or not self.command_timeout_s > 0 or self.image_size < 8:
            raise ValueError("sim_arm_node.rate_hz / command_timeout_s / image_size: out of range")


NODE_CONFIGS: dict[str, type] = {
    "camera_node": CameraNodeConfig,
    "teleop_node": TeleopNodeConfig,
    "collector_node": CollectorNodeConfig,
    "policy_node": PolicyNodeConfig,
    "sim_arm_node": SimArmNodeConfig,
}


# ---------------------------------------------------------------------------------------------- helpers
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def parameter_defaults(cls: type, prefix: str = "") -> dict[str, Any]:
    """Flat {dotted name: default} of a config dataclass, as ROS parameters (tuples -> lists)."""
    out: dict[str, Any] = {}
    inst = cls()
    hints = _hints(cls)
    for f in fields(cls):
        value = getattr(inst, f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            out.update(parameter_defaults(hints[f.name], prefix + f.name + "."))
        else:
            out[prefix + f.name] = list(value) if isinstance(value, tuple) else value
    return out


def declare_config(node: Any, cls: type, empty_list_descriptor: Any = None) -> None:
    """``node.declare_parameter(name, default)`` for every field (works on an rclpy Node). rclpy cannot infer
    the type of an empty list (it takes BYTE_ARRAY): the shell passes a dynamically typed ``ParameterDescriptor``
    for those, and the config dataclass validates the value."""
    for name, default in parameter_defaults(cls).items():
        if default == [] and empty_list_descriptor is not None:
            node.declare_parameter(name, default, empty_list_descriptor)
        else:
            node.declare_parameter(name, default)


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    hints = _hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"{where}: unknown parameters {sorted(unknown)}; valid: {sorted(names)}")
    kwargs = {}
    for k, v in values.items():
        t = hints[k]
        if dataclasses.is_dataclass(t):
            if not isinstance(v, dict):
                raise ValueError(f"{where}.{k}: expected a mapping of {t.__name__} fields")
            kwargs[k] = _build(t, v, f"{where}.{k}")
        elif isinstance(v, list):
            kwargs[k] = tuple(v)
        elif t is float and isinstance(v, int) and not isinstance(v, bool):
            kwargs[k] = float(v)
        else:
            kwargs[k] = v
    return cls(**kwargs)


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for k, v in flat.items():
        d = nested
        *head, last = k.split(".")
        for h in head:
            d = d.setdefault(h, {})
        d[last] = v
    return nested


def config_from_node(node: Any, cls: type) -> Any:
    """Read the declared parameters back (``node.get_parameter(name).value``) into the config dataclass."""
    flat = {name: node.get_parameter(name).value for name in parameter_defaults(cls)}
    return _build(cls, _nest(flat), cls.__name__)


def config_from_params(cls: type, params: dict[str, Any], where: str = "parameters") -> Any:
    """A config from a ``ros__parameters`` mapping (nested or dotted keys)."""
    return _build(cls, _nest(params) if any("." in k for k in params) else params, where)


def load_params_file(path: str | Path) -> dict[str, Any]:
    """Validate a ROS parameter YAML: {node_name: {ros__parameters: {...}}} -> {node_name: config}."""
    path = Path(path)
    doc = yaml.safe_load(path.read_text()) or {}
    out = {}
    for node_name, body in doc.items():
        if node_name not in NODE_CONFIGS:
            raise ValueError(f"{path}: node {node_name!r} has no config schema; known nodes: {sorted(NODE_CONFIGS)}")
        if not isinstance(body, dict) or set(body) != {"ros__parameters"}:
            raise ValueError(f"{path}: {node_name} must hold exactly one 'ros__parameters' mapping")
        out[node_name] = config_from_params(NODE_CONFIGS[node_name], body["ros__parameters"] or {}, f"{path.name}:{node_name}")
    return out


def gripper_opening(names: list[str], positions, gripper_joints: tuple[str, ...], gripper_max_m: float) -> float:
    """Gripper opening 0 (closed) .. 1 (open) from the finger joints of a JointState."""
    idx = [names.index(j) for j in gripper_joints if j in names]
    if not idx:
        return 1.0
    total = float(sum(positions[i] for i in idx))
    return float(min(max(total / gripper_max_m, 0.0), 1.0)) if math.isfinite(total) else 1.0
