"""The robot end of the learner link (protocol: `robot/wire.py`; learner end: `learning/server/`), one role a module:

- `outbox.Outbox`: the durable episode outbox and the one connection to the learner, which also downloads policies;
- `policy_inbox.PolicyInbox`: verified policies, swapped in only between episodes, with rollback;
- `remote_policy.RemotePolicy`: an action chunk from a GPU-side policy within a latency budget, or None (hold).

Integrator's view::

    from robot.link.outbox import Outbox
    from robot.link.policy_inbox import PolicyInbox

    inbox = PolicyInbox(root / "policies", validate=functools.partial(policy_runtime.validate_artifact, rig=rig))
    outbox = Outbox(root / "outbox", "tcp://learner:5555", RobotKeys.load(...), robot_id="robot-1", inbox=inbox)
    outbox.put(episode)                      # durable on return
    inbox.swap_if_ready()                    # between episodes; returns the new PolicyManifest or None
    outbox.wait_committed([episode.uuid], timeout=30)
    outbox.close()
"""
