"""`wvl keys`: create a ZeroMQ CURVE key pair for the learner link (see robot/wire.py for how keys are used)."""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from robot import wire

log = logging.getLogger(__name__)


def main(cfg: DictConfig, mode: str | None = None) -> int:
    pub, sec = wire.generate_keypair(cfg.out, str(cfg.name), overwrite=bool(cfg.overwrite))
    print(f"wrote {pub} (public) and {sec} (secret, mode 0600)")
    if cfg.name == "learner":
        print(f"learner: `wvl serve keys.secret={sec}`; copy {pub} to every robot (the key they pin)")
    else:
        print(f"robot {cfg.name}: keep {sec} on the robot PC; copy {pub} into the learner's allow-list folder (keys.allow)")
    return 0
