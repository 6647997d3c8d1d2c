"""Keep episodes from a moved camera out of the world model's training set.

Episodes carry ``Episode.info["calibration_id"]`` (a string for a one-camera rig, a {camera: id} dict for
several; see `calibration.files.episode_calibration_id`). The world-model data selection calls

    keep = indices_for_calibration(store, current_ids, allowed=compatible_ids(folder, camera))

and trains on ``keep`` only, unless the user says otherwise (``allow_moved=True``). `compatible_ids` admits
older calibrations of the same placement (a re-calibration without moving the camera gives a new id that is
within the drift thresholds of the old one).

Works on anything with a ``rows`` list of dicts holding ``info_json`` (EpisodeStore) or ``info`` — no
dependency on learning/.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Iterable

from calibration.drift import DriftThresholds
from calibration.files import handeye_history, handeye_path, load_handeye
from calibration.geometry import transform_delta

log = logging.getLogger(__name__)


def _info(row: dict[str, Any]) -> dict[str, Any]:
    if "info" in row and isinstance(row["info"], dict):
        return row["info"]
    raw = row.get("info_json")
    return json.loads(raw) if raw else {}


def compatible_ids(folder: str | os.PathLike, camera: str, thresholds: DriftThresholds = DriftThresholds()) -> set[str]:
    """Ids of every saved hand-eye calibration of ``camera`` whose camera pose is within ``thresholds`` of
    the current one (the current id included)."""
    current = load_handeye(handeye_path(folder, camera))
    out = {current.calibration_id}
    for cid, cal in handeye_history(folder, camera).items():
        if cal.kind != current.kind or cal.parent != current.parent:
            continue
        mm, deg = transform_delta(current.T_parent_optical, cal.T_parent_optical)
        if mm <= thresholds.translation_mm and deg <= thresholds.rotation_deg:
            out.add(cid)
    return out


def _matches(episode_ids: Any, allowed: dict[str, set[str]] | set[str]) -> bool:
    if isinstance(allowed, dict):
        if not isinstance(episode_ids, dict):
            # A one-camera id against a multi-camera rig: it matches if it is allowed for the (only) camera.
            return len(allowed) == 1 and episode_ids in next(iter(allowed.values()))
        return all(episode_ids.get(cam) in ids for cam, ids in allowed.items())
    if isinstance(episode_ids, dict):
        return len(episode_ids) == 1 and next(iter(episode_ids.values())) in allowed
    return episode_ids in allowed


def indices_for_calibration(store_or_rows: Any, current: str | dict[str, str] | None,
                            allowed: set[str] | dict[str, set[str]] | None = None, *, allow_moved: bool = False,
                            keep_uncalibrated: bool = False, indices: Iterable[int] | None = None) -> list[int]:
    """Episode indices recorded with a camera placement compatible with ``current``.

    ``current``: the id (or {camera: id}) of the calibration in force now; None (simulation, no calibration)
    keeps everything. ``allowed``: ids accepted as the same placement (default: just ``current``; see
    `compatible_ids`). ``allow_moved``: keep everything (the user said so; logged). ``keep_uncalibrated``:
    keep episodes that carry no calibration id (recorded before calibration; where the camera was is unknown,
    so they are refused by default). ``indices``: restrict to these (e.g. `EpisodeStore.indices(outcomes=...)`).
    """
    rows = store_or_rows.rows if hasattr(store_or_rows, "rows") else list(store_or_rows)
    wanted = None if indices is None else set(indices)
    rows = [r for r in rows if wanted is None or r["episode_index"] in wanted]
    if current is None or allow_moved:
        if allow_moved and current is not None:
            log.warning("allow_moved: keeping episodes from every camera calibration (%d episodes)", len(rows))
        return [r["episode_index"] for r in rows]
    if allowed is None:
        allowed = {c: {i} for c, i in current.items()} if isinstance(current, dict) else {current}
    keep, moved, unknown = [], 0, 0
    for r in rows:
        ids = _info(r).get("calibration_id")
        if ids is None:
            unknown += 1
            if keep_uncalibrated:
                keep.append(r["episode_index"])
        elif _matches(ids, allowed):
            keep.append(r["episode_index"])
        else:
            moved += 1
    if moved or unknown:
        log.warning("calibration filter: kept %d episodes; refused %d from another camera placement%s%s", len(keep),
                    moved, f" and {unknown} without a calibration id" if unknown and not keep_uncalibrated else "",
                    " (pass allow_moved=True to use them anyway)" if moved else "")
    return keep
