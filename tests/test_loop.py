"""The co-evolution loop end to end (quick preset): real robot process, real CURVE sockets, real simulator."""

import json
import subprocess
import sys

import pytest

pytest.importorskip("mani_skill")

from learning.data.store import EpisodeStore  # noqa: E402
from learning.eval.stats import newcombe_difference, wilson_interval  # noqa: E402
from robot.policy_artifact import read_artifact  # noqa: E402

pytestmark = [pytest.mark.sim, pytest.mark.slow]


def test_quick_loop_runs_end_to_end_and_reports_what_happened(tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    # with both controls (learning/controls.py): they add ~20 s to the quick preset
    r = subprocess.run([sys.executable, "-m", "learning.cli", "loop", "preset=quick", f"out={out}", f"cache={cache}",
                        "controls=[oracle,filtered_bc]"], capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    its = report["iterations"]
    assert [it["iteration"] for it in its] == [0, 1]
    rollouts = EpisodeStore(out / "rollouts", create=False)
    for it in its:
        # every number in the report comes from the rollouts the robot process shipped back over the link
        rows = [rollouts.row(i) for i in rollouts.indices(policy_version=it["policy_version"])]
        assert len(rows) == it["episodes"] == 3
        wins = sum(row["outcome"] == "success" for row in rows)
        assert it["successes"] == wins and it["success_rate"] == wins / 3
        assert it["ci95"] == pytest.approx(list(wilson_interval(wins, 3)))
        assert all(row["source"] == "policy" and row["loop_iteration"] == it["iteration"] for row in rows)
        assert all(row["outcome"] in ("success", "failure") for row in rows)  # labelled by the simulator
        assert it["sim_steps"]["training"] == 0 and it["sim_steps"]["evaluation"] == sum(row["length"] for row in rows) > 0
        assert read_artifact(out / "artifacts" / it["policy_version"]).policy_version == it["policy_version"]
        assert set(it["seconds"]) >= {"export", "deploy_eval", "wm_eval"}
        assert it["reward_alignment"] is not None and 0.0 <= it["imagined_success"] <= 1.0
        al = it["alignment"]  # per real class of the judged rollouts; an empty class is null with n = 0
        assert sum(al["counts"].values()) == it["judged_episodes"] and al["real_successes"] <= it["successes"]
        if it["judged_episodes"] == it["episodes"]:
            assert al["real_successes"] == it["successes"]
        assert all((s["n"] == 0) == (s["alignment"] is None) for s in al["reward"]["per_class"].values())
        assert (al["note"] is None) == (al["real_successes"] > 0)
    assert set(its[1]["seconds"]) >= {"refine_wm", "grpo"} and its[1]["grpo_imagined_success"] is not None
    assert its[1]["sim_steps"]["cumulative"] == its[0]["sim_steps"]["evaluation"] + its[1]["sim_steps"]["evaluation"]
    check_controls(report, rollouts, out)
    # the robot really ran each version through its runtime, swapped between episodes
    robot_log = (out / "robot" / "robot.log").read_text()
    assert "policy loop-0 -> 3 evaluation episodes" in robot_log and "policy loop-1 -> 3 evaluation episodes" in robot_log
    assert (out / "report.md").exists() and (out / "success.png").exists()
    assert "reward al. S | reward al. NS | reward al. F | reward bal. acc." in (out / "report.md").read_text()
    assert list((out / "iter-1" / "videos").glob("*.mp4"))
    # the learner only accepted the robot's CURVE key (keys made for this run)
    assert (out / "keys" / "robot-1.key").exists() and (out / "keys" / "learner.key_secret").exists()
    # a rerun reuses the cached SANS demos, SFT policy and world model v0
    assert len(list(cache.glob("sans-*"))) == 1 and len(list(cache.glob("sft-*"))) == 1
    # the world model's state head imagines exactly the SFT policy's state input (GRPO feeds it to the policy)
    from learning.policy import load_policy
    from learning.world_model.model import load_world_model

    features = load_policy(its[0]["policy"]).state_features
    assert features and all(load_world_model(it["world_model"]).wm_config.state_features == features for it in its)


def check_controls(report, rollouts, out):
    """The control rows: measured on the robot like the iterations, their cost from what the run did."""
    ctl = {r["control"]: r for r in report["controls"]}
    assert list(ctl) == ["oracle", "filtered_bc"]
    sft = report["iterations"][0]
    for name, r in ctl.items():
        rows = [rollouts.row(i) for i in rollouts.indices(policy_version=f"control-{name}")]
        assert len(rows) == r["episodes"] == 3 and all(row["source"] == "policy" and row["loop_iteration"] is None for row in rows)
        wins = sum(row["outcome"] == "success" for row in rows)
        assert r["successes"] == wins and r["ci95"] == pytest.approx(list(wilson_interval(wins, 3)))
        assert r["vs_sft"]["difference"] == pytest.approx(newcombe_difference(sft["successes"], 3, wins, 3)[0])
        s = r["sim_steps"]
        assert s["evaluation"] == sum(row["length"] for row in rows) and s["total"] == s["training"] + s["evaluation"]
        assert set(r["seconds"]) == {"train", "export", "deploy_eval"}
        assert read_artifact(out / "artifacts" / f"control-{name}").extra["control"] == name
    # the oracle: every GRPO rollout played in the simulator (quick: 1 step x 2 starts x 2 = 4, <= 2 chunks of 8 + the close)
    cost = json.loads((out / "controls" / "oracle" / "grpo" / "simulator_cost.json").read_text())
    assert ctl["oracle"]["training_episodes"] == cost["episodes"] == 4
    assert 0 < ctl["oracle"]["sim_steps"]["training"] == cost["sim_steps"] <= 4 * 17
    assert len((out / "controls" / "oracle" / "grpo" / "grpo_log.jsonl").read_text().splitlines()) == 1  # the loop's grpo.steps
    # filtered BC: the SFT policy fine-tuned, the loop's sft steps, on every SANS success + the loop's real successes
    summary = json.loads((out / "controls" / "filtered_bc" / "sft" / "sft_summary.json").read_text())
    real = [i for i in rollouts.indices(outcomes=("success",)) if rollouts.row(i)["policy_version"].startswith("loop-")]
    assert list(summary["extra_train_episodes"].values()) == [real] and ctl["filtered_bc"]["real_successes"] == len(real)
    assert summary["steps"] == 20 and summary["init_from"] == report["iterations"][0]["policy"]
    assert ctl["filtered_bc"]["sim_steps"]["training"] == 0
    md = (out / "report.md").read_text()
    assert "| oracle | control-oracle |" in md and "| - | - | - | - |" in md and "Controls vs iteration 0" in md
    robot_log = (out / "robot" / "robot.log").read_text()
    assert "policy control-oracle -> 3 evaluation episodes" in robot_log and "policy control-filtered_bc -> 3" in robot_log


def test_loop_refuses_a_bad_config(tmp_path):
    r = subprocess.run([sys.executable, "-m", "learning.cli", "loop", "preset=quick", f"out={tmp_path}", "grpo_from=best"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "grpo_from" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "learning.cli", "loop", "preset=quick", f"out={tmp_path}", "sim.image_size=48"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "world_model.model.image_size" in r.stderr
    r = subprocess.run([sys.executable, "-m", "learning.cli", "loop", "preset=quick", f"out={tmp_path}", "controls=[oracle,bc]"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "controls: ['bc'] is not known" in r.stderr and "Traceback" not in r.stderr
    # the paper preset needs the pretrained Cosmos weights' folder, and says so before building anything
    r = subprocess.run([sys.executable, "-m", "learning.cli", "loop", "preset=paper", f"out={tmp_path}", f"cache={tmp_path}"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "world_model.pretrained=<folder>" in r.stderr
    # the robot side through ROS 2 runs the ManiSkill simulator with its own parameters, not `wvl robot deploy` overrides
    r = subprocess.run([sys.executable, "-m", "learning.cli", "loop", "preset=quick", f"out={tmp_path}", "robot.kind=ros",
                        "robot.overrides=['safety.max_translation_m=0.05']"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "robot.kind: 'ros'" in r.stderr and "Traceback" not in r.stderr
    # a real rig's SANS store that is not there
    r = subprocess.run([sys.executable, "-m", "learning.cli", "loop", "preset=quick", f"out={tmp_path}", f"cache={tmp_path}",
                        f"sans.store={tmp_path / 'no-such-store'}"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no-such-store" in r.stderr
