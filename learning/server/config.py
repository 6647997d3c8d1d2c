"""The learner server's limits: what one robot may send, how much the learner keeps, how often it warns."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

from robot import wire
from robot.episode import MAX_DECODED_BYTES

log = logging.getLogger(__name__)


OnEpisode = Callable[[int, dict[str, Any]], None]


@dataclass(frozen=True)
class ServerConfig:
    max_episode_bytes: int = wire.MAX_EPISODE_BYTES
    max_decoded_bytes: int = MAX_DECODED_BYTES  # an episode's arrays, decoded, at most (zlib ones: see MAX_INFLATE_RATIO)
    max_chunk_bytes: int = 4 << 20        # largest CHUNK payload accepted (robots default to 1 MiB)
    policy_chunk_bytes: int = 1 << 20     # POL_CHUNK size
    max_uploads: int = 16                 # uploads with an open file at once; beyond, the least recent is closed (kept on disk)
    max_partial_uploads: int = 256        # partial uploads kept on disk; beyond, the least recently touched is deleted
    max_partial_bytes: int = 32 << 30     # declared bytes of all partial uploads on disk; beyond, idle ones are deleted
    partial_ttl_s: float = 3600.0         # a partial upload untouched this long that no connected robot is sending is deleted
    disk_reserve_bytes: int = 256 << 20   # refuse an upload that would leave less free space than this
    max_robots: int = 256                 # sessions at once
    stale_after_s: float = 10.0           # a robot silent this long may be replaced by a new connection with its id
    max_clock_skew_s: float = 2.0         # warn when a robot's wall clock is further off than this
    heartbeat_s: float = 1.0              # ZMTP heartbeat (dead TCP peers are dropped after 3x this)
    rcv_hwm: int = 64                     # messages queued per peer before ZeroMQ stops reading its socket
    state_every_chunks: int = 32          # persist an upload's chunk bitmap every N chunks (resume after restart)
    warn_every_s: float = 5.0             # at most one warning per peer and reason per this many seconds

    def __post_init__(self) -> None:
        def need(ok: bool, name: str, why: str) -> None:
            if not ok:
                raise ValueError(f"server config field {name!r}: {why}, got {getattr(self, name)!r}")

        need(0 < self.max_episode_bytes <= wire.MAX_EPISODE_BYTES, "max_episode_bytes", f"must be in (0, {wire.MAX_EPISODE_BYTES}]")
        need(0 < self.max_decoded_bytes <= MAX_DECODED_BYTES, "max_decoded_bytes", f"must be in (0, {MAX_DECODED_BYTES}]")
        need(wire.MIN_CHUNK_BYTES <= self.max_chunk_bytes <= wire.MAX_PAYLOAD_BYTES, "max_chunk_bytes",
             f"must be in [{wire.MIN_CHUNK_BYTES}, {wire.MAX_PAYLOAD_BYTES}]")
        need(wire.MIN_CHUNK_BYTES <= self.policy_chunk_bytes <= wire.MAX_PAYLOAD_BYTES, "policy_chunk_bytes",
             f"must be in [{wire.MIN_CHUNK_BYTES}, {wire.MAX_PAYLOAD_BYTES}]")
        for name in ("max_uploads", "max_partial_uploads", "max_robots", "rcv_hwm", "state_every_chunks"):
            need(isinstance(getattr(self, name), int) and getattr(self, name) >= 1, name, "must be an int >= 1")
        for name in ("partial_ttl_s", "stale_after_s", "max_clock_skew_s", "heartbeat_s", "warn_every_s"):
            need(getattr(self, name) > 0, name, "must be positive")
        need(self.disk_reserve_bytes >= 0, "disk_reserve_bytes", "must be >= 0")
        need(self.max_partial_bytes >= self.max_episode_bytes, "max_partial_bytes",
             f"must be >= max_episode_bytes ({self.max_episode_bytes}) so that the largest episode can be received")
