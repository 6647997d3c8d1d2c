"""ROS 2 node processes started and stopped by PID, and the one table of nodes the launch files and tests share.

rclpy-free: a `RosGraph` starts ``python -m robot.nodes.<module> --ros-args -r __node:=<name> --params-file <yaml>
[-p key:=value ...]`` processes in the loopback-only environment of `robot.ros_env` (one private domain per
graph), each with its own log file, and stops them all (SIGINT, then SIGTERM, then SIGKILL to the process
group, each wait bounded) however the caller leaves. The graph tests, ``bench/ros2.py`` and
``wvl loop robot.kind=ros`` use it; a rig uses ``ros2 launch launch/<name>.launch.py`` (which reads `LAUNCHES`).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

from robot.ros_env import ros_env

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
PARAMS_DIR = ROOT / "launch" / "params"

# node name -> module under robot.nodes (the executable: python -m robot.nodes.<module>)
NODES: dict[str, str] = {
    "camera_node": "camera_node",
    "teleop_node": "teleop_node",
    "collector_node": "collector_node",
    "policy_node": "policy_node",
    "sim_arm_node": "sim_arm_node",
}

# launch file (launch/<name>.launch.py, parameters launch/params/<name>.yaml) -> the nodes it starts, in order
LAUNCHES: dict[str, tuple[str, ...]] = {
    "collect": ("camera_node", "teleop_node", "collector_node"),
    "deploy": ("camera_node", "policy_node"),
    "sim_deploy": ("sim_arm_node", "policy_node"),
}


def params_file(launch: str) -> Path:
    if launch not in LAUNCHES:
        raise ValueError(f"launch: {launch!r} is not one of {sorted(LAUNCHES)}")
    return PARAMS_DIR / f"{launch}.yaml"


def node_command(node: str, params: str | os.PathLike | None = None, overrides: Mapping[str, object] | None = None,
                 python: str = sys.executable) -> list[str]:
    """The command line of one node process (what the launch files run too)."""
    if node not in NODES:
        raise ValueError(f"node: {node!r} is not one of {sorted(NODES)}")
    cmd = [python, "-m", f"robot.nodes.{NODES[node]}", "--ros-args", "-r", f"__node:={node}"]
    if params is not None:
        cmd += ["--params-file", str(params)]
    for k, v in (overrides or {}).items():
        cmd += ["-p", f"{k}:={_param_value(v)}"]
    return cmd


def _param_value(v: object) -> str:
    """A ``-p name:=value`` value in ROS's YAML syntax (strings that look like numbers stay strings)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_param_value(x) for x in v) + "]"
    if isinstance(v, str):
        return "'" + v.replace("'", "''") + "'"
    return repr(v)


@dataclass
class NodeProcess:
    name: str
    proc: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout_s: float = 5.0) -> int | None:
        """SIGINT (rclpy shuts down, the node's close() runs), then SIGTERM, then SIGKILL to the process group."""
        for sig, wait in ((signal.SIGINT, timeout_s), (signal.SIGTERM, 2.0), (signal.SIGKILL, 2.0)):
            if self.proc.poll() is not None:
                break
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                log.warning("node %s (pid %d) did not stop on %s within %.0f s", self.name, self.proc.pid, sig.name, wait)
        return self.proc.poll()


class RosGraph:
    """Node processes on one private DDS domain; a context manager that always stops them."""

    def __init__(self, domain_id: int, work: str | os.PathLike, cwd: str | os.PathLike | None = None,
                 extra_env: Mapping[str, str] | None = None) -> None:
        self.domain_id, self.work = int(domain_id), Path(work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.cwd = Path(cwd) if cwd is not None else ROOT
        self.env = ros_env(self.domain_id, self.work / "ros_log")
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), self.env.get("PYTHONPATH", "")) if p)
        self.env.update(extra_env or {})
        self.nodes: dict[str, NodeProcess] = {}

    def start(self, node: str, params: str | os.PathLike | None = None, overrides: Mapping[str, object] | None = None,
              name: str | None = None, wrap: Sequence[str] = ()) -> NodeProcess:
        """Start ``node`` (``wrap``: a command prefix, e.g. strace) with its log in ``<work>/<name>.log``."""
        name = name or node
        if name in self.nodes and self.nodes[name].alive():
            raise RuntimeError(f"node {name} already runs (pid {self.nodes[name].pid})")
        cmd = [*wrap, *node_command(node, params, overrides)]
        if name != node:
            cmd[cmd.index(f"__node:={node}")] = f"__node:={name}"
        log_path = self.work / f"{name}.log"
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd, start_new_session=True)
        self.nodes[name] = NodeProcess(name, proc, log_path)
        log.info("started %s (pid %d) on ROS domain %d: %s", name, proc.pid, self.domain_id, " ".join(cmd))
        return self.nodes[name]

    def check_alive(self) -> None:
        for n in self.nodes.values():
            if not n.alive():
                tail = "\n".join(n.log_text().splitlines()[-20:])
                raise RuntimeError(f"node {n.name} exited with code {n.proc.returncode}; last lines of {n.log_path}:\n{tail}")

    def wait_for(self, condition: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.05) -> None:
        """Poll ``condition`` until true; a node that dies or the deadline raises with the logs' tails."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            self.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not within {timeout_s:.0f} s\n" + self.tails())
            time.sleep(poll_s)

    def wait_log(self, name: str, text: str, timeout_s: float) -> None:
        self.wait_for(lambda: text in self.nodes[name].log_text(), timeout_s, f"{name} log line {text!r}")

    def tails(self, lines: int = 15) -> str:
        return "\n".join(f"--- {n.name} ({n.log_path}):\n" + "\n".join(n.log_text().splitlines()[-lines:]) for n in self.nodes.values())

    def stop(self, name: str | None = None, timeout_s: float = 5.0) -> None:
        for n in ([self.nodes[name]] if name else reversed(list(self.nodes.values()))):
            n.stop(timeout_s)

    def __enter__(self) -> "RosGraph":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def launch_description(launch: str):
    """The ``ros2 launch`` description of ``launch`` (launch/<launch>.launch.py calls this): the nodes of
    `LAUNCHES`, each as `node_command` with the ``params`` argument's file (validated by
    `robot.nodes.config.load_params_file` before anything starts). ``use_realsense_ros:=true`` leaves our camera
    node out (realsense2_camera publishes the images). Imports ``launch`` (ROS 2's, not installable from PyPI)."""
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
    from launch.conditions import UnlessCondition
    from launch.substitutions import LaunchConfiguration

    params = LaunchConfiguration("params")

    def validate(context):
        from robot.nodes.config import load_params_file

        load_params_file(params.perform(context))  # a bad key stops the launch here
        return []

    actions = [DeclareLaunchArgument("params", default_value=str(params_file(launch))),
               DeclareLaunchArgument("use_realsense_ros", default_value="false"),
               OpaqueFunction(function=validate)]
    for node in LAUNCHES[launch]:
        kw = {"condition": UnlessCondition(LaunchConfiguration("use_realsense_ros"))} if node == "camera_node" else {}
        actions.append(ExecuteProcess(cmd=[*node_command(node), "--params-file", params], name=node, output="screen", **kw))
    return LaunchDescription(actions)


# ---------------------------------------------------------------------------------------------- the loop's robot side
def _ros_typed(defaults: Mapping[str, object], values: Mapping[str, object]) -> dict[str, object]:
    """``values`` (dotted names) with ints turned into floats where the parameter is declared a double: rclpy refuses
    an integer for a double parameter (``1`` for ``max_idle_s``)."""
    out: dict[str, object] = {}
    for k, v in values.items():
        d = defaults.get(k)
        if isinstance(d, float) and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        elif isinstance(d, list) and d and isinstance(d[0], float) and isinstance(v, (list, tuple)):
            v = [float(x) if isinstance(x, int) and not isinstance(x, bool) else x for x in v]
        out[k] = list(v) if isinstance(v, tuple) else v
    return out


def sim_deploy_params(work: str | os.PathLike, *, sim: Mapping[str, object], endpoint: str, secret_key: str | os.PathLike,
                      learner_key: str | os.PathLike, robot_id: str, episodes: int, eval_seed: int, max_steps: int) -> Path:
    """``<work>/sim_deploy.yaml``: launch/params/sim_deploy.yaml with the nodes set for `wvl robot deploy` over ROS 2 --
    sim_arm_node on ManiSkill (``sim``: ManiSkillConfig fields) stepping once per command (lockstep with the policy,
    as in-process), policy_node in ``mode: deploy`` on the learner link (CURVE keys), with the simulated rig's limits
    (robot/conf/robot.yaml ``safety``, `robot.sim.rollout.sim_safety_config`), labelled by the driver's success flag.
    Validated by `robot.nodes.config.load_params_file` before any node starts."""
    import json

    import yaml

    from robot.nodes.config import PolicyNodeConfig, SimArmNodeConfig, _nest, load_params_file, parameter_defaults
    from robot.sim.rollout import sim_safety_config

    sim = {k: v for k, v in sim.items() if k != "kind" and v is not None}
    hz = float(sim.get("control_hz", 10))
    safety = sim_safety_config()
    doc = yaml.safe_load(params_file("sim_deploy").read_text())
    arm = {**doc["sim_arm_node"]["ros__parameters"], "kind": "maniskill", "sim_json": json.dumps(sim, sort_keys=True),
           "image_size": int(sim.get("image_size", 64)), "rate_hz": hz, "step_on": "command", "seed": int(eval_seed)}
    pol = {**doc["policy_node"]["ros__parameters"], "mode": "deploy", "artifact": "", "sink": "link", "link_endpoint": endpoint,
           "link_secret_key": str(secret_key), "link_learner_key": str(learner_key), "link_plaintext": False, "robot_id": robot_id,
           "outbox": str(Path(work) / "outbox"), "success_topic": arm["status_topic"], "sim_event_topic": arm["event_topic"], "lockstep": True,
           "rate_hz": hz, "max_steps": int(max_steps), "replan_every": 0, "pose_frame": safety.workspace_frame,
           "max_translation_m": safety.max_translation_m, "max_rotation_rad": safety.max_rotation_rad}
    pol.pop("safety", None)
    flat_pol = {**pol, **{f"safety.{k}": v for k, v in safety.to_dict().items()},
                "deploy.policies": str(Path(work) / "policies"), "deploy.episodes": int(episodes), "deploy.eval_seed": int(eval_seed)}
    Path(work).mkdir(parents=True, exist_ok=True)
    out = Path(work) / "sim_deploy.yaml"
    out.write_text(yaml.safe_dump({
        "sim_arm_node": {"ros__parameters": _ros_typed(parameter_defaults(SimArmNodeConfig), arm)},
        "policy_node": {"ros__parameters": _nest(_ros_typed(parameter_defaults(PolicyNodeConfig), flat_pol))},
    }, sort_keys=False))
    load_params_file(out)  # a bad value stops here, not in a node process
    return out


def start_sim_deploy(work: str | os.PathLike, *, domain_id: int | None = None, **params: object) -> RosGraph:
    """`wvl loop robot.kind=ros`'s robot side: sim_arm_node (ManiSkill) + policy_node (``mode: deploy``) on a private
    loopback domain, parameters from `sim_deploy_params`; the caller stops the graph (``stop()``) and polls
    ``check_alive()``. The deploy log is ``<work>/policy_node.log``."""
    from robot.ros_env import private_domain_id

    work = Path(work)
    path = sim_deploy_params(work, **params)  # type: ignore[arg-type]
    graph = RosGraph(private_domain_id(7) if domain_id is None else domain_id, work)
    try:
        graph.start("sim_arm_node", path)
        graph.start("policy_node", path)
    except BaseException:
        graph.stop()
        raise
    return graph
