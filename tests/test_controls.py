"""The loop's controls (learning/controls.py): config checks and their report rows (the end-to-end run: test_loop.py)."""

import json

import pytest

from learning.controls import check_controls, check_starts
from learning.data.store import EpisodeStore
from learning.eval.stats import newcombe_difference
from learning.report import LoopReport
from tests.factories import random_episode


def cfg(controls, sim="maniskill", robot="sim"):
    return {"controls": controls, "sim": {"kind": sim}, "robot": {"kind": robot}}


def test_unknown_repeated_or_misplaced_controls_are_refused_by_name():
    check_controls(cfg([])), check_controls(cfg(["oracle", "filtered_bc"])), check_controls(cfg(["filtered_bc"], robot="external"))
    with pytest.raises(ValueError, match=r"controls: \['bc'\] is not known; choose from \['oracle', 'filtered_bc'\]"):
        check_controls(cfg(["oracle", "bc"]))
    with pytest.raises(ValueError, match="names a control twice"):
        check_controls(cfg(["oracle", "oracle"]))
    with pytest.raises(ValueError, match="a list of names"):
        check_controls(cfg("oracle"))
    for bad in (cfg(["oracle"], sim="libero"), cfg(["oracle"], robot="external")):
        with pytest.raises(ValueError, match="'oracle' plays GRPO's rollouts on the simulated robot"):
            check_controls(bad)


def test_the_oracle_needs_a_simulator_seed_for_every_sans_episode(tmp_path):
    store = EpisodeStore(tmp_path / "s")
    store.append(random_episode(T=6, H=16, W=16, seed=3))
    check_starts(cfg(["oracle"]), store)
    unseeded = random_episode(T=6, H=16, W=16, seed=4)
    unseeded.info.pop("seed")  # e.g. a real rig's teleoperated demo
    store.append(unseeded)
    with pytest.raises(ValueError, match="controls: 'oracle': episodes of .* without info.seed"):
        check_starts(cfg(["oracle"]), store)
    check_starts(cfg(["filtered_bc"]), store)


def test_control_rows_are_compared_with_the_sft_policy_and_have_no_world_model_columns(tmp_path):
    report = LoopReport(tmp_path, {})
    sim = {"training": 0, "evaluation": 120, "total": 120}
    report.add({"iteration": 0, "policy_version": "loop-0", "success_rate": 0.3, "successes": 3, "episodes": 10,
                "ci95": [0.1, 0.6], "sim_steps": sim, "imagined_success": 0.5, "seconds": {"export": 1.0}})
    report.add({"iteration": 1, "policy_version": "loop-1", "success_rate": 0.4, "successes": 4, "episodes": 10,
                "ci95": [0.2, 0.7], "sim_steps": dict(sim), "imagined_success": 0.5, "seconds": {"grpo": 2.0}})
    report.add_control({"control": "oracle", "policy_version": "control-oracle", "success_rate": 0.7, "successes": 7, "episodes": 10,
                        "ci95": [0.4, 0.9], "sim_steps": {"training": 900, "evaluation": 110, "total": 1010},
                        "seconds": {"train": 30.0, "export": 1.0, "deploy_eval": 9.0}})
    data = json.loads((tmp_path / "report.json").read_text())
    assert [r["sim_steps"]["cumulative"] for r in data["iterations"]] == [120, 240]
    (ctl,) = data["controls"]
    assert ctl["vs_sft"]["difference"] == pytest.approx(newcombe_difference(3, 10, 7, 10)[0])
    md = (tmp_path / "report.md").read_text()
    assert "| oracle | control-oracle | 70.0% [40.0%, 90.0%] | 10 | - | - | - | - | 1010 (900 + 110) | 40 |" in md
    assert "| 1 | loop-1 | 40.0% [20.0%, 70.0%] | 10 | 50.0% | - | - | - | 120 | 2 |" in md
    assert "- oracle: +40.0 points" in md and "| oracle | 9 | 1 | 0 | 30 |" in md  # wall time per phase
