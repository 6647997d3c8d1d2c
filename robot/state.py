"""The robot state a policy takes as input: named features of the Episode contract's per-step state.

A policy's ``state`` input is a vector of named features, in the order its manifest lists them. One table
here says what each name means, so the learner (training windows from the store), the robot (`ArmState` of a
live arm) and the world model (its predicted state) build the same vector from the same fields:

==========  =============================================  ==========
feature     source                                         unit
==========  =============================================  ==========
ee_x/y/z    ``ee_pose[0:3]``, TCP position, base frame     m
ee_qx..qw   ``ee_pose[3:7]``, TCP orientation, xyzw        quaternion
gripper     ``gripper``, opening                           0 closed .. 1 open
==========  =============================================  ==========

The default policy state is ``DEFAULT_POLICY_STATE`` = TCP position + gripper opening (what OpenVLA-OFT's
proprioception and ManiSkill's RGB baselines give their policies, less what our tasks never change): the
SANS experts never rotate the hand, and a quaternion is double-covered (q and -q are one orientation), so
the orientation is left out unless a task needs it. Normalisation statistics travel with the policy.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

# name -> (field, index into it or None for a scalar field)
STATE_FEATURES: dict[str, tuple[str, int | None]] = {
    "ee_x": ("ee_pose", 0), "ee_y": ("ee_pose", 1), "ee_z": ("ee_pose", 2),
    "ee_qx": ("ee_pose", 3), "ee_qy": ("ee_pose", 4), "ee_qz": ("ee_pose", 5), "ee_qw": ("ee_pose", 6),
    "gripper": ("gripper", None),
}
DEFAULT_POLICY_STATE: tuple[str, ...] = ("ee_x", "ee_y", "ee_z", "gripper")


class StateSpecError(ValueError):
    """A state feature name is unknown, repeated, or a state vector has the wrong shape."""


def check_state_features(features: Sequence[str], what: str = "state") -> tuple[str, ...]:
    feats = tuple(str(f) for f in features)
    unknown = [f for f in feats if f not in STATE_FEATURES]
    if unknown:
        raise StateSpecError(f"{what}: unknown state feature(s) {unknown}; known: {list(STATE_FEATURES)}")
    if len(set(feats)) != len(feats):
        raise StateSpecError(f"{what}: repeated state features in {list(feats)}")
    return feats


def state_matrix(features: Sequence[str], ee_pose: np.ndarray, gripper: np.ndarray) -> np.ndarray:
    """(T, 7) ee_pose and (T,) gripper (one episode, or one step with T = 1) -> (T, S) float32 in ``features`` order."""
    ee = np.asarray(ee_pose, np.float32).reshape(-1, 7)
    g = np.asarray(gripper, np.float32).reshape(-1)
    if len(ee) != len(g):
        raise StateSpecError(f"state: {len(ee)} ee_pose rows but {len(g)} gripper values")
    fields = {"ee_pose": ee, "gripper": g}
    cols = []
    for f in check_state_features(features):
        name, i = STATE_FEATURES[f]
        cols.append(fields[name] if i is None else fields[name][:, i])
    return np.stack(cols, axis=-1).astype(np.float32) if cols else np.zeros((len(g), 0), np.float32)


def state_vector(features: Sequence[str], arm_state) -> np.ndarray:
    """An `ArmState` (a live arm's reading) -> (S,) float32 in ``features`` order."""
    return state_matrix(features, arm_state.ee_pose, np.asarray([arm_state.gripper]))[0]
