"""`wvl robot deploy`: the robot side of the co-evolution loop, as it runs on a rig.

The robot connects to the learner (CURVE-authenticated DEALER, `robot.link.outbox.Outbox`), receives policies into a
verified `PolicyInbox` (hash, manifest, the ONNX runtime's own validation), and each time a new version is
ready -- and only between episodes -- swaps it in and runs ``episodes`` evaluation episodes through the
`PolicyRuntime`, the `SafetyFilter` and the `EpisodeRunner`. Every finished episode goes to the outbox, which
ships it to the learner (labelled by the simulator's success flag on the simulated rig; on a real rig, by the
operator through the collector). Then it waits for the next version.

Requests travel with the policy: a manifest's ``extra`` may carry ``loop_iteration``, ``eval_episodes`` and
``eval_seed`` (the learner's loop sets them), which override this process's defaults for that version.
Evaluation seeds are the same for every version (``eval_seed + i``), so iterations are compared on the same
scenes. SIGTERM / SIGINT stop after the current episode; the outbox keeps what was not committed yet.
"""

from __future__ import annotations

import functools
import logging
import signal
import threading
import time
from typing import Any

from robot.policy_runtime import PolicyRuntime, RigSpec, validate_artifact
from robot.policy_source import PolicySource

log = logging.getLogger(__name__)


def deploy(c: dict[str, Any], rig, runner, stop: threading.Event | None = None) -> int:
    """Serve policies from the learner until stopped (or ``deploy.max_versions`` versions were evaluated).
    ``stop``: set by the caller to leave after the current episode (a ROS 2 node runs this on a worker thread);
    without one, SIGTERM / SIGINT set it (the main thread of `wvl robot deploy`)."""
    from robot import wire
    from robot.link.outbox import Outbox
    from robot.link.policy_inbox import PolicyInbox
    from robot.rig import play_episodes

    d = c["deploy"]
    lk = c["link"]
    cam = c["policy"]["camera"]
    if cam not in rig.cameras:
        raise ValueError(f"policy.camera: {cam!r} is not one of the rig's cameras {sorted(rig.cameras)}")
    rig.reset_scene(int(d["eval_seed"]) - int(c["seed"]))  # a scene to look at: the policy's image size comes from the camera
    frame = rig.cameras[cam].read()
    rig_spec = RigSpec(camera=cam, image_size=tuple(frame.rgb.shape[:2]), control_hz=runner.config.hz)
    keys = wire.PLAINTEXT if lk["plaintext"] else wire.RobotKeys.load(lk["secret_key"], lk["learner_key"])
    inbox = PolicyInbox(d["policies"], validate=functools.partial(validate_artifact, rig=rig_spec))
    outbox = Outbox(c["outbox"], lk["endpoint"], keys, robot_id=lk["robot_id"], inbox=inbox)
    runtime = PolicyRuntime(rig_spec)
    source = PolicySource(runtime, camera=cam)

    old_handlers = {}
    if stop is None:
        stop = threading.Event()

        def on_signal(signum, frame) -> None:  # finish the episode in progress, then leave
            log.info("robot deploy: signal %d, stopping after the current episode", signum)
            stop.set()

        old_handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    evaluated = 0
    idle_since = last_connected = last_status = time.monotonic()
    try:
        while not stop.is_set():
            manifest = inbox.swap_if_ready()  # between episodes: the only place a policy changes
            if manifest is None:
                now = time.monotonic()
                counters = outbox.counters()
                if counters["connected"]:
                    last_connected = now
                if now - last_status >= float(d["status_every_s"]):
                    log.info("robot deploy: %s", waiting_status(counters, lk["endpoint"], keys, now - last_connected, now - idle_since))
                    last_status = now
                if d["max_idle_s"] and now - idle_since > d["max_idle_s"]:
                    log.info("robot deploy: no new policy for %.0f s; leaving", d["max_idle_s"])
                    break
                stop.wait(0.2)
                continue
            runtime.load(inbox.current_folder)
            runtime.reset()
            extra = manifest.extra or {}
            n = int(extra.get("eval_episodes", d["episodes"]))
            seed0 = int(extra.get("eval_seed", d["eval_seed"]))
            iteration = extra.get("loop_iteration")
            meta = {"policy_version": manifest.policy_version}
            if iteration is not None:
                meta["loop_iteration"] = int(iteration)
            log.info("robot deploy: policy %s -> %d evaluation episodes (seeds %d..%d)", manifest.policy_version, n, seed0, seed0 + n - 1)
            successes = 0
            # the rig's reset adds its own seed base (c["seed"]): scene i is eval_seed + i
            for i, res in play_episodes(rig, runner, source, n, seed0 - int(c["seed"]), meta=meta, info={"evaluation": True},
                                        stop=stop.is_set):
                if res.episode is None:
                    log.error("episode %d: nothing recorded (%s: %s)", i, res.end_reason, res.detail)
                    continue
                outbox.put(res.episode)
                successes += res.episode.outcome == "success"
            log.info("robot deploy: policy %s done: %d/%d successes (simulator)", manifest.policy_version, successes, n)
            evaluated += 1
            idle_since = time.monotonic()
            if d["max_versions"] and evaluated >= d["max_versions"]:
                break
    finally:
        for s, h in old_handlers.items():
            signal.signal(s, h)
        pending = outbox.pending()
        if pending:
            log.info("robot deploy: waiting up to %.0f s for %d episode(s) to be committed", lk["commit_timeout_s"], len(pending))
            try:
                outbox.wait_committed(pending, timeout=lk["commit_timeout_s"])
            except Exception as e:  # they stay in the outbox folder and go out on the next start
                log.warning("robot deploy: %s; uncommitted episodes stay in %s", e, c["outbox"])
        outbox.close()
    return 0


def waiting_status(counters: dict[str, Any], endpoint: str, keys: Any, unreachable_s: float, idle_s: float) -> str:
    """What an idle deploy is waiting for, in one line: a new policy from a connected learner, or the learner."""
    running = counters.get("running_version") or "none yet"
    if counters.get("connected"):
        return f"connected to the learner at {endpoint}; waiting for a new policy ({idle_s:.0f} s; running: {running})"
    why = f" (last error: {counters['last_error']})" if counters.get("last_error") else ""
    name = getattr(keys, "name", None)
    key_hint = (f"; if the learner is up, the handshake is not completing: is {name}.key on the learner's allow list?"
                if name else "")
    return f"learner at {endpoint} unreachable for {unreachable_s:.0f} s{why}{key_hint} (running: {running})"
