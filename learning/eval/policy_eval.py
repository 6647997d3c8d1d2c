"""Success rate of a deployed policy on the simulated robot, with its 95% Wilson interval.

The exported ONNX artifact runs through the robot's own `PolicyRuntime` (the same validation and inference
as on the robot PC) on `SimRobot`. Each rollout: reset with a seed, then ask the policy for a chunk, play
``execute_steps`` of it (default: all K), observe again, ... until the task succeeds (then ``settle_steps``
more steps are recorded) or ``max_steps`` pass. Success is the simulator's own flag, reached at any step
(ManiSkill's "success once"). The loop plays actions straight into the simulator, as the SANS demos were
recorded: the robot's safety filter (start-up guard, 5 cm step clamp) is a property of a rig, not of the
policy, and would measure a different thing.

Seeds: episode i uses ``seed + i`` (``seed`` defaults to 1,000,000; `wvl collect` counts up from 0 and
uses at most 5x its episode count, so evaluation never replays a demonstration's scene). A seed whose task
is solved at reset (the goal spawned at the cube) is replaced by ``seed + i + episodes``, and so on.

Rollouts run in ``workers`` processes (spawn: ManiSkill's CPU simulator hangs under fork), each with its own
simulator; the parent only collects results, so the numbers do not depend on the worker count.

LIBERO (`sim=libero`, `robot/sim/libero.py`): episode i starts from the task's fixed initial state i, the
benchmark's protocol (each of its 50 states once; ``seed`` is unused), and runs for the suite's step budget.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from learning.eval.stats import SuccessRate
from robot.console import print_table, progress
from robot.sim.registry import make_sim_robot

log = logging.getLogger(__name__)

EVAL_SEED_BASE = 1_000_000


@dataclass(frozen=True)
class RolloutConfig:
    execute_steps: int | None = None  # actions of each chunk played before re-planning; None = the whole chunk
    max_steps: int | None = None  # None = the simulator config's max_steps
    settle_steps: int | None = None  # steps recorded after the first success; None = the runner's default
    record: bool = False  # return the Episode (for a store or failure videos)
    policy_version: str | None = None  # written into recorded episodes (default: the manifest's)
    loop_iteration: int | None = None

    def __post_init__(self) -> None:
        if self.execute_steps is not None and self.execute_steps < 1:
            raise ValueError(f"execute_steps: must be >= 1 or null, got {self.execute_steps}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps: must be >= 1 or null, got {self.max_steps}")
        if self.settle_steps is not None and self.settle_steps < 0:
            raise ValueError(f"settle_steps: must be >= 0, got {self.settle_steps}")


@dataclass
class RolloutResult:
    index: int
    seed: int
    success: bool  # the simulator's success flag at the episode's end (robot.sim.rollout: the one rule)
    steps: int
    success_step: int | None  # the first step whose observation was a success
    end_reason: str
    policy_calls: int
    infer_ms_p50: float
    episode_bytes: bytes | None = field(default=None, repr=False)


def rollout(robot, runtime, seed: int, cfg: RolloutConfig, index: int = 0, stride: int = 1, safety=None) -> RolloutResult:
    """One episode of ``runtime`` (a `PolicyRuntime`) on ``robot`` (a connected `SimRobot` / `LiberoRobot`) from
    the first unsolved scene of ``seed, seed + stride, ...``, through `robot.sim.rollout` -- the episode runner
    and safety filter the robot process (`wvl robot deploy`) uses."""
    from robot.policy_source import PolicySource
    from robot.sim.rollout import run_sim_episode, sim_runner

    manifest = runtime.reset()  # the episode boundary: a staged policy version would become current here
    runner = sim_runner(robot, cfg.max_steps, source_kind="policy", replan_every=cfg.execute_steps,
                        settle_steps=cfg.settle_steps, safety=safety)
    source = PolicySource(runtime, camera=manifest.camera)
    n_lat = len(runtime.latencies_ms)
    meta = {"policy_version": cfg.policy_version or manifest.policy_version, "loop_iteration": cfg.loop_iteration}
    res = run_sim_episode(runner, robot, source, seed, stride=stride, info={"evaluation": True}, **meta)
    ep = res.episode
    hits = np.flatnonzero(ep.rewards > 0)
    lat = runtime.latencies_ms[n_lat:]
    return RolloutResult(index, int(ep.info["seed"]), bool(res.success), len(ep) - 1, int(hits[0]) if hits.size else None,
                         res.end_reason, source.calls, float(np.median(lat)) if lat else float("nan"),
                         ep.to_bytes() if cfg.record else None)


# ---------------------------------------------------------------------------------------------- workers
_W: dict[str, Any] = {}


def worker_log_level() -> int:
    """The workers' log level: WARNING, unless the parent logs DEBUG (WVL_LOG_LEVEL=DEBUG). Every worker makes
    the same simulator and runtime, so their INFO lines would print once per worker; the parent reports the run."""
    level = logging.getLogger().level
    return logging.DEBUG if logging.NOTSET < level <= logging.DEBUG else logging.WARNING


def _worker_init(sim_cfg: dict, artifact: str, rig: dict, threads: int, log_level: int, safety: dict) -> None:
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    from robot.policy_runtime import PolicyRuntime, RigSpec

    try:  # ManiSkill imports torch; one thread per worker (the workers are the parallelism)
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    robot = make_sim_robot(sim_cfg)
    robot.connect()
    runtime = PolicyRuntime(RigSpec.from_dict(rig), providers=["CPUExecutionProvider"], threads=threads)
    runtime.load(artifact)
    from robot.safety import SafetyConfig

    _W.update(robot=robot, runtime=runtime, safety=SafetyConfig.from_dict(safety))


def _worker_run(job: tuple[int, int, int, RolloutConfig]) -> RolloutResult:
    index, seed, stride, cfg = job
    return rollout(_W["robot"], _W["runtime"], seed, cfg, index, stride=stride, safety=_W["safety"])


# ---------------------------------------------------------------------------------------------- API
@dataclass
class EvalResult:
    artifact: str
    policy_version: str
    task: str
    rate: SuccessRate
    seconds: float
    episodes: list[dict[str, Any]]
    config: dict[str, Any]
    stored: list[int] = field(default_factory=list)
    videos: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rate"] = self.rate.to_dict()
        return d


def rig_for(sim_cfg) -> dict[str, Any]:
    """The rig a simulated robot offers a policy (camera, image size, action space, rate)."""
    return {"camera": "front", "image_size": (sim_cfg.image_size, sim_cfg.image_size), "action_dim": 7,
            "action_low": (-1.0,) * 7, "action_high": (1.0,) * 7, "control_hz": float(sim_cfg.control_hz)}


def evaluate_policy(artifact: str | Path, sim_cfg: Any = None, episodes: int = 100, workers: int = 2,
                    seed: int = EVAL_SEED_BASE, rollout_cfg: RolloutConfig = RolloutConfig(), store=None,
                    videos: str | Path | None = None, max_videos: int = 10, threads: int = 1,
                    check_camera: bool = True, safety: dict[str, Any] | None = None) -> EvalResult:
    """Roll the artifact out ``episodes`` times on the simulated robot. ``sim_cfg``: a `ManiSkillConfig` or dict
    (default PickCube-v1). ``store``: an `EpisodeStore` to append every rollout to (source="policy", outcome
    from the simulator). ``videos``: a folder for MP4s of up to ``max_videos`` failures. ``safety``: overrides
    of the simulated rig's safety limits (`robot.sim.rollout.sim_safety_config`)."""
    from robot.policy_artifact import read_artifact
    from robot.policy_runtime import validate_artifact
    from robot.sim.libero import LiberoConfig, load_init_states
    from robot.sim.maniskill import ManiSkillConfig
    from robot.sim.rollout import sim_safety_config

    if episodes < 1 or workers < 1:
        raise ValueError(f"episodes/workers: must be >= 1, got {episodes}/{workers}")
    if not isinstance(sim_cfg, (ManiSkillConfig, LiberoConfig)):
        sim_cfg = ManiSkillConfig.from_dict(dict(sim_cfg or {}))
    libero = isinstance(sim_cfg, LiberoConfig)
    task = f"{sim_cfg.suite}/{sim_cfg.task}" if libero else sim_cfg.task
    rig = rig_for(sim_cfg)
    artifact = str(Path(artifact))
    manifest = read_artifact(Path(artifact))
    validate_artifact(artifact, rig)  # fail here, with the field named, before starting simulators
    trained_on = manifest.extra.get("camera_info")
    if check_camera and trained_on and hasattr(sim_cfg, "camera_info"):
        here = sim_cfg.camera_info()
        if json.dumps(trained_on, sort_keys=True) != json.dumps(here, sort_keys=True):
            raise ValueError(f"camera: the policy was trained on frames from camera {trained_on}, this simulator renders "
                             f"{here}; the success rate would measure the framing change (set check_camera=false to do it anyway)")
    safety_cfg = sim_safety_config({**sim_cfg.safety_overrides(), **(safety or {})})
    record = store is not None or videos is not None
    rcfg = RolloutConfig(**{**asdict(rollout_cfg), "record": record})
    sim_dict = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(sim_cfg).items()}
    sim_dict["kind"] = "libero" if libero else "maniskill"
    if libero and sim_cfg.init_states == "benchmark":  # episode i: the benchmark's fixed initial state i
        n_states = len(load_init_states(sim_cfg.suite, sim_cfg.task))
        if episodes > n_states:
            raise ValueError(f"episodes: {episodes} > the {n_states} fixed initial states of LIBERO {task}; the benchmark "
                             f"runs each once: episodes={n_states} (or sim.init_states=sampled for more)")
        jobs = [(i, i, n_states, rcfg) for i in range(episodes)]
    else:
        jobs = [(i, seed + i, episodes, rcfg) for i in range(episodes)]
    workers = min(workers, episodes)
    results: list[RolloutResult] = []
    stored: list[int] = []
    video_paths: list[str] = []
    if videos is not None:
        Path(videos).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    ctx = mp.get_context("spawn")
    with progress() as bar, ctx.Pool(workers, initializer=_worker_init,
                                     initargs=(sim_dict, artifact, rig, threads, worker_log_level(),
                                               safety_cfg.to_dict())) as pool:
        job = bar.add_task(f"eval {manifest.policy_version} on {task}", total=episodes, status="")
        for r in pool.imap_unordered(_worker_run, jobs, chunksize=1):
            results.append(r)
            if r.episode_bytes is not None:
                from robot.episode import Episode

                ep = Episode.from_bytes(r.episode_bytes)
                if store is not None:
                    stored.append(store.append(ep))
                if videos is not None and not r.success and len(video_paths) < max_videos:
                    from learning.data.video import encode_video

                    p = Path(videos) / f"failure-seed{r.seed}.mp4"
                    encode_video(ep.images["front"], p, ep.fps)
                    video_paths.append(str(p))
                r.episode_bytes = None
            n_ok = sum(x.success for x in results)
            bar.update(job, advance=1, status=f"success {n_ok}/{len(results)}")
    seconds = time.perf_counter() - t0
    results.sort(key=lambda r: r.index)
    rate = SuccessRate(sum(r.success for r in results), len(results))
    rows = [{k: v for k, v in asdict(r).items() if k != "episode_bytes"} for r in results]
    return EvalResult(artifact, manifest.policy_version, task, rate, seconds, rows,
                      {"episodes": episodes, "workers": workers, "seed": seed, "rollout": asdict(rcfg), "sim": sim_dict,
                       "safety": safety_cfg.to_dict()},
                      stored, video_paths)


def main(cfg, mode: str | None = None) -> int:
    from omegaconf import OmegaConf

    if bool(cfg.artifact) == bool(cfg.policy):
        raise ValueError("artifact/policy: give exactly one: artifact=<exported folder> or policy=<saved policy folder>")
    sim = make_sim_robot(OmegaConf.to_container(cfg.sim, resolve=True), cfg.task).config  # validates the sim config (no simulator started here)
    artifact = cfg.artifact
    tmp = None
    if cfg.policy:
        import tempfile

        from learning.policy import load_policy
        from learning.policy.export import export_policy

        tmp = tempfile.TemporaryDirectory(prefix="wvl-eval-")
        artifact = str(Path(tmp.name) / "artifact")
        export_policy(load_policy(cfg.policy), artifact, version=cfg.policy_version or Path(cfg.policy).name,
                      control_hz=sim.control_hz)  # (no real frames to check the export on here: random frames + states)
    store = None
    if cfg.store:
        from learning.data.store import EpisodeStore

        store = EpisodeStore(cfg.store)
    rcfg = RolloutConfig(execute_steps=cfg.execute_steps, max_steps=cfg.max_steps, settle_steps=cfg.settle_steps,
                         policy_version=cfg.policy_version, loop_iteration=cfg.loop_iteration)
    try:
        res = evaluate_policy(artifact, sim, episodes=cfg.episodes, workers=cfg.workers, seed=cfg.seed, rollout_cfg=rcfg,
                              store=store, videos=cfg.videos, max_videos=cfg.max_videos, threads=cfg.threads,
                              check_camera=cfg.check_camera, safety=OmegaConf.to_container(cfg.safety, resolve=True) if cfg.get("safety") else None)
    finally:
        if tmp is not None:
            tmp.cleanup()
    lo, hi = res.rate.interval
    succ = [r for r in res.episodes if r["success"]]
    print_table(f"policy {res.policy_version} on simulated {res.task}", ["what", "value"], [
        ("success rate", str(res.rate)),
        ("episodes / seeds", f"{res.rate.n} / {min(r['seed'] for r in res.episodes)}..{max(r['seed'] for r in res.episodes)}"
         + (" (LIBERO's fixed initial states)" if getattr(sim, "init_states", None) == "benchmark" else "")),
        ("mean steps to success", f"{np.mean([r['success_step'] for r in succ]):.1f}" if succ else "-"),
        ("policy calls per episode", f"{np.mean([r['policy_calls'] for r in res.episodes]):.1f}"),
        ("onnxruntime act p50", f"{np.median([r['infer_ms_p50'] for r in res.episodes]):.2f} ms"),
        ("stored episodes", f"{len(res.stored)} -> {cfg.store}" if cfg.store else "-"),
        ("failure videos", f"{len(res.videos)} -> {cfg.videos}" if cfg.videos else "-"),
        ("wall time", f"{res.seconds:.0f} s with {res.config['workers']} workers"),
    ])
    if cfg.report:
        Path(cfg.report).parent.mkdir(parents=True, exist_ok=True)
        d = res.to_dict()
        d["command_config"] = OmegaConf.to_container(cfg, resolve=True)
        Path(cfg.report).write_text(json.dumps(d, indent=2))
    print(f"success_rate={res.rate.rate:.4f} ci_low={lo:.4f} ci_high={hi:.4f} n={res.rate.n}")
    return 0
