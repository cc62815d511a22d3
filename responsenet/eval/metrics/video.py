"""FVD: Fréchet video distance of the generated listener videos to the real ones, StyleGAN-V style.

As StyleGAN-V's ``metrics/frechet_video_distance.py`` computes it:

- detector: ``i3d_torchscript.pt`` (Kinetics-400 I3D, the TF-hub FVD network reproduced in
  TorchScript) loaded with ``torch.jit.load``, called on uint8 [B, 3, N, H, W] (values 0..255)
  with ``rescale=True, resize=True, return_features=True``: the module itself maps the values to
  [-1, 1] and resizes every frame to 224x224, and returns the 400-d pre-softmax features;
- items: clips of ``N`` consecutive frames (16) at a random offset;
- statistics: mean and biased covariance (divided by the item count) of each side's features;
- distance: ``|mu_g - mu_r|^2 + tr(S_g + S_r - 2 sqrtm(S_g S_r))``, real part (computed by
  :func:`responsenet.eval.metrics.face.frechet_distance`, which adds pytorch-fid's guards for
  singular or numerically complex products and clamps round-off below 0 to 0).

Sampling here: for each seed ``ctx.seed + s``, ``s < n_seeds`` (default 3), each scored clip
gives ``windows_per_clip`` (1) windows at random starts, the same starts in the generated and the
real video; clips shorter than ``N`` frames are left out (StyleGAN-V's ``discard_short_videos``).
The value is the mean FVD over seeds. Frames are decoded at their own size (the detector resizes).

Dimension legend: ``B`` windows, ``N`` frames per window, ``F`` feature size.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from responsenet.eval.metrics.base import MetricContext, MetricSkipped, ScoredClip, require
from responsenet.eval.metrics.face import frechet_distance
from responsenet.media import decode_frames

N_FRAMES = 16
DETECTOR_KWARGS = {"rescale": True, "resize": True, "return_features": True}


def feature_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [F] and biased covariance [F, F] of float features [B, F] (StyleGAN-V FeatureStats)."""
    x = np.asarray(feats, np.float64)
    mu = x.mean(axis=0)
    return mu, x.T @ x / len(x) - np.outer(mu, mu)


def window_starts(n_frames: int, n_window: int, count: int, seed: Sequence[int]) -> np.ndarray:
    """``count`` random window starts in ``0..n_frames - n_window``, int [count] (empty if short)."""
    if n_frames < n_window:
        return np.zeros(0, int)
    return np.random.default_rng(list(seed)).integers(0, n_frames - n_window + 1, size=count)


def read_windows(path: str | Path, starts: Sequence[int], n_window: int) -> list[np.ndarray | None]:
    """uint8 [N, H, W, 3] frames of every window starting at ``starts`` (None: past the end).

    Decodes the video once and keeps only the frames some window needs.
    """
    needed = {s + k for s in starts for k in range(n_window)}
    last = max(needed, default=-1)
    kept: dict[int, np.ndarray] = {}
    for index, frame in enumerate(decode_frames(path)):
        if index in needed:
            kept[index] = frame
        if index >= last:
            break
    out: list[np.ndarray | None] = []
    for start in starts:
        frames = [kept.get(start + k) for k in range(n_window)]
        out.append(None if any(f is None for f in frames) else np.stack(frames))
    return out


def load_detector(path: str | Path, device: str = "cpu") -> torch.jit.ScriptModule:
    """The I3D TorchScript at ``path`` in eval mode on ``device``."""
    with warnings.catch_warnings():  # TorchScript is deprecated, but it is the asset's format
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(path), map_location=device).eval()


@torch.no_grad()
def video_features(detector, windows: Sequence[np.ndarray], batch_size: int = 8,
                   device: str = "cpu") -> np.ndarray:
    """Detector features float64 [B, F] of uint8 windows [N, H, W, 3] (all of one size)."""
    out = []
    for start in range(0, len(windows), batch_size):
        batch = torch.from_numpy(np.stack(windows[start:start + batch_size]))
        batch = batch.permute(0, 4, 1, 2, 3).contiguous()  # [B, 3, N, H, W]
        out.append(detector(batch.to(device), **DETECTOR_KWARGS).cpu().numpy())
    return np.concatenate(out).astype(np.float64)


def _clip_windows(clip: ScoredClip, index: int, ctx: MetricContext, n_window: int,
                  per_clip: int, n_seeds: int):
    """(seed, gen window, ref window) triples of one clip, for every seed."""
    seeds = [window_starts(clip.n_frames, n_window, per_clip, (ctx.seed + s, index))
             for s in range(n_seeds)]
    starts = [int(x) for s in seeds for x in s]
    gen = read_windows(clip.gen_video, starts, n_window)
    ref = read_windows(clip.ref_video, starts, n_window)
    owners = [s for s, chosen in enumerate(seeds) for _ in chosen]
    return [(s, g, r) for s, g, r in zip(owners, gen, ref) if g is not None and r is not None]


def fvd(clips: Sequence[ScoredClip], ctx: MetricContext) -> float:
    """FVD of the generated vs the real listener videos, mean over seeds (lower is better).

    Params (``ctx.params["fvd"]``): ``n_frames`` (16), ``n_seeds`` (3), ``windows_per_clip`` (1),
    ``batch_size`` (8).

    Raises:
        MetricSkipped: no clip has both videos, the ``i3d_fvd`` weights are missing, or fewer than
            two clips are at least ``n_frames`` long.
    """
    require(clips, "gen_video", "ref_video")
    n_window = int(ctx.param("fvd", "n_frames", N_FRAMES))
    n_seeds = int(ctx.param("fvd", "n_seeds", 3))
    per_clip = int(ctx.param("fvd", "windows_per_clip", 1))
    batch_size = int(ctx.param("fvd", "batch_size", 8))
    detector = load_detector(ctx.asset("i3d_fvd") / "i3d_torchscript.pt", ctx.device)
    gen: list[list[np.ndarray]] = [[] for _ in range(n_seeds)]
    ref: list[list[np.ndarray]] = [[] for _ in range(n_seeds)]
    for index, clip in enumerate(clips):
        if clip.gen_video is None or clip.ref_video is None:
            continue
        triples = _clip_windows(clip, index, ctx, n_window, per_clip, n_seeds)
        if not triples:
            continue
        gen_feats = video_features(detector, [g for _, g, _ in triples], batch_size, ctx.device)
        ref_feats = video_features(detector, [r for _, _, r in triples], batch_size, ctx.device)
        for (seed, _, _), g, r in zip(triples, gen_feats, ref_feats):
            gen[seed].append(g)
            ref[seed].append(r)
    if min(len(g) for g in gen) < 2:
        raise MetricSkipped(f"FVD needs at least 2 windows of {n_window} frames per side; "
                            f"found {min(len(g) for g in gen)} (clips too short or too few)")
    values = [frechet_distance(*feature_stats(np.stack(g)), *feature_stats(np.stack(r)))
              for g, r in zip(gen, ref)]
    return float(np.mean(values))
