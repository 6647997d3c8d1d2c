"""`wvl view`: episodes of a store rendered as a labelled video grid (MP4/GIF) and a rerun recording.

Each tile shows one episode with its outcome, the per-frame reward and the step drawn on the frame; an
episode that ended before the longest one holds its last frame. The rerun `.rrd` holds every frame, action
and reward on a shared step timeline (open it with `rerun file.rrd`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
from omegaconf import DictConfig

from learning.data.store import EpisodeStore
from learning.data.video import encode_video
from robot.episode import Episode

log = logging.getLogger(__name__)

OUTCOME_COLOURS = {"success": (40, 200, 40), "near_success": (255, 170, 0), "failure": (230, 40, 40), "unlabeled": (200, 200, 200)}


def label_frames(ep: Episode, camera: str | None = None, scale: int = 4) -> np.ndarray:
    """(T, H*scale, W*scale, 3) uint8 frames with outcome, reward and step drawn on them."""
    cam = camera or ep.cameras[0]
    frames = ep.images[cam]
    T, H, W, _ = frames.shape
    out = np.empty((T, H * scale, W * scale, 3), np.uint8)
    colour = OUTCOME_COLOURS.get(ep.outcome, (255, 255, 255))
    font_scale = max(0.3, 0.12 * scale)
    for t in range(T):
        img = cv2.resize(frames[t], (W * scale, H * scale), interpolation=cv2.INTER_NEAREST)
        cv2.rectangle(img, (0, 0), (W * scale - 1, H * scale - 1), colour, max(1, scale // 2))
        text = f"{ep.outcome} t={t} r={ep.rewards[t]:.0f}"
        cv2.putText(img, text, (4, int(12 * font_scale / 0.4)), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(img, text, (4, int(12 * font_scale / 0.4)), cv2.FONT_HERSHEY_SIMPLEX, font_scale, colour, 1, cv2.LINE_AA)
        if ep.rewards[t] > 0.5:  # a success frame: fill a bar along the bottom
            img[-max(2, scale):, :] = colour
        out[t] = img
    return out


def grid(videos: list[np.ndarray], columns: int) -> np.ndarray:
    """Tile (T_i, H, W, 3) videos into one (T_max, rows*H, cols*W, 3) video; short ones hold their last frame."""
    T = max(len(v) for v in videos)
    H, W = videos[0].shape[1:3]
    cols = min(columns, len(videos))
    rows = -(-len(videos) // cols)
    out = np.zeros((T, rows * H, cols * W, 3), np.uint8)
    for i, v in enumerate(videos):
        r, c = divmod(i, cols)
        padded = np.concatenate([v, np.repeat(v[-1:], T - len(v), 0)]) if len(v) < T else v
        out[:, r * H:(r + 1) * H, c * W:(c + 1) * W] = padded
    return out


def write_gif(frames: np.ndarray, path: Path, fps: float) -> None:
    from PIL import Image

    imgs = [Image.fromarray(f) for f in frames]
    imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=int(1000 / fps), loop=0)


def write_rrd(episodes: list[tuple[int, Episode]], path: Path) -> None:
    try:
        import rerun as rr
    except ImportError as e:
        raise ImportError("writing .rrd needs rerun: pip install 'world-vla-loop[viz]' (or rrd=false)") from e
    rec = rr.RecordingStream("world_vla_loop_view")
    for index, ep in episodes:
        base = f"episode_{index:04d}"
        rec.log(f"{base}/info", rr.TextDocument(f"{ep.task}\noutcome: {ep.outcome}\nsource: {ep.source}\nuuid: {ep.uuid}"), static=True)
        for t in range(len(ep)):
            rec.set_time("step", sequence=t)
            for cam, frames in ep.images.items():
                rec.log(f"{base}/{cam}", rr.Image(frames[t]))
            rec.log(f"{base}/reward", rr.Scalars(float(ep.rewards[t])))
            for d in range(ep.actions.shape[1]):
                rec.log(f"{base}/action/{d}", rr.Scalars(float(ep.actions[t, d])))
    rec.save(str(path))


def main(cfg: DictConfig, mode: str | None = None) -> int:
    store = EpisodeStore(cfg.store, create=False)
    if cfg.outcome:
        indices = store.indices(outcomes=(cfg.outcome,))[: cfg.limit]
    else:
        eps = cfg.episodes
        if isinstance(eps, (str, int)) or not all(isinstance(i, int) and not isinstance(i, bool) for i in eps):
            raise ValueError(f"episodes: {eps!r} is not a list of episode indices, e.g. episodes=[0,1,2] "
                             "(or episodes=[] outcome=success for the first `limit` successes)")
        indices = list(eps)[: cfg.limit]
    if not indices:
        raise ValueError(f"no episodes selected from {store.root} (episodes={list(cfg.episodes)}, outcome={cfg.outcome})")
    out = Path(cfg.out)
    if out.suffix not in (".mp4", ".gif", ".png"):
        raise ValueError(f"out: {out} must end in .mp4, .gif or .png (one still: frame `frame` of every tile)")
    out.parent.mkdir(parents=True, exist_ok=True)
    episodes = [(i, store.read(i)) for i in indices]
    fps = episodes[0][1].fps
    video = grid([label_frames(ep, cfg.camera, cfg.scale) for _, ep in episodes], cfg.columns)
    if out.suffix == ".png":
        from PIL import Image

        t = min(int(cfg.get("frame", 0)), len(video) - 1)
        Image.fromarray(video[t]).save(out)
        video = video[t:t + 1]
    elif out.suffix == ".gif":
        write_gif(video, out, fps)
    else:
        encode_video(video, out, fps, crf=18)
    print(f"wrote {out} ({len(episodes)} episodes, {len(video)} frames)")
    if cfg.rrd:
        rrd = out.with_suffix(".rrd")
        write_rrd(episodes, rrd)
        print(f"wrote {rrd} (open with: rerun {rrd})")
    return 0
