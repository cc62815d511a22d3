"""LSE-D and LSE-C: lip-sync error of the generated listener video against the generated speech.

OmniResponse's released ``evaluation/audio/audio_sync`` muxes each generated video with its
speech, runs joonson/syncnet_python's ``run_pipeline.py`` (S3FD face detection, face tracks,
224x224 crops) and scores every face track with Wav2Lip's ``calculate_scores_real_videos.py`` /
``SyncNetInstance_calc_scores.py`` (the released folder imports that module but does not ship it).
Here, per clip:

1. video at 25 fps; every frame is taken as the face crop: center-cropped to a square (a no-op on
   square renders) and resized to 224x224 (bilinear, as ``cv2.resize``), BGR, raw 0..255 values;
2. clips shorter than ``min_frames`` (101) frames at 25 fps are left out: ``run_pipeline.py``
   keeps only face tracks of more than ``--min_track`` 100 frames, so such a video writes no score
   line and does not enter the released average;
3. audio at 16 kHz scaled to the int16 range (as the original reads a pcm_s16le wav), MFCC with
   ``python_speech_features.mfcc`` defaults: 13 coefficients every 10 ms;
4. ``W = min(video frames, samples // 640) - 5`` windows; window ``i`` = frames ``i..i+4`` and
   MFCC steps ``4i..4i+19``; one SyncNet embedding per window and modality;
5. for every audio shift ``-vshift..vshift`` (15, i.e. 31 offsets) the distance of video window
   ``i`` to audio window ``i + shift`` (zero vectors beyond the ends), averaged over windows;
6. per clip LSE-D = the smallest of those 31 mean distances, LSE-C = their median minus it;
7. the run's value is the plain mean over clips (the released script averages the first column
   of ``all_scores.txt``, one line per face track; a render holds one face, so one per video).
   The released scripts report only LSE-D; LSE-C is averaged the same way.

``*_listener_speaking`` repeat steps 5-7 over the windows whose middle frame has ``ref_vad`` True,
for clips with at least one second (25) of such windows; NaN when no clip has (our addition).

Deviations from the released pipeline: no face detection or tracking. The released crop is the
smoothed S3FD box enlarged by ``--crop_scale`` 0.4 and shifted towards the chin; here the whole
(square) render is the crop, which is right for renders framed on the face and differs otherwise;
faces under 100 pixels, which ``run_pipeline.py`` drops, are kept. Frames are decoded by ffmpeg to
RGB directly (the original re-encodes to AVI/XVID and JPEG on the way, codec noise); audio is taken
as generated (the released one passes through AAC); non-25-fps videos are resampled by nearest
frame.

Dimension legend: ``W`` windows, ``D`` embedding size, ``K = 2 * vshift + 1`` shifts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from responsenet.errors import AssetMissing
from responsenet.eval.metrics.base import MetricContext, MetricSkipped, ScoredClip, require
from responsenet.media import decode_frames

FPS = 25
SAMPLE_RATE = 16000
VSHIFT = 15
WINDOW_FRAMES = 5
MFCC_PER_FRAME = 4  # 100 Hz MFCC / 25 fps
MFCC_WINDOW = 20
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640
FACE_SIZE = 224
MIN_SPEAKING_WINDOWS = FPS  # one second
#: syncnet_python run_pipeline.py keeps face tracks of more than --min_track (100) frames
MIN_FRAMES = 101
PAIRWISE_EPS = 1e-6  # torch.nn.functional.pairwise_distance's eps, as in the original


def sync_offsets(video_feats: np.ndarray, audio_feats: np.ndarray, vshift: int = VSHIFT
                 ) -> np.ndarray:
    """Distances of every video window to the audio windows around it.

    Args:
        video_feats: float [W, D] SyncNet lip embeddings.
        audio_feats: float [W, D] SyncNet audio embeddings of the same windows.
        vshift: largest shift, in frames.

    Returns:
        float64 [W, K]: ``out[i, j] = ||video[i] - audio[i + j - vshift] + eps||``, where audio
        windows outside ``0..W-1`` are zero vectors (as syncnet_python's ``calc_pdist``).
    """
    video = np.asarray(video_feats, np.float64)
    audio = np.asarray(audio_feats, np.float64)
    padded = np.pad(audio, ((vshift, vshift), (0, 0)))
    n = len(video)
    return np.stack([np.linalg.norm(video - padded[j:j + n] + PAIRWISE_EPS, axis=1)
                     for j in range(2 * vshift + 1)], axis=1)


def sync_scores(dists: np.ndarray) -> tuple[float, float, int]:
    """LSE-D, LSE-C and the audio lag of one clip from :func:`sync_offsets`' ``dists`` [W, K].

    Returns:
        ``(min_dist, confidence, audio_lag)``: the smallest window-mean distance over shifts, the
        median window-mean distance minus it, and the best shift in frames (positive: the audio
        of video frame ``i`` is at frame ``i + lag``; syncnet_python prints ``-lag`` as offset).
    """
    mean = np.asarray(dists, np.float64).mean(axis=0)
    best = int(np.argmin(mean))
    vshift = (len(mean) - 1) // 2
    return float(mean[best]), float(np.median(mean) - mean[best]), best - vshift


def mfcc_windows(audio: np.ndarray, n_windows: int) -> np.ndarray:
    """float32 [W, 1, 13, 20] MFCC windows of 16 kHz float audio in [-1, 1] (S samples)."""
    import python_speech_features

    pcm = np.clip(np.round(np.asarray(audio, np.float64) * 32768), -32768, 32767)
    mfcc = python_speech_features.mfcc(pcm.astype(np.int16), SAMPLE_RATE).T  # [13, M]
    starts = np.arange(n_windows) * MFCC_PER_FRAME
    cols = starts[:, None] + np.arange(MFCC_WINDOW)[None, :]
    return mfcc[:, cols].transpose(1, 0, 2)[:, None].astype(np.float32)


def face_frames(frames: np.ndarray) -> torch.Tensor:
    """uint8 RGB [T, H, W, 3] -> uint8 BGR [3, T, 224, 224] (center square crop, bilinear)."""
    height, width = frames.shape[1:3]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    x = torch.from_numpy(np.ascontiguousarray(frames[:, top:top + side, left:left + side, ::-1]))
    x = x.permute(0, 3, 1, 2).float()
    if side != FACE_SIZE:
        x = F.interpolate(x, size=(FACE_SIZE, FACE_SIZE), mode="bilinear", align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(1, 0, 2, 3).contiguous()


def to_25fps(n_frames: int, fps: float) -> np.ndarray:
    """Indices of the source frames nearest to the times of a 25 fps sequence, int [T25]."""
    if abs(fps - FPS) < 1e-6:
        return np.arange(n_frames)
    index = np.round(np.arange(int(np.floor(n_frames * FPS / fps))) * fps / FPS).astype(int)
    return index[index < n_frames]


def speaking_windows(ref_vad: np.ndarray, fps: float, n_windows: int) -> np.ndarray:
    """bool [W]: the middle frame of window ``i`` (25 fps frame ``i + 2``) has the listener speak."""
    vad = np.asarray(ref_vad, bool)[to_25fps(len(ref_vad), fps)]
    middle = np.arange(n_windows) + WINDOW_FRAMES // 2
    out = np.zeros(n_windows, bool)
    inside = middle < len(vad)
    out[inside] = vad[middle[inside]]
    return out


@torch.no_grad()
def clip_distances(net, frames: torch.Tensor, audio: np.ndarray, vshift: int = VSHIFT,
                   batch_size: int = 20, device: str = "cpu") -> np.ndarray | None:
    """:func:`sync_offsets` of one clip, or None when it is shorter than 6 frames.

    Args:
        net: a :class:`~responsenet.eval.metrics.syncnet_model.SyncNet` in eval mode.
        frames: uint8 [3, T, 224, 224] from :func:`face_frames` at 25 fps.
        audio: float32 [S] at 16 kHz.
    """
    n_windows = min(frames.shape[1], len(audio) // SAMPLES_PER_FRAME) - WINDOW_FRAMES
    if n_windows < 1:
        return None
    mfcc = torch.from_numpy(mfcc_windows(audio, n_windows))
    video_feats, audio_feats = [], []
    for start in range(0, n_windows, batch_size):
        stop = min(n_windows, start + batch_size)
        lips = torch.stack([frames[:, i:i + WINDOW_FRAMES] for i in range(start, stop)]).float()
        video_feats.append(net.forward_lip(lips.to(device)).cpu())
        audio_feats.append(net.forward_aud(mfcc[start:stop].to(device)).cpu())
    return sync_offsets(torch.cat(video_feats).numpy(), torch.cat(audio_feats).numpy(), vshift)


def _resample_audio(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    if sample_rate == SAMPLE_RATE:
        return np.asarray(audio, np.float32)
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(SAMPLE_RATE, sample_rate)
    return resample_poly(audio, SAMPLE_RATE // g, sample_rate // g).astype(np.float32)


def _load_frames(clip: ScoredClip, chunk: int = 64) -> torch.Tensor:
    """uint8 [3, T25, 224, 224] face frames of ``clip.gen_video`` at 25 fps."""
    parts, pending = [], []
    for frame in decode_frames(clip.gen_video):
        pending.append(frame)
        if len(pending) == chunk:
            parts.append(face_frames(np.stack(pending)))
            pending = []
    if pending:
        parts.append(face_frames(np.stack(pending)))
    if not parts:
        return torch.zeros((3, 0, FACE_SIZE, FACE_SIZE), dtype=torch.uint8)
    frames = torch.cat(parts, dim=1)
    return frames[:, torch.from_numpy(to_25fps(frames.shape[1], clip.fps))]


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def lse(clips: Sequence[ScoredClip], ctx: MetricContext) -> dict[str, float]:
    """LSE-D (``d``) and LSE-C (``c``), overall and where the real listener speaks.

    Params (``ctx.params["lse"]``): ``vshift`` (15), ``batch_size`` (20), ``min_frames`` (101:
    clips with fewer 25 fps frames are left out, as the released pipeline's face tracking drops
    them; 0 scores every clip of at least 6 frames).

    Returns:
        ``{"d", "c", "d_listener_speaking", "c_listener_speaking"}``, each a mean over clips.

    Raises:
        MetricSkipped: no clip with video and audio, the ``syncnet`` weights are missing or
            unusable, or no clip is long enough.
    """
    from responsenet.eval.metrics.syncnet_model import load_syncnet

    require(clips, "gen_video", "gen_audio")
    weights = ctx.asset("syncnet") / "syncnet_v2.model"
    try:
        net = load_syncnet(weights, ctx.device)
    except AssetMissing as e:
        raise MetricSkipped(f"model asset 'syncnet' unusable: {e.message}",
                            wanted="syncnet/syncnet_v2.model") from e
    vshift = int(ctx.param("lse", "vshift", VSHIFT))
    batch_size = int(ctx.param("lse", "batch_size", 20))
    min_frames = int(ctx.param("lse", "min_frames", MIN_FRAMES))
    scores: dict[str, list[float]] = {"d": [], "c": [], "d_speaking": [], "c_speaking": []}
    too_short = 0
    for clip in clips:
        if clip.gen_video is None or clip.gen_audio is None:
            continue
        frames = _load_frames(clip)
        if frames.shape[1] < min_frames:
            too_short += 1
            continue
        audio = _resample_audio(clip.gen_audio, clip.sample_rate)
        dists = clip_distances(net, frames, audio, vshift, batch_size, ctx.device)
        if dists is None:
            too_short += 1
            continue
        d, c, _ = sync_scores(dists)
        scores["d"].append(d)
        scores["c"].append(c)
        if clip.ref_vad is not None:
            mask = speaking_windows(clip.ref_vad, clip.fps, len(dists))
            if mask.sum() >= MIN_SPEAKING_WINDOWS:
                d, c, _ = sync_scores(dists[mask])
                scores["d_speaking"].append(d)
                scores["c_speaking"].append(c)
    ctx.notes["lse"] = {"scored_clips": len(scores["d"]), "too_short": too_short}
    if not scores["d"]:
        raise MetricSkipped(f"every clip with generated video and audio is shorter than "
                            f"{max(min_frames, WINDOW_FRAMES + 1)} frames at {FPS} fps "
                            "(param lse.min_frames)")
    return {"d": _mean(scores["d"]), "c": _mean(scores["c"]),
            "d_listener_speaking": _mean(scores["d_speaking"]),
            "c_listener_speaking": _mean(scores["c_speaking"])}
