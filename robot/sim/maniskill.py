"""A ManiSkill 3 task as a simulated robot: one simulator behind the same Arm + Camera protocols as a rig.

The simulator is the embedded default robot. `ManiSkillSim` owns the gymnasium env; `SimArm` steps it
(one `send_action` = one control period of simulated time) and `SimCamera` returns the fixed third-person
RGB view of the current state. The camera is framed on the workspace like the paper's fixed D435 (with
ManiSkill's default camera the cube is 2-3 px at 64x64, see shared/research/maniskill.md).

Action semantics of `pd_ee_delta_pose` (measured): a[0:3] TCP translation scaled to +-0.1 m in the base
frame; a[3:6] XYZ-Euler rotation delta scaled by **-0.1 rad** (sign inverted, so we flip it here and the
contract's "+ = counter-clockwise" holds); a[6] absolute finger target, -1 closed, +1 open.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robot.arms.base import ArmLimits, ArmState
from robot.config_dict import dataclass_from_dict
from robot.errors import DeviceNotConnectedError
from robot.sim.devices import SimulatedArm, SimulatedCamera

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskSpec:
    """A task whose assets are bundled in the mani-skill wheel (YCB tasks download at run time: not offline)."""

    instruction: str
    goal_actor: str | None = None  # an actor ManiSkill hides from sensor cameras that the policy must see
    # Fixed third-person camera framed on this task's workspace: eye and target (m, world frame), fov (rad).
    camera: tuple[tuple[float, float, float], tuple[float, float, float], float] = ((0.42, 0.22, 0.40), (-0.02, 0.0, 0.14), 1.05)
    # Default maximum goal height above the table (m; None = ManiSkill's own), see ManiSkillConfig.max_goal_height.
    max_goal_height: float | None = None
    # Default half-size of the square the object (and PickCube's goal) spawns in (m; None = ManiSkill's own).
    spawn_half_size: float | None = None


# PickCube's goal floats up to 0.3 m above the table in ManiSkill; a single camera cannot tell its height, and a
# view that keeps a floating goal in frame shows the 4 cm cube 5-6 px wide at 64x64, hidden by the gripper at
# reset in 7% of seeds. So the default puts the goal on the table and frames the workspace tightly: the cube is
# 8-9 px wide and visible at reset in 60/60 seeds, the goal sphere too (measured on seeds 0-59). The floating goal
# stays available: sim.max_goal_height=0.3 with FLOATING_GOAL_CAMERA (README "Simulated tasks").
# Cube and goal spawn within +-2.5 cm (ManiSkill: +-5 cm): behaviour cloning of the scripted expert reaches 0-8% on
# held-out seeds at +-5 cm for every recipe tried and 47% at +-2.5 cm (bench/results/sft_recipes.md rows 1-26), and
# the loop needs a starting policy that succeeds sometimes. Seeds whose cube already lies at the goal are skipped.
# ManiSkill's workspace stays available: sim.spawn_half_size=0.05.
PICKCUBE_SPAWN_HALF_SIZE = 0.025
PICKCUBE_CAMERA = ((0.28, 0.36, 0.45), (0.0, 0.0, 0.05), 0.65)
FLOATING_GOAL_CAMERA = ((0.42, 0.22, 0.40), (-0.02, 0.0, 0.14), 1.05)


TASKS: dict[str, TaskSpec] = {
    "PickCube-v1": TaskSpec("pick up the red cube and move it to the green goal", goal_actor="goal_site",
                            camera=PICKCUBE_CAMERA, max_goal_height=0.0,
                            spawn_half_size=PICKCUBE_SPAWN_HALF_SIZE),
    # The push target lies 0.2 m in +x of the cube: look from the side so cube and target both fit.
    "PushCube-v1": TaskSpec("push the blue cube to the red and white target", goal_actor="goal_region",
                            camera=((0.1, 0.45, 0.35), (0.1, 0.0, 0.02), 1.0)),
    "StackCube-v1": TaskSpec("stack the red cube on top of the green cube"),
    "PullCube-v1": TaskSpec("pull the blue cube to the red and white target", goal_actor="goal_region",
                            camera=((-0.1, 0.45, 0.35), (-0.1, 0.0, 0.02), 1.0)),
}


class UnknownTaskError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


def task_spec(task: str) -> TaskSpec:
    if task not in TASKS:
        raise UnknownTaskError(f"unknown simulated task {task!r}; available: {', '.join(TASKS)}")
    return TASKS[task]


@dataclass(frozen=True)
class ManiSkillConfig:
    task: str = "PickCube-v1"
    image_size: int = 64  # square RGB, pixels; 256 like the paper where a GPU renders
    control_hz: float = 10.0  # like the paper's real rig
    sim_hz: float = 100.0
    max_steps: int = 40  # control steps before the episode is cut
    # Fixed camera; None = the task's default framing (TaskSpec.camera). m in the world frame, rad.
    camera_eye: tuple[float, float, float] | None = None
    camera_target: tuple[float, float, float] | None = None
    camera_fov: float | None = None
    show_goal: bool = True  # draw the task's goal marker in the camera (ManiSkill hides it from sensors)
    # Workspace randomisation (None = the task's default, TaskSpec): half-size of the square the object spawns in
    # (m; PickCube: 0.025, its goal too; ManiSkill's own 0.05) and the maximum goal height above the table (m,
    # PickCube: 0, the goal on the table).
    spawn_half_size: float | None = None
    max_goal_height: float | None = None
    # Rebuild the scene at every reset, so an episode depends only on its seed and its actions. Without it PhysX
    # keeps state from the episodes played before in the same simulator: the same seed and the same sampled actions
    # diverged after different earlier episodes (1 in 64 policy episodes), so an evaluation or an oracle update
    # depended on how its episodes were shared out among worker processes. Costs ~0.25 s per reset (2-core machine,
    # bench/results/oracle_workers.txt).
    rebuild_scene: bool = True
    rig: str = "sim-maniskill"

    def __post_init__(self) -> None:
        task_spec(self.task)
        if not 16 <= self.image_size <= 1024:
            raise ValueError(f"image_size: {self.image_size} is outside 16..1024")
        if self.control_hz <= 0 or self.sim_hz < self.control_hz or self.sim_hz % self.control_hz:
            raise ValueError(f"control_hz/sim_hz: sim_hz ({self.sim_hz}) must be a positive multiple of control_hz ({self.control_hz})")
        if self.max_steps < 1:
            raise ValueError(f"max_steps: must be >= 1, got {self.max_steps}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ManiSkillConfig":
        return dataclass_from_dict(cls, d, "sim config")

    @property
    def instruction(self) -> str:
        return task_spec(self.task).instruction

    @property
    def camera(self) -> tuple[tuple[float, ...], tuple[float, ...], float]:
        eye, target, fov = task_spec(self.task).camera
        return (self.camera_eye or eye, self.camera_target or target, self.camera_fov or fov)

    @property
    def goal_height(self) -> float | None:
        """The maximum goal height in effect: this config's, else the task's default (None = ManiSkill's)."""
        return self.max_goal_height if self.max_goal_height is not None else task_spec(self.task).max_goal_height

    @property
    def object_spawn_half_size(self) -> float | None:
        """The spawn half-size in effect: this config's, else the task's default (None = ManiSkill's)."""
        return self.spawn_half_size if self.spawn_half_size is not None else task_spec(self.task).spawn_half_size

    def workspace_info(self) -> dict[str, Any]:
        """What an episode records about the scene randomisation in effect (None = ManiSkill's own)."""
        return {"spawn_half_size": self.object_spawn_half_size, "max_goal_height": self.goal_height}

    @staticmethod
    def safety_overrides() -> dict[str, Any]:
        """None: robot/conf/robot.yaml's safety block is ManiSkill's table (the simulated rig's limits, in the world
        frame the TCP pose is reported in)."""
        return {}

    def camera_info(self) -> dict[str, Any]:
        """What an episode records about its camera, so data from different framings is never mixed silently."""
        eye, target, fov = self.camera
        return {"eye": [float(x) for x in eye], "target": [float(x) for x in target], "fov": float(fov), "size": self.image_size}


def _quat_wxyz_to_xyzw(q: np.ndarray) -> np.ndarray:
    return np.array([q[1], q[2], q[3], q[0]], dtype=np.float32)


class ManiSkillSim:
    """Owns one ManiSkill env (CPU simulation, CPU rendering); shared by the SimArm and SimCamera."""

    ROTATION_SIGN = -1.0  # pd_ee_delta_pose rotates by -0.1 rad per unit action (measured)

    def __init__(self, config: ManiSkillConfig = ManiSkillConfig()) -> None:
        self.config = config
        self.env = None
        self._obs: dict | None = None
        self._info: dict = {}
        self._steps = 0
        self._frame_index = 0
        self.sim_time = 0.0

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> None:
        if self.env is not None:
            return
        from robot.sim.vulkan import configure_vulkan

        configure_vulkan()
        try:
            import gymnasium as gym
            import mani_skill.envs  # noqa: F401  (registers the tasks)
            from mani_skill.utils import sapien_utils
        except ImportError as e:
            raise ImportError(f"the simulated robot needs ManiSkill: pip install 'world-vla-loop[sim]' ({e})") from e
        c = self.config
        eye, target, fov = c.camera
        pose = sapien_utils.look_at(list(eye), list(target))
        t0 = time.perf_counter()
        try:
            self.env = gym.make(
                c.task,
                obs_mode="rgb",
                control_mode="pd_ee_delta_pose",
                sim_backend="cpu",
                render_backend="cpu",
                sensor_configs=dict(base_camera=dict(pose=pose, fov=fov, width=c.image_size, height=c.image_size)),
                sim_config=dict(sim_freq=int(c.sim_hz), control_freq=int(c.control_hz)),
                max_episode_steps=c.max_steps + 1000,  # we cut episodes ourselves; ManiSkill's cut would reset state
            )
        except RuntimeError as e:
            if "physical device" in str(e) or "Vulkan" in str(e) or "vk" in str(e).lower():
                raise RuntimeError(
                    f"the simulator found no usable Vulkan device ({e}); run `make vulkan` to install Mesa's "
                    "software driver into .vulkan/, or check VK_ICD_FILENAMES"
                ) from e
            raise
        u = self.env.unwrapped
        if c.object_spawn_half_size is not None:
            u.cube_spawn_half_size = float(c.object_spawn_half_size)
        if c.goal_height is not None:
            u.max_goal_height = float(c.goal_height)
        log.info("ManiSkill %s ready in %.1f s (%dx%d camera, %g Hz)", c.task, time.perf_counter() - t0, c.image_size, c.image_size, c.control_hz)

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
            self.env = None

    # ------------------------------------------------------------------ simulation
    def reset(self, seed: int) -> None:
        if self.env is None:
            self.open()
        self._obs, self._info = self.env.reset(seed=int(seed), options={"reconfigure": True} if self.config.rebuild_scene else None)
        u = self.env.unwrapped
        spec = task_spec(self.config.task)
        if self.config.show_goal and spec.goal_actor and hasattr(u, spec.goal_actor):
            goal = getattr(u, spec.goal_actor)
            if goal in u._hidden_objects:  # ManiSkill hides it from sensors (again in every rebuilt scene)
                u._hidden_objects.remove(goal)
            goal.show_visual()
            self._obs = u.get_obs()  # re-render with the goal visible
        self._info = self._evaluate()
        self._steps = 0
        self.sim_time = 0.0
        self._frame_index += 1

    def step(self, action: np.ndarray) -> None:
        if self._obs is None:
            raise DeviceNotConnectedError("simulated robot: step() before reset()")
        a = np.asarray(action, dtype=np.float32).copy()
        a[3:6] *= self.ROTATION_SIGN
        import torch

        self._obs, _, _, _, info = self.env.step(torch.as_tensor(a[None]))
        self._info = {k: _scalar(v) for k, v in info.items()}
        self._steps += 1
        self.sim_time += 1.0 / self.config.control_hz
        self._frame_index += 1

    def _evaluate(self) -> dict:
        return {k: _scalar(v) for k, v in self.env.unwrapped.evaluate().items()}

    @property
    def steps(self) -> int:
        return self._steps

    @property
    def success(self) -> bool:
        return bool(self._info.get("success", False))

    @property
    def info(self) -> dict:
        return dict(self._info)

    def rgb(self, camera: str | None = None) -> np.ndarray:
        """(H, W, 3) uint8 from the fixed camera (the only one: ``camera`` is its name, whatever the rig calls it)."""
        return self._obs["sensor_data"]["base_camera"]["rgb"][0].cpu().numpy().astype(np.uint8)

    def state(self) -> ArmState:
        u = self.env.unwrapped
        qpos = self._obs["agent"]["qpos"][0].cpu().numpy().astype(np.float32)
        tcp = u.agent.tcp.pose
        p = tcp.p[0].cpu().numpy()
        q = tcp.q[0].cpu().numpy()
        ee = np.concatenate([p, _quat_wxyz_to_xyzw(q)]).astype(np.float32)
        # Panda fingers travel 0..0.04 m each.
        gripper = float(np.clip(qpos[-2:].sum() / 0.08, 0.0, 1.0))
        return ArmState(joints=qpos, ee_pose=ee, gripper=gripper, stamp=self.sim_time)

    def privileged(self) -> dict[str, np.ndarray]:
        """Ground-truth object poses for scripted experts (never given to a policy)."""
        u = self.env.unwrapped
        out = {"tcp": u.agent.tcp.pose.p[0].cpu().numpy().copy()}
        # PushCube/PullCube call their cube `obj`; experts see it as "cube" everywhere.
        for name, key in (("cube", "cube"), ("obj", "cube"), ("cubeA", "cubeA"), ("cubeB", "cubeB")):
            if hasattr(u, name):
                out[key] = getattr(u, name).pose.p[0].cpu().numpy().copy()
                out[key + "_quat_wxyz"] = getattr(u, name).pose.q[0].cpu().numpy().copy()
        for name in ("goal_site", "goal_region"):
            if hasattr(u, name):
                out["goal"] = getattr(u, name).pose.p[0].cpu().numpy().copy()
        if hasattr(u, "cube_half_size"):
            hs = u.cube_half_size
            out["cube_half_size"] = float(hs if np.isscalar(hs) else np.asarray(hs).reshape(-1)[0])
        return out

    def frame_index(self) -> int:
        return self._frame_index


def _scalar(v: Any) -> Any:
    try:
        import torch

        if isinstance(v, torch.Tensor):
            v = v.cpu().numpy()
    except ImportError:
        pass
    if isinstance(v, np.ndarray) and v.size == 1:
        return v.reshape(()).item()
    return v


class SimArm(SimulatedArm):
    """The simulated Panda (pd_ee_delta_pose). `send_action` advances the simulator by one control period."""

    def __init__(self, sim: ManiSkillSim, name: str = "sim_panda") -> None:
        # The TCP pose (ManiSkillSim.state) is in ManiSkill's world frame: the Panda's base sits at x = -0.615 m.
        super().__init__(sim, name, ArmLimits(max_translation_m=0.1, max_rotation_rad=0.1, pose_frame="world"))


class SimCamera(SimulatedCamera):
    """The simulator's fixed third-person RGB camera (no depth)."""

    def __init__(self, sim: ManiSkillSim, name: str = "front") -> None:
        super().__init__(sim, name)


@dataclass
class SimRobot:
    """A simulated rig: the simulator plus its arm and camera(s), built from one config."""

    config: ManiSkillConfig
    sim: ManiSkillSim = field(init=False)
    arm: SimArm = field(init=False)
    cameras: dict[str, SimCamera] = field(init=False)

    def __post_init__(self) -> None:
        self.sim = ManiSkillSim(self.config)
        self.arm = SimArm(self.sim)
        self.cameras = {"front": SimCamera(self.sim, "front")}

    def connect(self) -> None:
        self.arm.connect()
        for c in self.cameras.values():
            c.connect()

    def close(self) -> None:
        self.sim.close()

    @property
    def instruction(self) -> str:
        return self.config.instruction
