"""FVD: Fréchet video distance of the generated listener videos to the real ones.

As OmniResponse's released ``evaluation/video/fvd`` computes it (``preprocess_resize224.py``, then
``frechet_video_distance.py`` through ``run.sh``):

- preprocessing: every frame resized to 224x224 with OpenCV's area interpolation
  (:func:`resize_area`, the same weights as ``cv2.INTER_AREA``, within one grey level);
  param ``resize="bilinear"`` instead applies only the script's own bilinear resize, which is
  what happens to videos not run through the preprocessing step;
- items: one window of ``n_frames`` (256) consecutive frames per video (no temporal stride) at a
  random start; videos shorter than that, or that do not decode, are passed over;
- sampling: each side is a separate directory. Its sorted file names are shuffled with
  ``random.Random(seed)`` (real side: ``seed + 999``) and taken in that order until ``num_videos``
  (140) windows are collected; the starts come from one ``random.Random(seed)`` stream shared by
  both sides, generated side first as in ``run.sh``, drawn for every usable video of each
  32-video loading batch even past the 140th. :func:`sample_windows` reproduces those draws
  exactly when the files are named ``{clip_id}.mp4``. The two sides are not paired: each picks
  its own videos and starts. Fewer than ``num_videos`` usable videos is an error there and a skip
  here (``num_videos=0`` takes every usable video);
- detector: ``i3d_torchscript.pt`` (Kinetics-400 I3D, the TF-hub FVD network in TorchScript)
  called on uint8 [B, 3, N, 224, 224] with ``rescale=True, resize=False,
  return_features=True``, giving 400-d features;
- statistics: mean and biased covariance (divided by the item count), in float64;
- distance: :func:`frechet_distance`, with 1e-6 added to both covariance diagonals first;
- seeds: ``run.sh`` runs seeds 42..46 and prints one FVD each; the value here is their mean
  (the seeds are ``42 + ctx.seed + s`` for ``s < n_seeds``, 5), each seed's FVD in
  ``ctx.notes["fvd"]``.

Not reproduced: the preprocessing writes an ``mp4v`` file that the script decodes again (codec
noise on both sides), and torchvision and ffmpeg may convert YUV to RGB slightly differently.

Dimension legend: ``B`` windows, ``N`` frames per window, ``F`` feature size.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F

from responsenet.errors import StageFailure, UsageError
from responsenet.eval.metrics.base import MetricContext, MetricSkipped, ScoredClip, require
from responsenet.media import decode_frames

N_FRAMES = 256
NUM_VIDEOS = 140
BASE_SEED = 42
N_SEEDS = 5
SIZE = 224
LOADING_BATCH = 32  # the released --batch_size: how many videos are drawn before a size check
REAL_SEED_OFFSET = 999  # the second directory's shuffle seed is seed + 999
COV_EPS = 1e-6
DETECTOR_KWARGS = {"rescale": True, "resize": False, "return_features": True}
RESIZE_MODES = ("area", "bilinear")


# --- statistics and distance -----------------------------------------------------------------------

def feature_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [F] and biased covariance [F, F] of float features [B, F], in float64."""
    x = np.asarray(feats, np.float64)
    mu = x.mean(axis=0)
    return mu, x.T @ x / len(x) - np.outer(mu, mu)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = COV_EPS) -> float:
    """``|mu1 - mu2|^2 + tr(S1 + S2 - 2 sqrtm(S1 S2))`` with ``S = sigma + eps * I``.

    The released FVD script always adds ``eps`` to both diagonals (pytorch-fid does so only when
    the square root is not finite) and does not clamp a negative result to 0. An imaginary part
    of the square root up to 1e-3 is round-off and dropped; a larger one raises, as there.

    Raises:
        StageFailure: ``fvd_unstable`` when the square root has a large imaginary part.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    eye = np.eye(len(mu1)) * eps
    s1, s2 = np.asarray(sigma1, np.float64) + eye, np.asarray(sigma2, np.float64) + eye
    diff = mu1 - mu2
    with warnings.catch_warnings():  # an ill-conditioned product is judged below
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        root = scipy.linalg.sqrtm(s1 @ s2)
    if np.iscomplexobj(root):
        worst = float(np.abs(root.imag).max())
        if worst > 1e-3:
            raise StageFailure("fvd_unstable", f"FVD: the covariance product's square root has "
                               f"an imaginary part of {worst:.3g}; use more videos")
        root = root.real
    return float(diff @ diff + np.trace(s1 + s2 - 2.0 * root))


# --- frames --------------------------------------------------------------------------------------

def _area_weights(n_in: int, n_out: int, shrink: bool) -> np.ndarray:
    """float64 [n_out, n_in]: OpenCV's INTER_AREA weights along one axis.

    Shrinking (both axes of the image, as OpenCV decides): output pixel ``i`` averages the input
    span ``[i s, (i + 1) s)``, ``s = n_in / n_out``, each input pixel weighted by its overlap;
    OpenCV ignores a partial overlap under 1e-3 pixel. Otherwise OpenCV interpolates between two
    neighbours with the fraction ``(i + 1) - (floor(i s) + 1) / s`` (0 when negative).
    """
    weights = np.zeros((n_out, n_in))
    inverse = n_out / n_in
    scale = 1.0 / inverse  # as OpenCV forms it, which decides floor() at whole-number positions
    if shrink:
        for i in range(n_out):
            lo, hi = i * scale, (i + 1) * scale
            cell = min(scale, n_in - lo)
            last = min(int(np.floor(hi)), n_in - 1)
            first = min(int(np.ceil(lo)), last)
            if first - lo > 1e-3:
                weights[i, first - 1] += (first - lo) / cell
            weights[i, first:last] += 1.0 / cell
            if hi - last > 1e-3:
                weights[i, last] += min(hi - last, 1.0, cell) / cell
        return weights
    for i in range(n_out):
        sx = int(np.floor(i * scale))
        fx = (i + 1) - (sx + 1) * inverse
        fx = 0.0 if fx <= 0 else fx - np.floor(fx)
        if sx >= n_in - 1:
            sx, fx = n_in - 1, 0.0
        weights[i, sx] += 1 - fx
        if fx:
            weights[i, sx + 1] += fx
    return weights


def _banded(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A weight matrix [n_out, n_in] as (int [n_out, K] input indices, float [n_out, K] weights):
    each output pixel reads only the few input pixels it overlaps."""
    width = max(1, int((weights != 0).sum(axis=1).max()))
    first = np.argmax(weights != 0, axis=1)
    index = np.minimum(first[:, None] + np.arange(width)[None, :], weights.shape[1] - 1)
    taps = np.take_along_axis(weights, index, axis=1)
    taps[first[:, None] + np.arange(width)[None, :] >= weights.shape[1]] = 0.0
    return index, taps


def resize_area(frames: np.ndarray, size: int = SIZE, chunk: int = 16) -> np.ndarray:
    """uint8 [T, H, W, 3] -> uint8 [T, size, size, 3] with OpenCV INTER_AREA's weights.

    Computed in float64 and rounded as OpenCV rounds (half up for whole-number shrink factors,
    half to even otherwise). Shrinking matches ``cv2.resize`` on all but a few pixels in 1000;
    enlarging (a side under ``size``) differs by one grey level on about one pixel in ten, as
    OpenCV enlarges in 11-bit fixed point. No pixel differs by more than one level.
    """
    frames = np.asarray(frames)
    height, width = frames.shape[1:3]
    if (height, width) == (size, size):
        return frames.copy()
    shrink = height >= size and width >= size
    # OpenCV's whole-number shrink sums integers and rounds half up; its other paths round to
    # even (cvRound)
    whole = shrink and height % size == 0 and width % size == 0
    rounding = (lambda v: np.floor(v + 0.5)) if whole else np.rint
    row_index, row_taps = _banded(_area_weights(height, size, shrink))
    col_index, col_taps = _banded(_area_weights(width, size, shrink))
    out = np.empty((len(frames), size, size, 3), np.uint8)
    for start in range(0, len(frames), chunk):
        x = frames[start:start + chunk].astype(np.float64)
        x = np.einsum("tokwc,ok->towc", x[:, row_index], row_taps)     # [t, size, W, 3]
        x = np.einsum("topkc,pk->topc", x[:, :, col_index], col_taps)  # [t, size, size, 3]
        out[start:start + chunk] = np.clip(rounding(np.round(x, 6)), 0, 255)  # exact ties
    return out


def resize_bilinear(frames: np.ndarray, size: int = SIZE) -> np.ndarray:
    """uint8 [T, H, W, 3] -> uint8 [T, size, size, 3]: torch bilinear, rounded (the FVD script's
    own resize, a no-op on 224x224 input)."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def count_frames(path: str | Path) -> int | None:
    """Decoded frame count of a video, None when it does not decode."""
    try:
        return sum(1 for _ in decode_frames(path))
    except StageFailure:
        return None


def read_window(path: str | Path, start: int, n_frames: int) -> np.ndarray | None:
    """uint8 [n_frames, H, W, 3]: frames ``start .. start + n_frames - 1`` (None: past the end or
    not decodable). Decoding stops after the window."""
    kept = []
    try:
        for index, frame in enumerate(decode_frames(path)):
            if index >= start:
                kept.append(frame)
            if len(kept) == n_frames:
                break
    except StageFailure:
        return None
    return np.stack(kept) if len(kept) == n_frames else None


# --- sampling ------------------------------------------------------------------------------------

def sample_windows(names: Sequence[str], length_of: Callable[[str], int | None], n_frames: int,
                   num_videos: int, shuffle_rng: random.Random, start_rng: random.Random,
                   loading_batch: int = LOADING_BATCH) -> list[tuple[str, int]]:
    """The (file name, start frame) windows the released script takes from one directory.

    The sorted ``names`` are shuffled with ``shuffle_rng`` and visited in order, a loading batch
    of ``loading_batch`` usable videos at a time; a usable video (``length_of`` not None and at
    least ``n_frames``) draws its start ``start_rng.randint(0, length - n_frames)``. Visiting
    stops once a completed batch brings the count to ``num_videos``; the windows past it were
    drawn (so ``start_rng`` moved on) but are not used.

    Returns:
        At most ``num_videos`` windows, in visiting order.
    """
    order = sorted(names)
    shuffle_rng.shuffle(order)
    chosen: list[tuple[str, int]] = []
    visited = 0
    while len(chosen) < num_videos and visited < len(order):
        batch: list[tuple[str, int]] = []
        while len(batch) < loading_batch and visited < len(order):
            name = order[visited]
            visited += 1
            length = length_of(name)
            if length is None or length < n_frames:
                continue
            batch.append((name, start_rng.randint(0, length - n_frames)))
        chosen += batch[:num_videos - len(chosen)]
    return chosen


# --- detector ------------------------------------------------------------------------------------

def load_detector(path: str | Path, device: str = "cpu") -> torch.jit.ScriptModule:
    """The I3D TorchScript at ``path`` in eval mode on ``device``."""
    with warnings.catch_warnings():  # TorchScript is deprecated, but it is the asset's format
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(path), map_location=device).eval()


@torch.no_grad()
def video_features(detector, windows: Sequence[np.ndarray], batch_size: int = 8,
                   device: str = "cpu") -> np.ndarray:
    """Detector features float64 [B, F] of uint8 windows [N, 224, 224, 3]."""
    out = []
    for start in range(0, len(windows), batch_size):
        batch = torch.from_numpy(np.stack(windows[start:start + batch_size]))
        batch = batch.permute(0, 4, 1, 2, 3).contiguous()  # [B, 3, N, H, W]
        feats = detector(batch.to(device), **DETECTOR_KWARGS).cpu().numpy()
        out.append(feats.astype(np.float32))  # the released stats start from float32
    return np.concatenate(out).astype(np.float64)


# --- metric --------------------------------------------------------------------------------------

class _Side:
    """One directory of the released protocol: videos by file name, lengths and features cached
    across seeds."""

    def __init__(self, name: str, videos: dict[str, Path], n_frames: int, resize: str):
        self.name, self.videos, self.n_frames, self.resize = name, videos, n_frames, resize
        self._lengths: dict[str, int | None] = {}
        self._feats: dict[tuple[str, int], np.ndarray] = {}

    def length_of(self, file_name: str) -> int | None:
        if file_name not in self._lengths:
            self._lengths[file_name] = count_frames(self.videos[file_name])
        return self._lengths[file_name]

    def features(self, windows: Sequence[tuple[str, int]], detector, batch_size: int,
                 device: str) -> np.ndarray:
        todo = [w for w in dict.fromkeys(windows) if w not in self._feats]
        for start in range(0, len(todo), batch_size):
            part = todo[start:start + batch_size]
            frames = []
            for file_name, first in part:
                window = read_window(self.videos[file_name], first, self.n_frames)
                if window is None:  # decoded shorter than counted: a broken file
                    raise StageFailure("corrupt_media", f"FVD: {self.videos[file_name]} ends "
                                       f"before frame {first + self.n_frames}")
                frames.append(resize_area(window) if self.resize == "area"
                              else resize_bilinear(window))
            for w, f in zip(part, video_features(detector, frames, batch_size, device)):
                self._feats[w] = f
        return np.stack([self._feats[w] for w in windows])

    def usable(self) -> int:
        return sum(1 for n in self.videos
                   if (length := self.length_of(n)) is not None and length >= self.n_frames)


def fvd(clips: Sequence[ScoredClip], ctx: MetricContext) -> float:
    """FVD of the generated vs the real listener videos, mean over seeds (lower is better).

    Params (``ctx.params["fvd"]``): ``n_frames`` (256), ``num_videos`` (140; 0 = every usable
    video), ``n_seeds`` (5), ``resize`` ("area" or "bilinear"), ``real_first`` (False: the
    generated side draws its starts first, as ``run.sh`` passes it as ``--dir_a``),
    ``batch_size`` (8, detector batch; changes only round-off).

    Raises:
        MetricSkipped: no clip has both videos, the ``i3d_fvd`` weights are missing, or a side
            has fewer than ``num_videos`` usable videos.
    """
    require(clips, "gen_video", "ref_video")
    n_frames = int(ctx.param("fvd", "n_frames", N_FRAMES))
    num_videos = int(ctx.param("fvd", "num_videos", NUM_VIDEOS))
    n_seeds = int(ctx.param("fvd", "n_seeds", N_SEEDS))
    resize = str(ctx.param("fvd", "resize", "area"))
    real_first = bool(ctx.param("fvd", "real_first", False))
    batch_size = int(ctx.param("fvd", "batch_size", 8))
    if resize not in RESIZE_MODES:
        raise UsageError(f"fvd resize must be one of {', '.join(RESIZE_MODES)}, not {resize!r}")
    gen = _Side("generated", {f"{c.clip_id}.mp4": Path(c.gen_video) for c in clips
                              if c.gen_video is not None}, n_frames, resize)
    real = _Side("real", {f"{c.clip_id}.mp4": Path(c.ref_video) for c in clips
                          if c.ref_video is not None}, n_frames, resize)
    wanted = num_videos if num_videos > 0 else min(gen.usable(), real.usable())
    for side in (gen, real):
        if (have := side.usable()) < max(wanted, 2):
            raise MetricSkipped(
                f"FVD needs {max(wanted, 2)} {side.name} videos of at least {n_frames} frames; "
                f"found {have} (params fvd.num_videos, fvd.n_frames)")
    detector = load_detector(ctx.asset("i3d_fvd") / "i3d_torchscript.pt", ctx.device)
    first, second = (real, gen) if real_first else (gen, real)
    values, seeds = [], []
    for s in range(n_seeds):
        seed = BASE_SEED + ctx.seed + s
        starts = random.Random(seed)  # the script's global random module, seeded once
        stats = {}
        for side, shuffle_seed in ((first, seed), (second, seed + REAL_SEED_OFFSET)):
            windows = sample_windows(list(side.videos), side.length_of, n_frames, wanted,
                                     random.Random(shuffle_seed), starts)
            stats[side.name] = feature_stats(side.features(windows, detector, batch_size,
                                                           ctx.device))
        values.append(frechet_distance(*stats["generated"], *stats["real"]))
        seeds.append(seed)
    ctx.notes["fvd"] = {"seeds": seeds, "per_seed": values, "videos_per_side": wanted}
    return float(np.mean(values))
