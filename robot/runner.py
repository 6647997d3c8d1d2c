"""One episode on a rig: cameras + arm + an action source + the safety filter, at a fixed rate -> `Episode`.

The integrator's entry point (teleop sessions, policy rollouts on the real or the simulated robot)::

    runner = EpisodeRunner(arm, cameras, SafetyFilter(cfg, arm.limits), RunnerConfig(hz=10), clock)
    result = runner.run(source, instruction, success=sim.success_flag)   # -> EpisodeResult
    sink(result.episode)

**Action sources** implement `ActionSource`: ``reset(instruction)`` at the start of an episode and
``next_chunk(obs) -> (K, 7) float32`` whenever the runner needs actions (every K steps, or every
``replan_every`` steps). ``obs`` is an `Observation`: camera frames (name -> `Frame`), the `ArmState`, the
loop time and the instruction. A source that is driven by a person or a remote process may also implement
`StatusSource.status()` -> `SourceStatus` (deadman ``enabled``, the ``stamp`` its newest command was
issued at - the safety watchdog holds the arm when it gets old -, an episode ``event``, ``connected``).

**Per step** the runner records what the rig saw at t and the action actually sent after the safety filter
(``Episode.actions``); the command before the filter goes to ``extras["action_commanded"]``. Also in
``extras``: ``safety_flags`` (bit mask of `robot.safety.SafetyFlag`), ``t_observe`` / ``t_infer`` /
``t_act`` (wall seconds per section), ``loop_lateness`` (s after the deadline), ``camera_skew``
(s between cameras), ``frame_repeated`` (a camera returned the frame of the previous step).
``Episode.interventions`` = safety_flags != 0. ``Episode.info`` gets ``safety`` (counts per rule),
``control`` (rate, jitter, overruns), ``end_reason`` and the caller's ``info``.

**Reward / outcome**: with a ``success`` callback (the simulator's success flag) reward[t] is that flag at
observation t, the episode stops ``settle_steps`` after the first success, and the outcome is
"success"/"failure" from the flag at the end - rollouts are labelled by the simulator, never assumed.
Without one, rewards are 0 and the outcome "unlabeled" (a person labels it, see `teleop.session`).

**Ending**: max steps, success + settle, an episode event from the source (``end_events``), or a device
that fails: a camera unplugged or stalled, the arm or the teleop device lost, the source raising. Then the
arm is sent a hold command (if it still answers) and the episode keeps every step taken so far, with the
reason in ``info["end_reason"]`` - a recorded episode is never lost.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np

from robot.arms.base import Arm, ArmState
from robot.cameras.base import Camera, Frame
from robot.cameras.group import CameraGroup
from robot.control import ChunkExecutor, Clock, MonotonicClock, RateLoop
from robot.episode import SOURCES, Episode, EpisodeRecorder
from robot.errors import StaleFrameError
from robot.safety import SafetyFilter, SafetyFlag, flag_names

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- protocol
@dataclass(frozen=True)
class Observation:
    frames: dict[str, Frame]  # camera name -> Frame (rgb (H, W, 3) uint8, depth (H, W) uint16 mm or None)
    state: ArmState
    time: float  # seconds on the control loop's clock
    instruction: str
    step: int


class ActionSource(Protocol):
    def reset(self, instruction: str) -> None: ...

    def next_chunk(self, obs: Observation) -> np.ndarray:
        """(K, 7) float32 actions of the Episode contract, played one per control step."""


@dataclass(frozen=True)
class SourceStatus:
    enabled: bool = True  # deadman held / policy armed
    stamp: float | None = None  # loop-clock time the newest command was issued; None = now
    event: str | None = None  # an episode event (see teleop.command.EpisodeEvent), consumed when read
    connected: bool = True  # the device behind the source is still there


@runtime_checkable
class StatusSource(Protocol):
    def status(self) -> SourceStatus: ...


# ---------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class RunnerConfig:
    hz: float = 10.0
    max_steps: int = 200
    settle_steps: int = 2  # steps recorded after the first success before stopping (robot.sim.rollout: the success rule)
    replan_every: int | None = None  # None: play each chunk to its end
    source_kind: str = "policy"  # Episode.source: teleop | policy | scripted
    rig: str = "sim"
    end_events: tuple[str, ...] = ("save_next", "rerecord", "stop", "success", "near_success", "failure")
    record_depth: bool = True
    startup_timeout_steps: int = 20  # consecutive start-up refusals before the episode is given up
    rt_priority: int | None = None  # SCHED_FIFO priority of the control thread (real time; needs CAP_SYS_NICE)

    def __post_init__(self) -> None:
        if not 0 < self.hz <= 2000:
            raise ValueError(f"runner.hz: must be in (0, 2000], got {self.hz}")
        if self.max_steps < 1:
            raise ValueError(f"runner.max_steps: must be >= 1, got {self.max_steps}")
        if self.settle_steps < 0:
            raise ValueError(f"runner.settle_steps: must be >= 0, got {self.settle_steps}")
        if self.replan_every is not None and self.replan_every < 1:
            raise ValueError(f"runner.replan_every: must be >= 1 or null, got {self.replan_every}")
        if self.startup_timeout_steps < 1:
            raise ValueError(f"runner.startup_timeout_steps: must be >= 1, got {self.startup_timeout_steps}")
        if self.source_kind not in SOURCES:
            raise ValueError(f"runner.source_kind: {self.source_kind!r} is not one of {SOURCES}")


@dataclass
class EpisodeResult:
    episode: Episode | None  # None only when not a single step could be observed
    end_reason: str  # max_steps | success | stopped | event:<name> | startup_refused | camera_lost | camera_stalled | arm_lost | teleop_lost | source_error
    event: str | None = None
    success: bool | None = None  # the success callback's value at the end (None without a callback)
    report: Any = None  # robot.control.LoopReport
    detail: str = ""  # the error message behind a device end reason


DEVICE_ENDS = ("camera_lost", "camera_stalled", "arm_lost", "teleop_lost", "source_error", "startup_refused")


# ---------------------------------------------------------------------------------------------- runner
class EpisodeRunner:
    """Runs episodes on one rig. Devices are connected by the caller (or by `connect`)."""

    def __init__(self, arm: Arm, cameras: CameraGroup | dict[str, Camera], safety: SafetyFilter,
                 config: RunnerConfig = RunnerConfig(), clock: Clock | None = None) -> None:
        self.arm = arm
        self.cameras = cameras if isinstance(cameras, CameraGroup) else CameraGroup(cameras)
        self.safety = safety
        self.config = config
        self.clock = clock if clock is not None else MonotonicClock()

    def connect(self) -> None:
        if not self.arm.is_connected:
            self.arm.connect()
        self.cameras.connect()

    def _hold(self) -> None:
        try:
            self.arm.send_action(self.safety.hold_action())
        except Exception as e:  # the arm may be the device that failed
            log.error("could not send the hold command to %s: %s", getattr(self.arm, "name", "arm"), e)

    def _observe(self, t: float, step: int, instruction: str):
        group = self.cameras.read()
        state = self.arm.read_state()
        return group, Observation(frames=group.frames, state=state, time=t, instruction=instruction, step=step)

    def run(self, source: ActionSource, instruction: str, *, success: Callable[[], bool] | None = None,
            stop: Callable[[], bool] | None = None, info: dict[str, Any] | None = None, **meta: Any) -> EpisodeResult:
        """Run one episode. ``success``: the simulator's success flag (labels the rollout); ``stop``: polled
        every step, true ends the episode (an operator's stop button); ``meta``: Episode fields
        (policy_version, loop_iteration, operator_note)."""
        c = self.config
        executor = ChunkExecutor(1.0 / c.hz, c.replan_every)
        rec = EpisodeRecorder(instruction, c.hz, rig=c.rig, source=c.source_kind, **meta)
        loop = RateLoop(c.hz, self.clock, max_steps=c.max_steps, rt_priority=c.rt_priority)
        self.cameras.reset()
        status_source = source if isinstance(source, StatusSource) else None
        end_reason, detail, event, success_at = "max_steps", "", None, None
        refused = 0  # consecutive start-up refusals
        state: ArmState | None = None

        try:
            state = self.arm.read_state()
        except Exception as e:
            return EpisodeResult(None, "arm_lost", detail=str(e))
        self.safety.reset(state)
        source.reset(instruction)

        for tick in loop:
            now = tick.start
            # ---- observe
            with tick.section("observe"):
                try:
                    group = self.cameras.read()
                except StaleFrameError as e:
                    end_reason, detail = "camera_stalled", str(e)
                    break
                except ConnectionError as e:  # DeviceNotConnectedError: unplugged, or the recording ended
                    end_reason, detail = "camera_lost", str(e)
                    break
                try:
                    state = self.arm.read_state()
                except ConnectionError as e:
                    end_reason, detail = "arm_lost", str(e)
                    break
                obs = Observation(frames=group.frames, state=state, time=now, instruction=instruction, step=tick.index)
            reward = float(bool(success())) if success is not None else 0.0
            status = status_source.status() if status_source is not None else SourceStatus()
            if status.event == "estop":  # the operator's e-stop latches the filter: the next command holds
                self.safety.estop(f"operator e-stop from {type(source).__name__}")
            if not status.connected:
                end_reason, detail = "teleop_lost", "the teleop device disconnected"
                break
            if status.event is not None and status.event in c.end_events:
                end_reason, event = f"event:{status.event}", status.event
                break
            if stop is not None and stop():
                end_reason = "stopped"
                break

            # ---- infer
            try:
                with tick.section("infer"):
                    if executor.needs_plan:
                        chunk = source.next_chunk(obs)
                        executor.push(chunk, status.stamp if status.stamp is not None else now)
                    commanded, meant_for, _ = executor.pop()
            except Exception as e:
                log.error("action source failed at step %d: %s", tick.index, e)
                end_reason, detail = "source_error", f"{type(e).__name__}: {e}"
                break

            # ---- act
            result = self.safety.clamp(commanded, obs.state, now=now, command_stamp=meant_for, enabled=status.enabled)
            try:
                with tick.section("act"):
                    sent = self.arm.send_action(result.action)
            except ConnectionError as e:
                end_reason, detail = "arm_lost", str(e)
                # The frame of this step was taken: keep it, with the hold the arm could not execute either.
                self._record(rec, tick, group, obs, self.safety.hold_action(), commanded, reward, result.flags)
                break

            # ---- record
            with tick.section("record"):
                self._record(rec, tick, group, obs, sent, commanded, reward, result.flags)
            refused = refused + 1 if result.held and result.flags & SafetyFlag.STARTUP else 0
            if refused >= c.startup_timeout_steps:
                end_reason = "startup_refused"
                detail = (f"the safety filter's start-up guard refused {refused} first commands in a row (too far from the "
                          "current state); release the device / check the policy, or set safety.startup_mode=ramp")
                break

            if reward and success_at is None:
                success_at = tick.index
            if success_at is not None and tick.index - success_at >= c.settle_steps:
                end_reason = "success"
                break

        # The observation after the last action closes the episode (with a hold action), as in the sim
        # collector - unless a device failed, in which case we keep what we have.
        final_success = bool(success()) if success is not None else None
        if end_reason in DEVICE_ENDS:
            log.warning("episode ended early (%s): %s; keeping %d recorded steps", end_reason, detail, len(rec))
            self._hold()
        else:
            try:
                if loop.ticks:  # one period after the last step, like any other observation
                    self.clock.sleep_until(loop.ticks[-1].deadline + loop.period)
                t = rec.timestamp_after_last(self.clock.now())
                group, obs = self._observe(t, len(rec), instruction)
                hold = self.safety.hold_action()
                self._hold()
                self._record(rec, None, group, obs, hold, hold, float(bool(final_success)), SafetyFlag.NONE)
            except (ConnectionError, TimeoutError) as e:
                log.warning("could not take the closing observation: %s", e)

        report = loop.report() if loop.ticks else None
        if not len(rec):
            return EpisodeResult(None, end_reason, event=event, success=final_success, report=report, detail=detail)
        outcome = "unlabeled" if success is None else ("success" if final_success else "failure")
        ep_info = dict(info or {})
        ep_info["safety"] = self.safety.summary()
        ep_info["end_reason"] = end_reason if not detail else f"{end_reason}: {detail}"
        if report is not None:
            j = report.jitter_ms()
            ep_info["control"] = {
                "hz": c.hz, "achieved_hz": None if np.isnan(report.achieved_hz) else round(report.achieved_hz, 3),
                "realtime": bool(getattr(self.clock, "realtime", True)), "overruns": report.overruns,
                "missed_ticks": report.missed_ticks, "jitter_p99_ms": None if np.isnan(j[1]) else round(j[1], 4),
            }
        ep_info["cameras"] = {"repeats": dict(self.cameras.repeats), "realigned": self.cameras.realigned}
        episode = rec.finish(outcome, info=ep_info)
        fired = {k: v for k, v in ep_info["safety"].items() if v and k not in ("steps",)}
        if fired:
            log.info("safety filter interventions this episode: %s", fired)
        return EpisodeResult(episode, end_reason, event=event, success=final_success, report=report, detail=detail)

    def _record(self, rec: EpisodeRecorder, tick, group, obs: Observation, action: np.ndarray, commanded: np.ndarray,
                reward: float, flags: SafetyFlag) -> None:
        frames = group.frames
        s = tick.sections if tick is not None else {}
        depth = {n: f.depth for n, f in frames.items() if f.depth is not None} if self.config.record_depth else {}
        commanded = np.asarray(commanded, dtype=np.float32)
        rec.add_step(
            timestamp=obs.time,
            images={n: f.rgb for n, f in frames.items()},
            depth=depth,
            joints=obs.state.joints,
            ee_pose=obs.state.ee_pose,
            gripper=obs.state.gripper,
            action=action,
            reward=reward,
            intervention=bool(flags),
            extras={
                "action_commanded": np.where(np.isfinite(commanded), commanded, np.float32(np.nan)),
                "safety_flags": np.int32(int(flags)),
                "t_observe": np.float32(s.get("observe", 0.0)),
                "t_infer": np.float32(s.get("infer", 0.0)),
                "t_act": np.float32(s.get("act", 0.0)),
                "loop_lateness": np.float32(tick.lateness if tick is not None else 0.0),
                "camera_skew": np.float32(group.skew_s),
                "frame_repeated": np.bool_(any(group.repeated.values())),
            },
        )
        if flags & ~SafetyFlag.RAMP:
            log.debug("step %d: safety %s", len(rec) - 1, ",".join(flag_names(int(flags))))
