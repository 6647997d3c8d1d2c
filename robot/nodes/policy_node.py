"""Policy node: images + robot state -> the deployed ONNX policy -> safety filter -> ``TwistStamped`` to MoveIt
Servo or ``JointTrajectory`` to a joint_trajectory_controller. The episode loop is `robot.runner.EpisodeRunner`
over a `TopicCamera` and a `TopicArm` (the same classes `wvl robot` uses); this shell wires topics to them.

``mode: events``: one episode of ``artifact`` per ``start`` event on a worker thread; ``stop`` ends it.
``mode: deploy``: `robot.deploy.deploy` -- `wvl robot deploy`'s loop -- on a worker thread: policies arrive over the
learner link into a verified inbox and are swapped in between episodes; each evaluation episode resets the
simulated arm driver through ``sim_event_topic`` (`robot.ros_rig`: seed eval_seed + i, solved scenes skipped) and is
labelled by the simulator's success flag (``success_topic``), then shipped to the learner. ``estop`` latches the
filter in both modes."""

from __future__ import annotations

import importlib
import json
import logging
import os
import signal
import sys
import threading
import time

from geometry_msgs.msg import PoseStamped, TwistStamped
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray, String
from trajectory_msgs.msg import JointTrajectory

from robot import rosmsg
from robot.arms.base import ArmLimits
from robot.arms.topic import TopicArm
from robot.cameras.topic import TopicCamera
from robot.control import MonotonicClock
from robot.errors import DeviceNotConnectedError
from robot.nodes._shell import load_config, rclpy_types, spin
from robot.nodes.config import PolicyNodeConfig, gripper_opening
from robot.policy_runtime import PolicyRuntime, RigSpec
from robot.policy_source import PolicySource
from robot.ros_rig import SimTopics, wait_fresh
from robot.runner import EpisodeRunner, RunnerConfig
from robot.safety import SafetyFilter
from robot.sinks import FolderSink


class PolicyNode(Node):
    def __init__(self) -> None:
        super().__init__("policy_node")
        self.cfg: PolicyNodeConfig = load_config(self, PolicyNodeConfig)
        c, self.types = self.cfg, rclpy_types()
        if c.output == "twist":
            self.pub = self.create_publisher(TwistStamped, c.twist_topic, 10)
        else:
            self.pub = self.create_publisher(JointTrajectory, c.trajectory_topic, 10)
        self.pub_grip = self.create_publisher(Float64MultiArray, c.gripper_topic, 10)
        ik = None
        if c.ik_factory:
            module, _, fn = c.ik_factory.partition(":")
            ik = getattr(importlib.import_module(module), fn)()
        self.camera = TopicCamera(c.camera)
        self.arm = TopicArm(c.output, self._publish, c.rate_hz, ArmLimits(c.max_translation_m, c.max_rotation_rad, c.pose_frame), ik=ik)
        self.runtime = self.source = None
        if c.mode == "events":  # mode=deploy: robot.deploy loads each policy the learner sends
            if not c.artifact:
                raise ValueError("policy_node.artifact: mode=events needs a policy artifact folder (policy.onnx + manifest.json)")
            self.runtime = PolicyRuntime(RigSpec(camera=c.camera, control_hz=c.rate_hz))
            manifest = self.runtime.load(c.artifact)
            self.source = PolicySource(self.runtime, camera=c.camera, image_size=tuple(manifest.image_size))
        self.safety = SafetyFilter(c.safety, self.arm.limits)
        self.runner = EpisodeRunner(self.arm, {c.camera: self.camera}, self.safety,
                                    RunnerConfig(hz=c.rate_hz, max_steps=c.max_steps, replan_every=c.replan_every or None,
                                                 source_kind="policy", rig="ros2"), MonotonicClock())
        self.sink, self.outbox = self._make_sink(c) if c.mode == "events" else (None, None)  # deploy: its own Outbox
        self.pub_status = self.create_publisher(String, c.status_topic, 10)
        self.pub_sim_event = self.create_publisher(String, c.sim_event_topic, 10) if c.sim_event_topic else None
        self.sim = SimTopics(self._publish_sim_event) if c.success_topic else None
        if c.success_topic:
            self.create_subscription(String, c.success_topic, lambda m: self.sim.on_status(m.data), 10)
        self.exit_code = 0
        self._joints, self._stop, self._worker, self._running = None, threading.Event(), None, False
        self.create_subscription(Image, c.image_topic, lambda m: self.camera.push(rosmsg.image_from_msg(m), rosmsg.stamp_to_float(m.header.stamp)), qos_profile_sensor_data)
        self.create_subscription(JointState, c.joint_state_topic, self._on_joints, 10)
        self.create_subscription(PoseStamped, c.ee_pose_topic, self._on_pose, qos_profile_sensor_data)
        self.create_subscription(String, c.event_topic, self._on_event, 10)
        self.arm.connect()
        if c.mode == "deploy":
            self._worker = threading.Thread(target=self._deploy, name="policy-deploy", daemon=True)
            self._worker.start()

    @staticmethod
    def _make_sink(c: PolicyNodeConfig):
        if c.sink == "folder":
            return FolderSink(c.outbox), None
        from robot import wire
        from robot.link.outbox import Outbox

        keys = wire.PLAINTEXT if c.link_plaintext else wire.RobotKeys.load(c.link_secret_key, c.link_learner_key)
        outbox = Outbox(c.outbox, c.link_endpoint, keys, robot_id=c.robot_id)
        return outbox.put, outbox

    def _publish_sim_event(self, text: str) -> None:
        self.pub_sim_event.publish(rosmsg.string_msg(text, types=self.types))

    def _publish(self, *args) -> None:
        # the gripper target first: a simulated driver stepping on each twist (step_on: command) applies both
        c, T, now = self.cfg, self.types, self.get_clock().now().nanoseconds * 1e-9
        self.pub_grip.publish(rosmsg.float64_array_msg([args[-1]], label="gripper", types=T))
        if c.output == "twist":
            if self.sim is not None:
                self.sim.note_command()
            self.pub.publish(rosmsg.twist_stamped_msg(args[0], now, c.frame_id, types=T))
            if c.lockstep:  # as the in-process simulated arm: back once the simulator stepped with it and we see the result
                stamp = self.sim.wait_applied(1.0 / c.rate_hz)
                if stamp is not None and self.camera.is_connected:
                    try:
                        wait_fresh(self.arm, {c.camera: self.camera}, stamp, 1.0 / c.rate_hz)
                    except TimeoutError:
                        self.sim.late += 1
        else:
            positions, dt, _ = args
            self.pub.publish(rosmsg.joint_trajectory_msg(c.joint_names, positions, dt, now, types=T))

    def _on_joints(self, msg: JointState) -> None:
        names, pos, _, _, _ = rosmsg.joint_state_from_msg(msg)
        self._joints = (pos, gripper_opening(names, pos, self.cfg.gripper_joints, self.cfg.gripper_max_m))

    def _on_pose(self, msg: PoseStamped) -> None:
        if self._joints is not None:
            self.arm.update_state(self._joints[0], rosmsg.pose_from_msg(msg), self._joints[1], rosmsg.stamp_to_float(msg.header.stamp))

    def _on_event(self, msg: String) -> None:
        if msg.data == "estop":
            self.safety.estop("policy/event estop")
        elif msg.data == "stop":
            self._stop.set()
        elif msg.data == "start" and self.cfg.mode == "deploy":
            self.get_logger().warning("start: mode=deploy plays the learner's evaluation episodes; start is not used")
        elif msg.data == "start":
            if self._running:
                self.get_logger().warning("start: an episode is running; publish stop first")
                return
            if self._worker is not None:
                self._worker.join(timeout=2.0)  # it has published its status: only its return is left
            self._running = True
            self._stop.clear()
            self._worker = threading.Thread(target=self._episode, name="policy-episode", daemon=True)
            self._worker.start()

    def _episode(self) -> None:
        try:
            if not self.camera.is_connected:
                self.camera.connect()  # waits up to its warm-up for a first frame
            self._wait_for_state(5.0)
            self._run_episode()
        except Exception as e:  # no frame at all, a sink that cannot write: say so on the status topic too
            self.get_logger().error(f"episode failed: {type(e).__name__}: {e}")
            self.pub_status.publish(rosmsg.string_msg(json.dumps({"end_reason": "error", "detail": f"{type(e).__name__}: {e}",
                                                                  "uuid": None, "steps": 0, "outcome": None}), types=self.types))
        finally:
            self._running = False

    def _wait_for_state(self, timeout_s: float) -> None:
        """A start right after the driver came up: give its first JointState + pose a moment to arrive."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.arm.read_state()
                return
            except DeviceNotConnectedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _run_episode(self) -> None:
        success = None
        if self.sim is not None:
            self.sim.sync()
            success = self.sim.success
        res = self.runner.run(self.source, self.runtime.manifest.instruction, stop=self._stop.is_set, success=success,
                              policy_version=self.runtime.version)
        status = {"end_reason": res.end_reason, "detail": res.detail, "uuid": None, "steps": 0, "outcome": None}
        if res.episode is not None:
            self.sink(res.episode)
            status.update(uuid=res.episode.uuid, steps=len(res.episode), outcome=res.episode.outcome)
        self._running = False  # before the status goes out: a start sent on seeing it is taken
        self.pub_status.publish(rosmsg.string_msg(json.dumps(status), types=self.types))
        self.get_logger().info(f"episode ended: {res.end_reason} {res.detail} ({status['steps']} steps, {status['outcome']})")

    def _deploy(self) -> None:
        """mode=deploy: wait for the driver and the first state and frame, then `robot.deploy.deploy` until stopped."""
        from robot.deploy import deploy
        from robot.ros_rig import ros_sim_rig

        if not logging.getLogger().handlers:  # robot.deploy / robot.runner log through logging: into this node's output
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stdout)
        c, d = self.cfg, self.cfg.deploy
        try:
            first = self.sim.first_status(d.startup_timeout_s)
            deadline = time.monotonic() + 30.0
            while self.pub_sim_event.get_subscription_count() < 1:  # a reset must not go out before the driver listens
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no subscriber on {c.sim_event_topic} within 30 s")
                time.sleep(0.05)
            self.camera.connect()
            self._wait_for_state(10.0)
            rig = ros_sim_rig(self.arm, {c.camera: self.camera}, self.sim, str(first.get("instruction") or ""))
            cfg = {"deploy": {"policies": d.policies, "episodes": d.episodes, "eval_seed": d.eval_seed, "max_versions": d.max_versions,
                              "max_idle_s": d.max_idle_s, "status_every_s": d.status_every_s},
                   "link": {"endpoint": c.link_endpoint, "plaintext": c.link_plaintext, "secret_key": c.link_secret_key,
                            "learner_key": c.link_learner_key, "robot_id": c.robot_id, "commit_timeout_s": d.commit_timeout_s},
                   "policy": {"camera": c.camera}, "outbox": c.outbox, "seed": 0}
            self.get_logger().info(f"deploy: serving policies from {c.link_endpoint} (instruction {rig.instruction!r})")
            deploy(cfg, rig, self.runner, stop=self._stop)
            if self.sim.late:
                self.get_logger().warning(f"deploy: {self.sim.late} waits for the driver's step timed out (lockstep not held there)")
        except Exception as e:
            self.get_logger().error(f"deploy failed: {type(e).__name__}: {e}")
            self.exit_code = 1
        if not self._stop.is_set():  # deploy left by itself (max_versions / max_idle_s) or failed: the node ends too
            os.kill(os.getpid(), signal.SIGTERM)

    def close(self) -> None:
        self._stop.set()
        if self._worker is not None:
            self._worker.join(timeout=5.0 if self.cfg.mode == "events" else self.cfg.deploy.commit_timeout_s + 15.0)
        self.camera.disconnect()
        if self.outbox is not None:
            pending = self.outbox.pending()
            if pending:  # what is not committed stays spooled in the outbox folder and goes out on the next start
                self.outbox.wait_committed(pending, timeout=10.0)
            self.outbox.close()


def main() -> None:
    sys.exit(spin(PolicyNode))


if __name__ == "__main__":
    main()
