"""Control-loop timing: achieved rate and period jitter at 10, 30 and 100 Hz on this machine.

Each run is a real `robot.runner.EpisodeRunner` episode in real time (`MonotonicClock`): every step reads a
camera (a `SyntheticCamera`: a driver-like reader thread delivering 64x64 RGB - the simulated robot's
resolution - at max(30, rate) fps), runs an ONNX policy of a realistic small size through onnxruntime
(conv 3x3x16 stride 2 -> conv 3x3x32 stride 2 -> mean -> 2 dense layers -> an 8x7 action chunk, re-planned
every step), the safety filter, a kinematic arm, and records the step into the Episode. Period jitter =
|actual period - nominal period| per step. Side by side: the default clock (sleep, then spin the last
1 ms) and a sleep-only clock. With ``--maniskill`` a 10 Hz run on the ManiSkill robot (arm step + render
inside the loop, no policy) is added. Three clocks side by side: sleep only; sleep + 1 ms spin; and sleep +
spin with the control thread under SCHED_FIFO (``--rt-priority``, what robot PCs run control threads with;
the camera reader thread one below it, so a reader preempted while holding the GIL cannot stall the loop;
needs root / CAP_SYS_NICE, else that row says it ran at normal priority). The headline is the third.

    .venv/bin/python bench/control_loop.py [--seconds 10] [--maniskill]

Last line: hz10_p99_jitter_ms=... hz30_p99_jitter_ms=... hz100_p99_jitter_ms=...
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robot.arms.fake import KinematicArm, KinematicArmConfig  # noqa: E402
from robot.cameras.fake import SyntheticCamera, SyntheticCameraConfig  # noqa: E402
from robot.console import print_table  # noqa: E402
from robot.control import MonotonicClock  # noqa: E402
from robot.policy_source import PolicySource  # noqa: E402
from robot.runner import EpisodeRunner, RunnerConfig  # noqa: E402
from robot.safety import SafetyFilter  # noqa: E402
from robot.sim.rollout import sim_safety_config  # noqa: E402

K = 8


def build_policy(path: Path):
    """A small conv + MLP policy graph: uint8 (64, 64, 3) -> (K, 7) float32."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def w(name, *shape):
        return numpy_helper.from_array((rng.normal(size=shape) * 0.05).astype(np.float32), name)

    inits = [w("c1", 16, 3, 3, 3), w("c2", 32, 16, 3, 3), w("f1", 32, 256), w("f2", 256, K * 7),
             numpy_helper.from_array(np.array([1, 3, 64, 64], np.int64), "nchw"),
             numpy_helper.from_array(np.array([K, 7], np.int64), "kshape"),
             numpy_helper.from_array(np.array([1 / 255.0], np.float32), "scale")]
    nodes = [
        helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["f", "scale"], ["fs"]),
        helper.make_node("Transpose", ["fs"], ["chw"], perm=[2, 0, 1]),
        helper.make_node("Reshape", ["chw", "nchw"], ["x"]),
        helper.make_node("Conv", ["x", "c1"], ["h1"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h1"], ["r1"]),
        helper.make_node("Conv", ["r1", "c2"], ["h2"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
        helper.make_node("Flatten", ["g"], ["gf"]),
        helper.make_node("MatMul", ["gf", "f1"], ["m1"]),
        helper.make_node("Relu", ["m1"], ["mr"]),
        helper.make_node("MatMul", ["mr", "f2"], ["m2"]),
        helper.make_node("Tanh", ["m2"], ["t"]),
        helper.make_node("Reshape", ["t", "kshape"], ["actions"]),
    ]
    graph = helper.make_graph(nodes, "bench_policy", [helper.make_tensor_value_info("image", TensorProto.UINT8, [64, 64, 3])],
                              [helper.make_tensor_value_info("actions", TensorProto.FLOAT, [K, 7])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1  # the robot's control thread shares the CPU with the camera thread
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    class Policy:
        def act(self, image, state=None):
            return sess.run(None, {"image": image})[0]

    return Policy()


def bench_safety(overrides: dict | None = None):
    """The filter every run here goes through: the simulated rig's limits (robot/conf/robot.yaml's safety block),
    never `SafetyConfig`'s defaults (those are a real arm's: 0.02 m per step would clip the simulator's 0.1 m)."""
    return sim_safety_config(overrides)


def run(hz: float, seconds: float, spin_s: float, policy, rt_priority: int | None = None) -> dict:
    cam_prio = None if rt_priority is None else max(1, rt_priority - 1)  # readers just below the loop (no GIL inversion)
    cam = SyntheticCamera(SyntheticCameraConfig(name="front", width=64, height=64, fps=max(30.0, hz), rt_priority=cam_prio))
    # The dry rig stands in for the simulated one: the simulated rig's safety limits (robot/conf/robot.yaml), its frame.
    safety = bench_safety()
    arm = KinematicArm(KinematicArmConfig(pose_frame=safety.workspace_frame))
    runner = EpisodeRunner(arm, {"front": cam}, SafetyFilter(safety, arm.limits),
                           RunnerConfig(hz=hz, max_steps=int(hz * seconds), replan_every=1, rt_priority=rt_priority), MonotonicClock(spin_s))
    runner.cameras.max_age_s = 2.0 / max(30.0, hz)
    runner.connect()
    try:
        res = runner.run(PolicySource(policy, "front"), "benchmark")
    finally:
        runner.cameras.disconnect()
    rep = res.report
    j, la = rep.jitter_ms(), rep.lateness_ms()
    busy = np.percentile(rep.busy, 50) * 1e3
    infer = np.percentile(rep.sections["infer"], 50) * 1e3
    from robot.control import realtime_priority

    with realtime_priority(rt_priority) as applied:  # probe: was SCHED_FIFO permitted?
        pass
    clock = ("SCHED_FIFO " if applied else "") + ("sleep+spin 1 ms" if spin_s else "sleep only")
    return dict(hz=hz, clock=clock, rt=applied, steps=rep.steps, achieved=rep.achieved_hz,
                p50=j[0], p99=j[1], max=j[2], late99=la[1], overruns=rep.overruns, busy=busy, infer=infer, end=res.end_reason)


def run_maniskill(seconds: float) -> dict | None:
    try:
        from robot.sim.expert import ExpertSource
        from robot.sim.maniskill import ManiSkillConfig, SimRobot
    except ImportError as e:
        print(f"maniskill row skipped: {e}")
        return None
    robot = SimRobot(ManiSkillConfig(max_steps=int(10 * seconds)))
    robot.connect()
    robot.sim.reset(0)
    runner = EpisodeRunner(robot.arm, dict(robot.cameras), SafetyFilter(bench_safety(robot.config.safety_overrides()), robot.arm.limits),
                           RunnerConfig(hz=10, max_steps=int(10 * seconds), settle_steps=10**6), MonotonicClock())
    try:
        res = runner.run(ExpertSource(robot.sim), robot.instruction)
    finally:
        robot.close()
    rep = res.report
    j, la = rep.jitter_ms(), rep.lateness_ms()
    return dict(hz=10.0, clock="maniskill step+render", steps=rep.steps, achieved=rep.achieved_hz, p50=j[0], p99=j[1], max=j[2],
                late99=la[1], overruns=rep.overruns, busy=np.percentile(rep.busy, 50) * 1e3,
                infer=np.percentile(rep.sections["infer"], 50) * 1e3, end=res.end_reason)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="seconds per run")
    ap.add_argument("--rates", type=float, nargs="+", default=[10.0, 30.0, 100.0])
    ap.add_argument("--maniskill", action="store_true", help="add a 10 Hz run on the ManiSkill robot")
    ap.add_argument("--rt-priority", type=int, default=80, help="SCHED_FIFO priority of the headline runs")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)  # overrun warnings would flood the table; they are counted
    with tempfile.TemporaryDirectory() as d:
        policy = build_policy(Path(d) / "policy.onnx")
        rows = []
        headline = {}
        for hz in args.rates:
            for spin, prio in ((0.0, None), (0.001, None), (0.001, args.rt_priority)):
                r = run(hz, args.seconds, spin, policy, prio)
                rows.append(r)
                if prio is not None:  # the headline: the configuration a robot PC runs (falls back if not permitted)
                    headline[f"hz{int(hz)}_p99_jitter_ms"] = r["p99"]
        if args.maniskill:
            r = run_maniskill(args.seconds)
            if r:
                rows.append(r)
    cols = ["rate Hz", "clock", "steps", "achieved Hz", "jitter p50 ms", "jitter p99 ms", "jitter max ms", "lateness p99 ms",
            "overruns", "step busy p50 ms", "infer p50 ms"]
    print_table(f"control loop, {args.seconds:g} s per run (period jitter = |actual - nominal period|)", cols,
                [(r["hz"], r["clock"], r["steps"], round(r["achieved"], 3), round(r["p50"], 3), round(r["p99"], 3), round(r["max"], 3),
                  round(r["late99"], 3), r["overruns"], round(r["busy"], 3), round(r["infer"], 3)) for r in rows])
    print(" ".join(f"{k}={v:.3f}" for k, v in headline.items()))


if __name__ == "__main__":
    main()
