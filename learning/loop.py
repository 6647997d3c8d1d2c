"""`wvl loop`: the co-evolution loop (World-VLA-Loop, DESIGN section 1-2), end to end through the real stack.

    iteration 0   : the SFT policy, deployed and measured
    iteration k>=1: (a) refine the world model on SANS + every rollout so far
                    (b) GRPO in imagination, from the SFT policy (paper) or the last policy (config)
                    (c) export to ONNX and push it over the learner link to the robot process
                    (d) the robot process runs N evaluation episodes with it (policy runtime + safety filter)
                    (e) it ships the rollouts back over the link, labelled by the simulator's success flag
                    (f) record: real success with its 95% CI, imagined success, world-model alignment on the
                        fresh rollouts *before* refinement (overall, per real class, balanced), wall time per phase
    controls      : ``controls=[oracle,filtered_bc]`` (learning/controls.py): the same budget from the SFT policy
                    without the world model, deployed and measured exactly like an iteration (`Deployment.evaluate`)

The robot side is its own process (`wvl robot deploy`), exactly as on a rig: on the simulated robot `wvl loop`
starts it; on a real rig (`robot=external`) the loop runs the learner side only and waits for the robot's
episodes (labelled by the operator through the collector). Everything built before the first iteration (SANS
demos, the SFT policy, world model v0) is cached under ``cache`` by a hash of what made it, so a rerun is fast.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import yaml
from omegaconf import DictConfig, OmegaConf

from learning.data.store import EpisodeStore
from learning.eval.stats import SuccessRate
from learning.report import LoopReport, side_by_side
from robot.console import console, print_table
from robot.sim.registry import sim_kind

log = logging.getLogger(__name__)

ROBOT_ID = "robot-1"


# ---------------------------------------------------------------------------------------------- helpers
def config_hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


@contextmanager
def timed(seconds: dict[str, float], name: str) -> Iterator[None]:
    t0 = time.perf_counter()
    try:
        yield
    finally:
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t0


def _container(cfg: Any) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


# ---------------------------------------------------------------------------------------------- cached stages
def ensure_sans(c: dict[str, Any], cache: Path) -> EpisodeStore:
    """The SANS demos (scripted success + near-success on the simulated robot), collected once per config."""
    from learning.data.collect import sans_collector
    from robot.sim.registry import make_sim_robot

    collect_sans, CollectStats = sans_collector(c["sim"])

    s = c["sans"]
    if s.get("store"):  # a real rig's SANS demos (collected by teleop, labelled by the operator)
        store = EpisodeStore(s["store"], create=False)
        log.info("SANS demos: %s (%d episodes)", store.root, len(store))
        return store
    from robot.sim.expert import EXPERT_VERSION

    offsets = {k: s[k] for k in ("near_success_offsets", "success_place_offset") if s.get(k) is not None}
    if offsets and sim_kind(c["sim"]) != "maniskill":
        raise ValueError(f"sans: {sorted(offsets)} move the scripted ManiSkill expert's targets; sim={c['sim'].get('kind')} has none")
    robot = make_sim_robot(c["sim"], c["task"])  # lazy: the simulator opens on connect
    # The scene in effect joins the key: a task's defaults (framing, workspace) can change with the code.
    scene = {"camera": robot.config.camera_info(), **getattr(robot.config, "workspace_info", dict)()}
    # (options left at null stay out of the key: stores collected before they existed are still found)
    key = config_hash(c["task"], c["sim"], {k: v for k, v in s.items() if k != "store" and v is not None}, EXPERT_VERSION, scene)
    root = cache / f"sans-{key}"
    done = root / "COMPLETE"
    if done.exists():
        store = EpisodeStore(root, create=False)
        log.info("SANS demos: cached %s (%d episodes)", root, len(store))
        return store
    if root.exists():
        shutil.rmtree(root)  # an interrupted collection: start over (seeds make it reproducible)
    store = EpisodeStore(root)
    robot.connect()
    stats = CollectStats()
    from robot.console import progress

    with progress() as bar:
        job = bar.add_task("SANS demos", total=s["success"] + s["near_success"], status="")
        for ep in collect_sans(robot, s["success"], s["near_success"], seed=s["seed"], stats=stats, **offsets):
            store.append(ep)
            bar.update(job, advance=1, status=f"success {stats.kept['success']} near-success {stats.kept['near_success']}")
    robot.close()
    done.write_text(json.dumps({"expert_success_rate": stats.expert_success_rate,
                                "near_success_failure_rate": stats.near_success_failure_rate, "episodes": len(store)}))
    return store


def ensure_sft(c: dict[str, Any], sans: EpisodeStore, cache: Path) -> Path:
    """The SFT policy (behaviour cloning on the SANS successes), trained once per config."""
    from learning.policy.sft import train_sft

    key = config_hash(sans.root.name, c["sft"])
    out = cache / f"sft-{key}"
    if (out / "COMPLETE").exists():
        folder = Path((out / "COMPLETE").read_text())
        log.info("SFT policy: cached %s", folder)
        return folder
    folder = train_sft({**c["sft"], "store": str(sans.root), "out": str(out)}, sans)
    (out / "COMPLETE").write_text(str(folder))
    return Path(folder)


def world_model_cfg(c: dict[str, Any], which: str) -> dict[str, Any]:
    """The world model's training config for the initial model (``initial``) or a refinement (``refine``)."""
    wm = dict(c["world_model"])
    stage = dict(wm.pop("initial")) if which == "initial" else dict(wm.pop("refine"))
    wm.pop("initial", None), wm.pop("refine", None)
    train = {**wm.get("train", {}), **stage}
    return {**wm, "train": train}


def ensure_world_model(c: dict[str, Any], sans: EpisodeStore, cache: Path) -> Path:
    """World model v0 trained on the SANS demos (without the near-successes for the ablation)."""
    from learning.world_model.train import train_world_model

    wcfg = world_model_cfg(c, "initial")
    key = config_hash(sans.root.name, wcfg)
    out = cache / f"wm-{key}"
    if (out / "COMPLETE").exists():
        log.info("world model v0: cached %s", out)
        return Path((out / "COMPLETE").read_text())
    folder = train_world_model({**wcfg, "out": str(out)}, [sans])
    (out / "COMPLETE").write_text(str(folder))
    return Path(folder)


def ensure_classifier(sans: EpisodeStore, cache: Path, steps: int) -> Path:
    """The independent success classifier for visual alignment, trained on REAL frames only (the SANS demos)."""
    from learning.eval.success_classifier import train_success_classifier

    out = cache / f"classifier-{sans.root.name}-{steps}"
    if (out / "COMPLETE").exists():
        return out
    train_success_classifier([sans], steps=steps).save_pretrained(out)
    (out / "COMPLETE").write_text("ok")
    return out


# ---------------------------------------------------------------------------------------------- the robot
class RobotProcess:
    """`wvl robot deploy` as a child process on the simulated robot; its log goes to ``log_path``."""

    def __init__(self, c: dict[str, Any], endpoint: str, keys: Path, work: Path) -> None:
        self.log_path = work / "robot.log"
        # Everything the loop decides about the robot in one file (the simulator: the loop's `sim` group), handed
        # over with --settings; the user's `robot.overrides` come after it and win.
        sim = {**c["sim"], "task": c["task"], "max_steps": c["robot"]["max_steps"]}
        settings = {
            "rig": "sim", "sink": "link", "source": "policy",
            "link": {"endpoint": endpoint, "secret_key": str(keys / (ROBOT_ID + ".key_secret")), "learner_key": str(keys / "learner.key")},
            "outbox": str(work / "outbox"),
            "deploy": {"policies": str(work / "policies"), "episodes": c["eval_episodes"], "eval_seed": c["eval_seed"]},
            "runner": {"max_steps": c["robot"]["max_steps"]},
            "sim": {k: v for k, v in sim.items() if v is not None},  # null: the simulator's default
        }
        self.settings_path = work / "robot_settings.yaml"
        self.settings_path.write_text(yaml.safe_dump(settings, sort_keys=False))
        args = [sys.executable, "-m", "learning.cli", "robot", "deploy", "--settings", str(self.settings_path),
                *(c["robot"].get("overrides") or [])]
        env = {**os.environ, "WVL_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        log.info("robot process started (pid %d), log %s", self.proc.pid, self.log_path)

    def check_alive(self) -> None:
        rc = self.proc.poll()
        if rc is not None:
            tail = self.log_path.read_text(errors="replace").splitlines()[-15:]
            raise RuntimeError(f"the robot process exited with code {rc}; last lines of {self.log_path}:\n" + "\n".join(tail))

    def stop(self, timeout: float = 60.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # finishes the episode in progress, flushes its outbox
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def ros_robot(c: dict[str, Any], endpoint: str, keys: Path, work: Path):
    """robot.kind=ros: the robot side as ROS 2 node processes on a private loopback DDS domain -- sim_arm_node
    (ManiSkill, one step per command) + policy_node in deploy mode (`robot.deploy.deploy` over the topics, the same
    seeds, success rule and Episode fields as `wvl robot deploy`); logs in ``work`` (policy_node.log)."""
    from robot.ros_graph import start_sim_deploy

    sim = {**c["sim"], "task": c["task"], "max_steps": c["robot"]["max_steps"]}
    graph = start_sim_deploy(work, sim=sim, endpoint=endpoint, secret_key=keys / (ROBOT_ID + ".key_secret"),
                             learner_key=keys / "learner.key", robot_id=ROBOT_ID, episodes=c["eval_episodes"],
                             eval_seed=c["eval_seed"], max_steps=c["robot"]["max_steps"])
    log.info("robot side: ROS 2 nodes %s on domain %d, logs in %s", sorted(graph.nodes), graph.domain_id, work)
    return graph


def make_keys(folder: Path) -> tuple[Any, Path]:
    """Fresh CURVE keys for this run: the learner's pair, the robot's pair, the allow list {robot-1}."""
    from robot import wire

    folder.mkdir(parents=True, exist_ok=True)
    for name in ("learner", ROBOT_ID):
        if not (folder / f"{name}.key_secret").exists():
            wire.generate_keypair(folder, name, overwrite=True)
    robot_public = wire.load_public(folder / f"{ROBOT_ID}.key")
    return wire.LearnerKeys.load(folder / "learner.key_secret", {ROBOT_ID: robot_public}), folder


def wait_for_rollouts(store: EpisodeStore, version: str, n: int, robot: RobotProcess | None, timeout_s: float,
                      label: str) -> list[int]:
    """Block until ``n`` episodes of policy ``version`` are committed into ``store``; their indices."""
    from robot.console import progress

    deadline = time.monotonic() + timeout_s
    with progress() as bar:
        job = bar.add_task(label, total=n, status="")
        while True:
            store.refresh()
            idx = store.indices(policy_version=version)
            wins = sum(store.row(i)["outcome"] == "success" for i in idx)
            bar.update(job, completed=min(len(idx), n), status=f"successes {wins}")
            if len(idx) >= n:
                return idx[:n]
            if robot is not None:
                robot.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(idx)}/{n} rollouts of policy {version} arrived within {timeout_s:.0f} s")
            time.sleep(0.5)


@dataclass
class Evaluation:
    """One policy measured on the robot: its evaluation episodes (indices into the rollouts store) and their count."""

    policy: Any  # the torch policy that was exported
    version: str
    indices: list[int]
    rate: SuccessRate
    sim_steps: int  # recorded steps of its evaluation episodes (len(actions): what measuring it cost the robot)

    def row(self, training_sim_steps: int = 0) -> dict[str, Any]:
        """The report's measured fields; ``sim_steps``: simulator control steps consumed by training (the oracle's
        rollouts; 0 for a policy trained without the simulator) and by this evaluation."""
        return {"policy_version": self.version, "success_rate": self.rate.rate, "successes": self.rate.successes,
                "episodes": self.rate.n, "ci95": list(self.rate.interval),
                "sim_steps": {"training": training_sim_steps, "evaluation": self.sim_steps, "total": training_sim_steps + self.sim_steps}}


@dataclass
class Deployment:
    """How the loop measures a policy, the same for every iteration and control: export it to ONNX, publish it over
    the learner link, wait for the robot's ``eval_episodes`` episodes on the loop's evaluation seeds (its runtime,
    safety filter, the simulator's success flag), count them."""

    c: dict[str, Any]
    out: Path
    server: Any  # learning.server.learner.LearnerServer
    robot: Any  # RobotProcess | the ROS graph | None (robot.kind=external)
    rollouts: EpisodeStore
    check_images: np.ndarray  # the export's smoke-check inputs
    check_states: np.ndarray | None

    def evaluate(self, policy_folder: Path, version: str, label: str, seconds: dict[str, float],
                 extra: dict[str, Any] | None = None) -> Evaluation:
        from learning.policy import load_policy
        from learning.policy.export import export_policy

        c = self.c
        with timed(seconds, "export"):
            policy = load_policy(policy_folder)
            artifact = self.out / "artifacts" / version
            shutil.rmtree(artifact, ignore_errors=True)
            export_policy(policy, artifact, version, check_images=self.check_images, check_states=self.check_states, overwrite=True,
                          extra={**(extra or {}), "eval_episodes": c["eval_episodes"], "eval_seed": c["eval_seed"]})
            self.server.publish_policy(artifact)
        with timed(seconds, "deploy_eval"):
            idx = wait_for_rollouts(self.rollouts, version, c["eval_episodes"], self.robot, c["robot"]["timeout_s"], label)
        rows = [self.rollouts.row(i) for i in idx]
        rate = SuccessRate(sum(r["outcome"] == "success" for r in rows), len(rows))
        return Evaluation(policy, version, idx, rate, sum(int(r["length"]) for r in rows))


# ---------------------------------------------------------------------------------------------- imagination
def imagined_success(policy, wm_path: Path, frames: np.ndarray, instruction: str, c: dict[str, Any],
                     states: np.ndarray | None = None, reckoner=None) -> tuple[float, np.ndarray, list[np.ndarray]]:
    """The greedy policy from ``frames`` inside the world model: success rate, per-start success, imagined videos.
    A state-input policy starts from ``states`` (the frames' robot states), advanced as in GRPO (the world model's state
    head, or ``reckoner``)."""
    import torch

    from learning.rl.grpo import GRPOConfig, imagines_state
    from learning.rl.imagination import play
    from learning.world_model.env import WorldModelEnv

    g = GRPOConfig.from_dict(c["grpo"])
    env = WorldModelEnv(wm_path, num_inference_steps=g.num_inference_steps, reward_threshold=g.success_threshold,
                        horizon=g.horizon_chunks * policy.chunk_length, seed=c["seed"])
    head = states is not None and imagines_state(env, policy)
    videos = [[f] for f in frames]

    def act(obs: np.ndarray, st: np.ndarray | None, alive: np.ndarray) -> np.ndarray:
        return policy.act(obs, instruction, states=st).cpu().numpy()

    def keep(alive: np.ndarray, imagined: np.ndarray) -> None:
        for i in alive:
            videos[i].extend(imagined[i])

    with torch.no_grad():
        out = play(env, act, frames, instruction, g.horizon_chunks, g.success_threshold, states=states, head=head,
                   reckoner=reckoner, on_chunk=keep)
    return float(out.success.mean()), out.success, [np.stack(v) for v in videos]


# ---------------------------------------------------------------------------------------------- the loop
@dataclass
class Iteration:
    k: int
    policy_folder: Path  # the torch policy (save_pretrained folder)
    wm: Path  # the world model used for this iteration's GRPO (and judged on its rollouts)
    seconds: dict[str, float]
    grpo_history: list[dict[str, float]]


def check_config(c: dict[str, Any]) -> None:
    """Refuse a loop config that cannot work, naming the key, before anything is built."""
    if c["iterations"] < 0 or c["eval_episodes"] < 1:
        raise ValueError(f"iterations/eval_episodes: need iterations >= 0 and eval_episodes >= 1, got {c['iterations']}/{c['eval_episodes']}")
    if c["grpo_from"] not in ("sft", "last"):
        raise ValueError(f"grpo_from: {c['grpo_from']!r} is not 'sft' or 'last'")
    if c["grpo_starts"] not in ("first", "keyframes"):
        raise ValueError(f"grpo_starts: {c['grpo_starts']!r} is not 'first' or 'keyframes'")
    from learning.controls import check_controls

    check_controls(c)
    if c["robot"]["kind"] not in ("sim", "ros", "external"):
        raise ValueError(f"robot.kind: {c['robot']['kind']!r} is not 'sim', 'ros' or 'external'")
    if c["robot"]["kind"] == "ros" and (sim_kind(c["sim"]) != "maniskill" or c["robot"].get("overrides")):
        raise ValueError("robot.kind: 'ros' (the robot side as ROS 2 nodes: sim_arm_node + policy_node) runs the ManiSkill "
                         "simulator only and takes no robot.overrides (those are `wvl robot deploy` options; robot.kind=sim)")
    if sim_kind(c["sim"]) == "libero" and c["eval_seed"] + c["eval_episodes"] > 50:
        raise ValueError(f"eval_seed/eval_episodes: LIBERO has 50 fixed initial states per task; episodes "
                         f"{c['eval_seed']}..{c['eval_seed'] + c['eval_episodes'] - 1} do not fit (use preset=libero)")
    if c["world_model"].get("pretrained") == "required":
        raise ValueError("world_model.pretrained: this preset starts world model v0 from Cosmos-Predict2-2B-Video2World weights; "
                         "give their local folder (transformer/ + vae/): world_model.pretrained=<folder>")
    wm_size = (c["world_model"].get("model") or {}).get("image_size", 64)
    if wm_size != c["sim"]["image_size"]:
        raise ValueError(f"world_model.model.image_size ({wm_size}) differs from sim.image_size ({c['sim']['image_size']}): "
                         "the world model imagines the camera's frames, so they must match")


def run_loop(cfg: DictConfig | dict[str, Any]) -> LoopReport:
    c = _container(cfg)
    check_config(c)
    out = Path(c["out"])
    cache = Path(c["cache"])
    out.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    import torch

    if c.get("threads"):
        torch.set_num_threads(int(c["threads"]))
    report = LoopReport(out, c)
    t_setup: dict[str, float] = {}

    # ---- built once, cached: SANS demos, SFT policy, world model v0
    with timed(t_setup, "sans"):
        sans = ensure_sans(c, cache)
    from learning.controls import check_starts

    check_starts(c, sans)
    with timed(t_setup, "sft"):
        sft_folder = ensure_sft(c, sans, cache)
    from learning.policy import load_policy

    sft_policy = load_policy(sft_folder)
    # the state head imagines what the policy takes (unless the config names other features)
    c["world_model"]["model"] = {"state_features": list(sft_policy.state_features), **(c["world_model"].get("model") or {})}
    with timed(t_setup, "world_model_v0"):
        wm = ensure_world_model(c, sans, cache)
    with timed(t_setup, "success_classifier"):
        classifier = ensure_classifier(sans, cache, c["judge"]["classifier_steps"])
    report.notes.append("setup seconds (0 when cached): " + ", ".join(f"{k} {v:.0f}" for k, v in t_setup.items()))

    # ---- the learner link and the robot process
    from learning.server.learner import LearnerServer

    rollouts_root = out / "rollouts"
    if rollouts_root.exists():
        shutil.rmtree(rollouts_root)  # each run measures its own policies
    keys, key_dir = make_keys(out / "keys")
    server = LearnerServer(rollouts_root, c["link"]["endpoint"] if c["robot"]["kind"] == "external" else "tcp://127.0.0.1:*", keys)
    server.start()
    robot = None
    try:
        if c["robot"]["kind"] in ("sim", "ros"):
            robot_dir = out / "robot"
            shutil.rmtree(robot_dir, ignore_errors=True)
            robot_dir.mkdir(parents=True)
            robot = RobotProcess(c, server.endpoint, key_dir, robot_dir) if c["robot"]["kind"] == "sim" else ros_robot(c, server.endpoint, key_dir, robot_dir)
        else:
            log.info("waiting for the robot to connect to %s (robot id %s; keys in %s)", server.endpoint, ROBOT_ID, key_dir)

        from learning.rl.imagined_state import start_states

        rollouts = EpisodeStore(rollouts_root)
        instruction = sft_policy.default_instruction
        start_frames = np.stack([sans.frames(i)[0] for i in range(len(sans))])
        sft_features = sft_policy.state_features
        check_states = start_states(sans, range(min(8, len(sans))), sft_features) if sft_features else None
        deployment = Deployment(c, out, server, robot, rollouts, start_frames[:8], check_states)
        prev_policy = sft_folder
        for k in range(c["iterations"] + 1):
            seconds: dict[str, float] = {}
            history: list[dict[str, float]] = []
            if k == 0:
                policy_folder = sft_folder
            else:
                with timed(seconds, "refine_wm"):
                    wm = refine_world_model(c, wm, sans, rollouts, out / f"iter-{k}" / "world_model")
                with timed(seconds, "grpo"):
                    base = sft_folder if c["grpo_from"] == "sft" else prev_policy
                    policy_folder, history = run_grpo(c, base, wm, sans, rollouts, instruction, out / f"iter-{k}" / "grpo")
            # (c)-(e) export, push, the robot evaluates and ships the rollouts back
            ev = deployment.evaluate(policy_folder, f"loop-{k}", f"iteration {k}: robot evaluation", seconds, {"loop_iteration": k})
            # (f) measure: imagined success from the same first frames, WM alignment before refinement
            with timed(seconds, "wm_eval"):
                metrics = judge_world_model(c, ev.policy, wm, rollouts, ev.indices, instruction, out / f"iter-{k}", classifier)
            row = {
                "iteration": k, **ev.row(), "grpo_imagined_success": history[-1]["imagined_success"] if history else None,
                **metrics, "seconds": seconds, "world_model": str(wm), "policy": str(policy_folder),
            }
            report.add(row)
            print_table(f"World-VLA-Loop on {c['task']} (after iteration {k})", LoopReport.COLUMNS, report.table_rows())
            prev_policy = policy_folder
        if c.get("controls"):  # the same budget without the world model (learning/controls.py), measured like an iteration
            from learning.controls import run_controls

            run_controls(c, deployment, sft_folder, sans, instruction, report)
            print_table(f"World-VLA-Loop on {c['task']} (with the controls)", LoopReport.COLUMNS, report.table_rows())
    finally:
        if robot is not None:
            robot.stop()
        server.close()
    report.finish()
    console.print(f"report: {out / 'report.md'}")
    return report


def refine_world_model(c: dict[str, Any], wm: Path, sans: EpisodeStore, rollouts: EpisodeStore, out: Path) -> Path:
    """(a) fine-tune the world model from its last checkpoint on SANS + all rollouts so far (failures matter most)."""
    from learning.world_model.train import train_world_model

    wcfg = world_model_cfg(c, "refine")
    return Path(train_world_model({**wcfg, "out": str(out)}, [sans, rollouts], init_from=wm))


def run_grpo(c: dict[str, Any], base_policy: Path, wm: Path, sans: EpisodeStore, rollouts: EpisodeStore, instruction: str, out: Path):
    """(b) GRPO in imagination from ``base_policy``, starting from the SANS episodes' first frames (and robot
    states), or with ``grpo_starts: keyframes`` from every K-th frame of the SANS episodes and of the real rollouts
    so far; returns the new policy folder and the per-step log."""
    from learning.policy import load_policy
    from learning.rl.grpo import GRPOConfig, imagination_starts, train_grpo
    from learning.world_model.env import WorldModelEnv

    g = GRPOConfig.from_dict(c["grpo"])
    policy = load_policy(base_policy)
    env = WorldModelEnv(wm, num_inference_steps=g.num_inference_steps, reward_threshold=g.success_threshold,
                        horizon=g.horizon_chunks * policy.chunk_length, seed=g.seed)
    sources = [(sans, range(len(sans)))]
    if c["grpo_starts"] == "keyframes" and len(rollouts):
        sources.append((rollouts, range(len(rollouts))))
    frames, states, reckoner = imagination_starts(policy, sources, c["grpo_starts"])
    log.info("GRPO starts: %d (%s)", len(frames), c["grpo_starts"])
    res = train_grpo(policy, env, frames, instruction, g, out, start_states=states, reckoner=reckoner)
    return res.policy_folder, res.history


def judge_world_model(c: dict[str, Any], policy, wm: Path, rollouts: EpisodeStore, idx: list[int], instruction: str,
                      out: Path, classifier: Path) -> dict[str, Any]:
    """How wrong was the world model about this policy? Alignment on the fresh rollouts (replaying their real
    actions) and the greedy policy's imagined success from the same first frames, with side-by-side videos."""
    from learning.eval.world_model import evaluate_world_model
    from learning.rl.grpo import GRPOConfig, imagination_states

    g = GRPOConfig.from_dict(c["grpo"])
    n = min(len(idx), c["judge"]["episodes"])
    sel = idx[:n]
    metrics = evaluate_world_model(wm, rollouts, sel, classifier=classifier, num_inference_steps=g.num_inference_steps,
                                   reward_threshold=g.success_threshold, seed=c["seed"], video_dir=out / "wm_eval_videos", max_videos=2)
    frames = np.stack([rollouts.frames(i)[0] for i in sel])
    states, reckoner = imagination_states(policy, rollouts, sel)
    rate, per_start, videos = imagined_success(policy, wm, frames, instruction, c, states, reckoner)
    for j in range(min(c["judge"]["videos"], n)):
        real = rollouts.frames(sel[j])
        side_by_side(real, videos[j], out / "videos" / f"episode-{sel[j]:04d}-real_{rollouts.row(sel[j])['outcome']}"
                     f"-imagined_{'success' if per_start[j] else 'failure'}.mp4", fps=rollouts.row(sel[j])["fps"])
    # alignment per real class (success / near_success / failure) and its balanced accuracy: a policy that never
    # succeeds gives rollouts whose alignment only measures false positives, and "alignment" says so in its note
    return {"imagined_success": rate, "reward_alignment": metrics.get("reward_alignment"),
            "visual_alignment": metrics.get("visual_alignment"), "alignment": metrics["alignment"], "judged_episodes": n,
            "imagined_vs_real_agreement": float(np.mean([per_start[j] == (rollouts.row(sel[j])["outcome"] == "success") for j in range(n)]))}


def main(cfg: DictConfig, mode: str | None = None) -> int:
    run_loop(cfg)
    return 0
