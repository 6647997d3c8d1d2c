"""Policy node: images + robot state -> the deployed ONNX policy -> safety filter -> ``TwistStamped`` to MoveIt
Servo or ``JointTrajectory`` to a joint_trajectory_controller. The episode loop is `robot.runner.EpisodeRunner`
over a `TopicCamera` and a `TopicArm` (the same classes `wvl robot` uses); this shell wires topics to them
and runs one episode per ``start`` event on a worker thread. ``stop`` ends it; ``estop`` latches the filter."""

from __future__ import annotations

import importlib
import json
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
        self.runtime = PolicyRuntime(RigSpec(camera=c.camera, control_hz=c.rate_hz))
        manifest = self.runtime.load(c.artifact)
        self.source = PolicySource(self.runtime, camera=c.camera, image_size=tuple(manifest.image_size))
        self.safety = SafetyFilter(c.safety, self.arm.limits)
        self.runner = EpisodeRunner(self.arm, {c.camera: self.camera}, self.safety,
                                    RunnerConfig(hz=c.rate_hz, max_steps=c.max_steps, replan_every=c.replan_every or None,
                                                 source_kind="policy", rig="ros2"), MonotonicClock())
        self.sink, self.outbox = self._make_sink(c)
        self.pub_status = self.create_publisher(String, c.status_topic, 10)
        self._sim_success: bool | None = None
        if c.success_topic:
            self.create_subscription(String, c.success_topic, self._on_success, 10)
        self._joints, self._stop, self._worker, self._running = None, threading.Event(), None, False
        self.create_subscription(Image, c.image_topic, lambda m: self.camera.push(rosmsg.image_from_msg(m), rosmsg.stamp_to_float(m.header.stamp)), qos_profile_sensor_data)
        self.create_subscription(JointState, c.joint_state_topic, self._on_joints, 10)
        self.create_subscription(PoseStamped, c.ee_pose_topic, self._on_pose, qos_profile_sensor_data)
        self.create_subscription(String, c.event_topic, self._on_event, 10)
        self.arm.connect()

    @staticmethod
    def _make_sink(c: PolicyNodeConfig):
        if c.sink == "folder":
            return FolderSink(c.outbox), None
        from robot import wire
        from robot.link import Outbox

        keys = wire.PLAINTEXT if c.link_plaintext else wire.RobotKeys.load(c.link_secret_key, c.link_learner_key)
        outbox = Outbox(c.outbox, c.link_endpoint, keys, robot_id=c.robot_id)
        return outbox.put, outbox

    def _on_success(self, msg: String) -> None:
        try:
            self._sim_success = bool(json.loads(msg.data).get("success"))
        except (ValueError, AttributeError):
            self.get_logger().warning(f"{self.cfg.success_topic}: not a JSON object with 'success': {msg.data[:80]!r}")

    def _publish(self, *args) -> None:
        c, T, now = self.cfg, self.types, self.get_clock().now().nanoseconds * 1e-9
        if c.output == "twist":
            twist, grip = args
            self.pub.publish(rosmsg.twist_stamped_msg(twist, now, c.frame_id, types=T))
        else:
            positions, dt, grip = args
            self.pub.publish(rosmsg.joint_trajectory_msg(c.joint_names, positions, dt, now, types=T))
        self.pub_grip.publish(rosmsg.float64_array_msg([grip], label="gripper", types=T))

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
        success = (lambda: bool(self._sim_success)) if self.cfg.success_topic else None
        res = self.runner.run(self.source, self.runtime.manifest.instruction, stop=self._stop.is_set, success=success,
                              policy_version=self.runtime.version)
        status = {"end_reason": res.end_reason, "detail": res.detail, "uuid": None, "steps": 0, "outcome": None}
        if res.episode is not None:
            self.sink(res.episode)
            status.update(uuid=res.episode.uuid, steps=len(res.episode), outcome=res.episode.outcome)
        self._running = False  # before the status goes out: a start sent on seeing it is taken
        self.pub_status.publish(rosmsg.string_msg(json.dumps(status), types=self.types))
        self.get_logger().info(f"episode ended: {res.end_reason} {res.detail} ({status['steps']} steps, {status['outcome']})")

    def close(self) -> None:
        self._stop.set()
        if self._worker is not None:
            self._worker.join(timeout=5.0)
        self.camera.disconnect()
        if self.outbox is not None:
            pending = self.outbox.pending()
            if pending:  # what is not committed stays spooled in the outbox folder and goes out on the next start
                self.outbox.wait_committed(pending, timeout=10.0)
            self.outbox.close()


def main() -> None:
    spin(PolicyNode)


if __name__ == "__main__":
    main()
