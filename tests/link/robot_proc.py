"""A robot process for the crash test: collects N deterministic episodes into an Outbox, then waits for the learner.

    python -m tests.link.robot_proc <outbox folder> <endpoint> <keys folder> <n>

Episode i has seed i and a fixed uuid, and is put() once: a marker file records that put() returned (the moment
a real collector would tell the operator "saved"). Killed at any moment and restarted, it resumes where it was.
Exit 0 and "all committed" once the learner has committed every episode."""

from __future__ import annotations

import logging
import sys
import time
import uuid
from pathlib import Path

from robot import wire
from robot.link.outbox import LinkConfig, Outbox
from tests.factories import random_episode


def episode(i: int):
    return random_episode(seed=i, uuid=str(uuid.UUID(int=i + 1, version=4)))


def main() -> int:
    folder, endpoint, keys_dir, n = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
    logging.basicConfig(level=logging.WARNING)
    keys = wire.RobotKeys.load(keys_dir / "robot-1.key_secret", keys_dir / "learner.key")
    cfg = LinkConfig(chunk_bytes=4096, window=4, ack_timeout_s=0.5, heartbeat_s=0.2, dead_after_s=1.5,
                     hello_backoff_s=(0.05, 0.4), retry_backoff_s=(0.1, 0.4), end_resend_s=1.0, min_free_bytes=0)
    ob = Outbox(folder / "outbox", endpoint, keys, config=cfg)
    uids = []
    for i in range(n):
        ep = episode(i)
        uids.append(ep.uuid)
        marker = folder / f"put-{i}"
        if not marker.exists():
            ob.put(ep)
            marker.touch()
            time.sleep(0.05)  # collecting the next episode
    ok = ob.wait_committed(uids, timeout=120)
    ob.close()
    print("all committed" if ok else f"timed out: {len(ob.pending())} pending", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
