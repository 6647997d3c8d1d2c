"""`wvl loop preset=quick robot.kind=ros`: the loop's robot side as ROS 2 node processes (sim_arm_node on ManiSkill +
policy_node in deploy mode) on a private loopback domain, end to end; then the same preset with the in-process
robot (`robot.kind=sim`, `wvl robot deploy`) from the same cache: both ship the same rollouts, step for step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mani_skill")

from learning.data.store import EpisodeStore  # noqa: E402
from learning.eval.stats import wilson_interval  # noqa: E402
from robot.ros_env import PROFILE, inet_sockets, outside_loopback  # noqa: E402

pytestmark = [pytest.mark.sim, pytest.mark.slow, pytest.mark.timeout(900)]


def _node_pids(marker: str) -> list[int]:
    """Processes running a robot.nodes module whose command line names ``marker`` (this run's parameter file)."""
    pids = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(c.startswith(b"robot.nodes.") for c in cmd) and any(marker.encode() in c for c in cmd):
            pids.append(int(p.name))
    return pids


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(x.decode(errors="replace").split("=", 1) for x in raw if b"=" in x)


def _loop(out: Path, cache: Path, kind: str, watch: bool = False) -> tuple[float, dict]:
    """Run the quick preset; with ``watch``, check the ROS 2 node processes' environment and sockets while they run."""
    cmd = [sys.executable, "-m", "learning.cli", "loop", "preset=quick", f"robot.kind={kind}", f"out={out}", f"cache={cache}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    seen: dict[int, dict] = {}
    t0 = time.monotonic()
    with open(out.parent / f"{kind}.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            while proc.poll() is None:
                if time.monotonic() - t0 > 600:
                    raise TimeoutError(f"wvl loop robot.kind={kind}: still running after 600 s")
                for pid in _node_pids(str(out / "robot" / "sim_deploy.yaml")) if watch else []:
                    try:
                        socks, e = inet_sockets(pid), _environ(pid)
                    except OSError:  # it ended while we looked
                        continue
                    seen.setdefault(pid, {"env": e, "sockets": 0})
                    assert not outside_loopback(socks), f"node pid {pid}: sockets outside loopback: {outside_loopback(socks)}"
                    seen[pid]["sockets"] += len(socks)
                time.sleep(0.5)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = (out.parent / f"{kind}.log").read_text(errors="replace")
    assert proc.returncode == 0, text[-3000:]
    return time.monotonic() - t0, seen


def _by_scene(store: EpisodeStore) -> dict:
    return {(store.row(i)["policy_version"], store.read(i).info["seed"]): store.read(i) for i in range(len(store))}


def test_quick_loop_through_ros2_nodes_ships_the_same_rollouts_as_the_in_process_robot(tmp_path):
    cache = tmp_path / "cache"
    (tmp_path / "ros").mkdir()
    (tmp_path / "sim").mkdir()
    ros_out, sim_out = tmp_path / "ros" / "out", tmp_path / "sim" / "out"
    ros_s, seen = _loop(ros_out, cache, "ros", watch=True)

    # the robot side ran as the two node processes, each on the loopback-only private domain
    assert len(seen) == 2, seen
    for pid, s in seen.items():
        e = s["env"]
        assert e["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST" and e["FASTRTPS_DEFAULT_PROFILES_FILE"] == str(PROFILE), e
        assert 1 <= int(e["ROS_DOMAIN_ID"]) <= 101 and s["sockets"] > 0
    assert len({s["env"]["ROS_DOMAIN_ID"] for s in seen.values()}) == 1
    assert not _node_pids(str(ros_out / "robot" / "sim_deploy.yaml")), "node processes left running after the loop"

    report = json.loads((ros_out / "report.json").read_text())
    its = report["iterations"]
    assert [it["iteration"] for it in its] == [0, 1]
    rollouts = EpisodeStore(ros_out / "rollouts", create=False)
    for it in its:  # every number in the report comes from the rollouts the ROS 2 graph shipped over the link
        idx = rollouts.indices(policy_version=it["policy_version"])
        rows = [rollouts.row(i) for i in idx]
        assert len(rows) == it["episodes"] == 3
        wins = sum(r["outcome"] == "success" for r in rows)
        assert it["successes"] == wins and it["ci95"] == pytest.approx(list(wilson_interval(wins, 3)))
        assert all(r["source"] == "policy" and r["loop_iteration"] == it["iteration"] and r["outcome"] in ("success", "failure") for r in rows)
        eps = [rollouts.read(i) for i in idx]
        assert all(ep.rig == "ros2" and ep.info["evaluation"] is True for ep in eps)
        assert sorted(ep.info["seed"] for ep in eps)[0] >= 2000000  # eval_seed + i, solved-at-reset scenes replaced by + 3
    logs = ros_out / "robot"
    node_log = (logs / "policy_node.log").read_text()
    assert "policy loop-0 -> 3 evaluation episodes" in node_log and "policy loop-1 -> 3 evaluation episodes" in node_log
    assert "timed out (lockstep not held" not in node_log, node_log[-2000:]
    assert "reset to seed" in (logs / "sim_arm_node.log").read_text()
    assert (ros_out / "report.md").exists()

    # the in-process robot (`wvl robot deploy`) from the same cache: the same policies on the same scenes
    sim_s, _ = _loop(sim_out, cache, "sim")
    ros_eps, sim_eps = _by_scene(rollouts), _by_scene(EpisodeStore(sim_out / "rollouts", create=False))
    assert sorted(ros_eps) == sorted(sim_eps), (sorted(ros_eps), sorted(sim_eps))
    for k, r in ros_eps.items():
        s = sim_eps[k]
        assert (r.outcome, len(r), r.loop_iteration, r.policy_version) == (s.outcome, len(s), s.loop_iteration, s.policy_version), k
        np.testing.assert_array_equal(r.rewards, s.rewards)
        np.testing.assert_allclose(r.actions, s.actions, atol=1e-6, err_msg=str(k))
        np.testing.assert_allclose(r.ee_pose, s.ee_pose, atol=1e-6, err_msg=str(k))
        np.testing.assert_array_equal(r.images["front"], s.images["front"], err_msg=str(k))
        assert set(r.info) == set(s.info)
    print(f"quick preset: robot.kind=ros {ros_s:.0f} s (from nothing), robot.kind=sim {sim_s:.0f} s (cached); "
          f"{len(ros_eps)} rollouts equal step for step")
