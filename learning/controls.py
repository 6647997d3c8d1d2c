"""The loop's controls (issue 20): what the same budget buys from the SFT policy without the world model.

    wvl loop controls=[oracle,filtered_bc]

After the loop's iterations each control makes a policy from the SFT policy and is measured exactly like an
iteration (`learning.loop.Deployment.evaluate`: ONNX export, published over the link, the robot's
``eval_episodes`` episodes on the loop's evaluation seeds, the simulator's success flag); it is an extra row of
report.md / report.json with its wall time and the simulator steps it consumed.

- ``oracle``: GRPO in the real simulator -- `train_grpo` with the loop's ``grpo`` config (steps, group size,
  temperature, horizon, lr) from the SANS episodes' first frames, as the loop's GRPO, but every trajectory is played
  on the simulated robot through the evaluation's rollout path and rewarded by its success flag
  (`learning.rl.oracle.SimulatorRollouts`). The upper bound of imagination with this policy and budget; it costs
  every training rollout's control steps.
- ``filtered_bc``: rejection-sampling fine-tuning -- SFT from the SFT policy (``sft.init_from``) on every SANS
  success plus every successful real rollout the loop's iterations collected (``sft.extra_stores``), the loop's
  ``sft`` config (same steps and schedule); no world model, no RL. Every SANS success, not only the SFT's
  ``max_episodes``: the loop's world model and GRPO starts use the whole SANS store, so this control gets the same
  real data the loop had.

Every control's policy is trained before any is evaluated: the rollouts store then holds only the loop's own
episodes, which is what filtered BC trains on.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from learning.data.store import EpisodeStore
from robot.sim.registry import sim_kind

log = logging.getLogger(__name__)

CONTROLS = ("oracle", "filtered_bc")


def check_controls(c: dict[str, Any]) -> None:
    """Refuse an unknown or repeated control, or an oracle without a simulator it can replay the SANS scenes in."""
    names = c.get("controls") or []
    if isinstance(names, str) or not isinstance(names, (list, tuple)):
        raise ValueError(f"controls: a list of names from {list(CONTROLS)} (e.g. controls=[oracle,filtered_bc]), got {names!r}")
    bad = [n for n in names if n not in CONTROLS]
    if bad:
        raise ValueError(f"controls: {bad} {'is' if len(bad) == 1 else 'are'} not known; choose from {list(CONTROLS)} "
                         "(e.g. controls=[oracle,filtered_bc])")
    if len(set(names)) != len(names):
        raise ValueError(f"controls: {list(names)} names a control twice")
    if "oracle" in names and (sim_kind(c["sim"]) != "maniskill" or c["robot"]["kind"] == "external"):
        raise ValueError("controls: 'oracle' plays GRPO's rollouts on the simulated robot: it needs sim=maniskill and "
                         "robot.kind sim or ros")


def check_starts(c: dict[str, Any], sans: EpisodeStore) -> None:
    """Before the iterations: the oracle replays the SANS episodes' scenes, so each needs its simulator seed."""
    if "oracle" in (c.get("controls") or []):
        from learning.rl.oracle import episode_seeds

        episode_seeds(sans, range(len(sans)), "controls: 'oracle'")


@dataclass
class ControlPolicy:
    name: str
    folder: Path
    seconds: dict[str, float] = field(default_factory=dict)
    training_sim_steps: int = 0
    info: dict[str, Any] = field(default_factory=dict)


def train_oracle(c: dict[str, Any], sft_folder: Path, sans: EpisodeStore, instruction: str, out: Path) -> ControlPolicy:
    """GRPO from the SFT policy with trajectories and rewards from the simulated robot, on the SANS scenes."""
    from learning.policy import load_policy
    from learning.rl.grpo import GRPOConfig
    from learning.rl.oracle import grpo_in_simulator

    g = GRPOConfig.from_dict(c["grpo"])
    res, collect = grpo_in_simulator(load_policy(sft_folder), sans, range(len(sans)), instruction, g, out, c["sim"], c["task"],
                                     "controls: 'oracle'", workers=int(c["oracle_workers"]))
    log.info("oracle: %d simulator episodes, %d control steps", collect.episodes, collect.sim_steps)
    return ControlPolicy("oracle", res.policy_folder, training_sim_steps=collect.sim_steps,
                         info={"training_episodes": collect.episodes, "grpo_steps": g.steps,
                               "grpo_simulated_success": res.history[-1]["imagined_success"] if res.history else None})


def train_filtered_bc(c: dict[str, Any], sft_folder: Path, sans: EpisodeStore, rollouts: EpisodeStore, out: Path) -> ControlPolicy:
    """SFT from the SFT policy on the SANS successes + the loop's successful real rollouts."""
    from learning.policy.sft import train_sft

    rollouts.refresh()
    foreign = {r["policy_version"] for r in rollouts.rows if not str(r["policy_version"]).startswith("loop-")}
    if foreign:  # run_controls trains every control before evaluating any
        raise RuntimeError(f"filtered_bc: the rollouts store holds episodes of {sorted(foreign)}, not only the loop's")
    cfg = {**c["sft"], "store": str(sans.root), "out": str(out), "outcomes": ["success"], "max_episodes": None,
           "init_from": str(sft_folder), "extra_stores": [str(rollouts.root)], "resume": False}
    folder = train_sft(cfg, sans)
    summary = json.loads((out / "sft_summary.json").read_text())
    real = sum(len(v) for v in summary["extra_train_episodes"].values())
    log.info("filtered BC: %d SANS successes + %d real successful rollouts, %d steps", len(summary["train_episodes"]), real, summary["steps"])
    return ControlPolicy("filtered_bc", Path(folder), info={"sans_successes": len(summary["train_episodes"]),
                                                           "real_successes": real, "sft_steps": summary["steps"]})


def run_controls(c: dict[str, Any], deployment, sft_folder: Path, sans: EpisodeStore, instruction: str, report) -> list[dict[str, Any]]:
    """Train every control in ``c["controls"]`` (in order), then measure each like an iteration; rows go to ``report``."""
    from learning.loop import timed

    trained = []
    for name in c["controls"]:
        out = deployment.out / "controls" / name
        seconds: dict[str, float] = {}
        log.info("control %s: training from the SFT policy %s", name, sft_folder)
        with timed(seconds, "train"):
            if name == "oracle":
                ctl = train_oracle(c, sft_folder, sans, instruction, out / "grpo")
            else:
                ctl = train_filtered_bc(c, sft_folder, sans, deployment.rollouts, out / "sft")
        ctl.seconds = seconds
        trained.append(ctl)
    rows = []
    for ctl in trained:
        version = f"control-{ctl.name}"
        ev = deployment.evaluate(ctl.folder, version, f"control {ctl.name}: robot evaluation", ctl.seconds, {"control": ctl.name})
        row = {"control": ctl.name, **ev.row(ctl.training_sim_steps), **ctl.info, "seconds": ctl.seconds, "policy": str(ctl.folder)}
        report.add_control(row)
        rows.append(row)
    return rows
