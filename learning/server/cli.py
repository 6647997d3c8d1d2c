"""`wvl serve`: the learner server in a process of its own."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from learning.data.store import VideoSettings
from learning.server.config import ServerConfig
from learning.server.learner import LearnerServer
from robot import wire

log = logging.getLogger(__name__)


def main(cfg: Any, mode: str | None = None) -> int:
    """`wvl serve`: run the learner server in this process until Ctrl-C / SIGTERM (or run_s)."""
    import signal

    kc = cfg["keys"]  # (cfg.keys is DictConfig's method)
    if kc.plaintext:
        keys: wire.LearnerKeys | wire.Plaintext = wire.PLAINTEXT
    else:
        keys = wire.LearnerKeys.load(kc.secret, kc.allow)
    lim = cfg.limits
    config = ServerConfig(max_episode_bytes=int(lim.max_episode_mb) << 20, max_chunk_bytes=int(lim.max_chunk_mb) << 20,
                          max_decoded_bytes=int(lim.max_decoded_mb) << 20, max_partial_bytes=int(lim.max_partial_mb) << 20,
                          partial_ttl_s=float(lim.partial_ttl_s),
                          disk_reserve_bytes=int(lim.disk_reserve_mb) << 20, max_robots=int(lim.max_robots))
    server = LearnerServer(cfg.store, str(cfg.endpoint), keys, config=config,
                           video=VideoSettings(codec=str(cfg.video.codec), crf=int(cfg.video.crf),
                                               lossless=bool(cfg.video.get("lossless", False))), state_dir=cfg.state)
    if cfg.policy:
        server.publish_policy(cfg.policy)
    stop = server._stop

    def on_signal(signum: int, frame: Any) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    t_end = None if cfg.run_s is None else time.monotonic() + float(cfg.run_s)

    def watchdog() -> None:
        while not stop.wait(float(cfg.status_every_s)):
            c = server.counters()
            log.info("status: %d committed, %d duplicate, %.1f MB in, %d rejects, %d sessions, policy %s",
                     c["episodes_committed"], c["episodes_duplicate"], c["bytes_received"] / 1e6, c["rejects"], c["sessions"],
                     c["policy_version"])
        return None

    threading.Thread(target=watchdog, name="wvl-serve-status", daemon=True).start()
    if t_end is not None:
        threading.Thread(target=lambda: (stop.wait(max(0.0, t_end - time.monotonic())), stop.set()), daemon=True).start()
    print(f"serving on {server.endpoint} (store {server.store.root}); Ctrl-C to stop", flush=True)
    try:
        server.serve_forever()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
