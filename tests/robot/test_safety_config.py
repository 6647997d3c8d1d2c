"""One source of safety limits per rig (issue 18, item 15): the real arm's are `SafetyConfig`'s defaults (what
launch/params/deploy.yaml deploys with), the simulated rig's are robot/conf/robot.yaml's `safety` block, read by
everything that builds the simulated rig's filter; the box's frame is explicit and must match the arm's."""

import importlib.util
from dataclasses import fields
from pathlib import Path

import pytest

from robot.nodes.config import load_params_file
from robot.safety import SafetyConfig, SafetyFilter
from robot.sim import rollout
from robot.sim.rollout import sim_safety_config

ROOT = Path(__file__).resolve().parents[2]

# The simulated rig's effective limits, as an experiment measures policies behind them: must never change by accident.
SIM_LIMITS = dict(workspace_low=(-0.4, -0.4, 0.0), workspace_high=(0.4, 0.4, 0.5), workspace_frame="world", workspace_margin_m=0.0,
                  max_translation_m=0.1, max_rotation_rad=0.1, gripper_mode="binary", gripper_threshold=0.0,
                  startup_max_translation_m=0.05, startup_max_rotation_rad=0.1, startup_mode="ramp", ramp_steps=3,
                  watchdog_timeout_s=0.3, require_enabled=True)


def test_the_simulated_rig_keeps_its_limits_and_its_block_names_every_key():
    import yaml

    block = yaml.safe_load((ROOT / "robot" / "conf" / "robot.yaml").read_text())["safety"]
    assert set(block) == {f.name for f in fields(SafetyConfig)}  # no key falls back to the real arm's default
    cfg = sim_safety_config()
    assert {k: getattr(cfg, k) for k in SIM_LIMITS} == SIM_LIMITS


def test_a_sim_block_missing_a_key_is_refused(tmp_path, monkeypatch):
    conf = tmp_path / "robot.yaml"
    conf.write_text("safety:\n  max_translation_m: 0.1\n")
    monkeypatch.setattr(rollout, "ROBOT_CONF", conf)
    with pytest.raises(ValueError, match="every key.*workspace_frame"):
        sim_safety_config()


def test_the_real_arm_defaults_are_conservative_and_deploy_yaml_does_not_restate_them():
    real = SafetyConfig()
    assert real.workspace_frame == "base" and real.workspace_margin_m > 0 and real.startup_mode == "refuse"
    assert real.max_translation_m < SIM_LIMITS["max_translation_m"]
    deploy = load_params_file(ROOT / "launch" / "params" / "deploy.yaml")
    assert deploy["policy_node"].safety == real


def test_each_simulator_states_its_box_in_the_frame_its_arm_reports():
    from robot.sim.libero import LiberoArm, LiberoConfig
    from robot.sim.maniskill import ManiSkillConfig, SimArm

    maniskill = sim_safety_config(ManiSkillConfig.safety_overrides())
    assert maniskill.workspace_frame == SimArm(None).limits.pose_frame == "world"
    SafetyFilter(maniskill, SimArm(None).limits)
    libero = sim_safety_config(LiberoConfig.safety_overrides())
    assert libero.workspace_frame == LiberoArm(None).limits.pose_frame == "base"
    SafetyFilter(libero, LiberoArm(None).limits)
    with pytest.raises(ValueError, match="workspace_frame"):
        SafetyFilter(maniskill, LiberoArm(None).limits)


def test_wvl_robot_picks_the_rigs_source():
    from omegaconf import OmegaConf

    from learning.cli import compose
    from robot.main import rig_safety_config

    def cfg(*overrides):
        return OmegaConf.to_container(compose("robot/robot", list(overrides)), resolve=True)

    assert rig_safety_config(cfg("rig=sim")) == sim_safety_config()
    assert rig_safety_config(cfg("rig=dry")) == sim_safety_config()  # the dry rig stands in for the simulated one
    assert rig_safety_config(cfg("rig=custom")) == SafetyConfig()  # a real arm: the real arm's defaults
    assert rig_safety_config(cfg("rig=custom", "+custom_safety.max_translation_m=0.01")).max_translation_m == 0.01
    assert rig_safety_config(cfg("rig=sim", "sim.kind=libero")).workspace_frame == "base"


def test_the_control_loop_bench_uses_the_simulated_rigs_limits():
    spec = importlib.util.spec_from_file_location("bench_control_loop", ROOT / "bench" / "control_loop.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.bench_safety() == sim_safety_config()
    assert bench.bench_safety().max_translation_m == 0.1  # not the real arm's 0.02, which would clip the simulator's step
