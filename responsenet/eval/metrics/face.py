"""Face metrics: Frechet distance (OmniResponse Table 2) and the Learning-to-Listen suite.

Face features are float32 [T, 64] per clip: 52 MediaPipe blendshapes (``BLENDSHAPE_NAMES``) then
the 12 pose values (top 3 rows of the facial transformation matrix, ``POSE_FIELDS``). The REACT
suite lives in :mod:`responsenet.eval.metrics.face_react`; :func:`react_suite` here forwards to it.

Frames without a real listener face (``ref_face_mask`` False) are dropped wherever the real
listener is compared with, and the same frames are dropped from the generated side of that
comparison; statistics of the generated face alone (Variance, the SID histogram) use every
generated frame. Speaker frames without a face (``spk_face_mask`` False) are dropped from P-FD
and rPCC.

Hyper-parameters, read with ``ctx.param(metric, key, default)``:

``fd``
    ``features`` ("all"): "all" 64 columns, "expression" the 52 blendshapes, "pose" the 12 pose
    values. ``eps`` (1e-6): diagonal offset added to both covariances when their product is
    singular (pytorch-fid's fix).
``l2l``
    ``sid_k`` (40): k-means clusters for the expression SID; ``sid_k_pose`` (20): for the pose
    SID (the values of the L2L follow-ups' evaluation code). ``kmeans_max_iter`` (300) and
    ``kmeans_tol`` (1e-4, relative to the mean per-column variance): Lloyd iterations, as
    sklearn's KMeans defaults. ``eps`` (1e-6): as for ``fd``. The k-means is seeded by ``ctx.seed``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import linalg, sparse

from responsenet.errors import UsageError
from responsenet.eval.metrics.base import MetricContext, MetricSkipped, ScoredClip, require
from responsenet.schema import FRAME_WIDTHS

N_EXPRESSION = FRAME_WIDTHS["blendshapes"]
FACE_DIM = N_EXPRESSION + FRAME_WIDTHS["pose"]
EXPRESSION, POSE = slice(0, N_EXPRESSION), slice(N_EXPRESSION, FACE_DIM)
_FEATURES = {"all": slice(0, FACE_DIM), "expression": EXPRESSION, "pose": POSE}


# ---------------------------------------------------------------- pure math


def gaussian_stats(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and unbiased covariance [D, D] (ddof=1, as ``np.cov`` and pytorch-fid) of
    ``frames`` [N, D], N >= 2, in float64."""
    frames = np.asarray(frames, np.float64)
    return frames.mean(axis=0), np.atleast_2d(np.cov(frames, rowvar=False))


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2):
    ``|mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 sqrtm(sigma1 @ sigma2))``.

    As pytorch-fid: ``scipy.linalg.sqrtm`` of the product; when that is not finite, ``eps`` is
    added to both diagonals; an imaginary part from round-off (diagonal within 1e-3 of 0) is
    dropped. Where the imaginary part is larger, the trace is taken from the eigenvalues of the
    symmetric ``sqrt(sigma1) sigma2 sqrt(sigma1)``, which has the same spectrum. A negative
    round-off result is clamped to 0.
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"Gaussians of different sizes: means {mu1.shape} vs {mu2.shape}, "
                         f"covariances {sigma1.shape} vs {sigma2.shape}")
    diff = mu1 - mu2
    tr_covmean = _trace_sqrt_product(sigma1, sigma2, eps)
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean
    return max(float(value), 0.0)


def _trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray, eps: float) -> float:
    """``tr(sqrtm(sigma1 @ sigma2))`` with pytorch-fid's guards (see :func:`frechet_distance`)."""
    with warnings.catch_warnings():  # a singular product is expected and handled here
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            offset = np.eye(len(sigma1)) * eps
            sigma1, sigma2 = sigma1 + offset, sigma2 + offset
            covmean = linalg.sqrtm(sigma1 @ sigma2)
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            return _trace_sqrt_product_sym(sigma1, sigma2)
        covmean = covmean.real
    return float(np.trace(covmean))


def _trace_sqrt_product_sym(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """``tr(sqrtm(sigma1 @ sigma2))`` as the sum of square roots of the eigenvalues of the
    symmetric PSD matrix ``sqrt(sigma1) sigma2 sqrt(sigma1)`` (negative round-off clipped)."""
    w, v = np.linalg.eigh((sigma1 + sigma1.T) / 2)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = root1 @ sigma2 @ root1
    return float(np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0, None)).sum())


def pearson_per_dim(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson correlation of each column of ``x`` [N, D] with the same column of ``y`` [N, D];
    0 where either column is constant (a constant sequence correlates with nothing) or N < 2."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 2:
        return np.zeros(x.shape[1])
    xc, yc = x - x.mean(axis=0), y - y.mean(axis=0)
    denom = np.sqrt((xc * xc).sum(axis=0) * (yc * yc).sum(axis=0))
    num = (xc * yc).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(denom > 0, num / np.where(denom > 0, denom, 1.0), 0.0)
    return np.clip(r, -1.0, 1.0)


def kmeans_fit(frames: np.ndarray, k: int, seed: int, max_iter: int = 300, tol: float = 1e-4
               ) -> np.ndarray:
    """Centres [k', D] of a seeded k-means (k-means++ start, Lloyd iterations) on ``frames``
    [N, D]; k' = min(k, distinct frames). An emptied cluster moves to the frame farthest from
    its centre. Stops when the squared centre shift is <= ``tol`` x mean column variance, as
    sklearn's KMeans."""
    x = np.asarray(frames, np.float64)
    rng = np.random.default_rng(seed)
    centres = _kmeans_pp(x, k, rng)
    threshold = tol * float(x.var(axis=0).mean())
    x2 = (x * x).sum(axis=1)
    for _ in range(max_iter):
        labels, d2 = _nearest(x, centres, x2)
        counts = np.bincount(labels, minlength=len(centres))
        onehot = sparse.csr_matrix((np.ones(len(x)), (labels, np.arange(len(x)))),
                                   shape=(len(centres), len(x)))
        new = (onehot @ x) / np.maximum(counts, 1)[:, None]
        for c in np.flatnonzero(counts == 0):
            far = int(np.argmax(d2))
            new[c], d2[far] = x[far], 0.0
        shift = float(((new - centres) ** 2).sum())
        centres = new
        if shift <= threshold:
            break
    return centres


def _kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding; stops early when every frame already coincides with a centre."""
    centres = [x[rng.integers(len(x))]]
    d2 = ((x - centres[0]) ** 2).sum(axis=1)
    while len(centres) < k and d2.sum() > 0:
        pick = int(rng.choice(len(x), p=d2 / d2.sum()))
        centres.append(x[pick])
        d2 = np.minimum(d2, ((x - x[pick]) ** 2).sum(axis=1))
    return np.array(centres)


def _nearest(x: np.ndarray, centres: np.ndarray, x2: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest centre [N] and the squared distance to it [N]."""
    x2 = (x * x).sum(axis=1) if x2 is None else x2
    d2 = x2[:, None] - 2 * x @ centres.T + (centres * centres).sum(axis=1)
    labels = np.argmin(d2, axis=1)
    return labels, np.clip(d2[np.arange(len(x)), labels], 0, None)


def kmeans_assign(frames: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Nearest-centre index [N] of each frame of ``frames`` [N, D]."""
    return _nearest(np.asarray(frames, np.float64), centres)[0]


def shannon_index(labels: np.ndarray, k: int) -> float:
    """Entropy in bits of the histogram of ``labels`` over ``k`` clusters (0 log 0 = 0)."""
    p = np.bincount(np.asarray(labels), minlength=k) / len(labels)
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum()) + 0.0


# ---------------------------------------------------------------- clips


@dataclass(frozen=True)
class FaceTracks:
    """One clip's validated face arrays.

    Attributes:
        gen: float32 [T, 64] generated listener; ``extra`` the further samples [K, T, 64] or None.
        ref: float32 [T, 64] real listener or None; ``ref_mask`` bool [T] (all False without ref).
        spk: float32 [T, 64] speaker or None; ``spk_mask`` bool [T] (all False without spk).
    """

    clip_id: str
    fps: float
    gen: np.ndarray
    ref: np.ndarray | None
    ref_mask: np.ndarray
    spk: np.ndarray | None
    spk_mask: np.ndarray
    extra: np.ndarray | None

    @property
    def n_samples(self) -> int:
        """Generated samples: ``gen`` plus the further samples of ``gen_samples``."""
        return 1 + (0 if self.extra is None else len(self.extra))

    def sample(self, k: int) -> np.ndarray:
        """Sample ``k`` [T, 64]: 0 is ``gen_face``, k >= 1 is ``gen_samples[k - 1]``."""
        return self.gen if k == 0 else self.extra[k - 1]  # type: ignore[index]


def face_tracks(clips: Sequence[ScoredClip], metric: str) -> list[FaceTracks]:
    """The clips that have a generated face, validated, in clip id order (so that seeded steps
    such as the k-means do not depend on the caller's order); UsageError names a bad clip."""
    out = []
    for clip in sorted(clips, key=lambda c: c.clip_id):
        if clip.gen_face is None:
            continue
        gen = _matrix(clip, metric, "gen_face", clip.gen_face, None)
        n = len(gen)
        ref = _matrix(clip, metric, "ref_face", clip.ref_face, n)
        spk = _matrix(clip, metric, "spk_face", clip.spk_face, n)
        extra = None
        if clip.gen_samples is not None:
            extra = np.asarray(clip.gen_samples)
            if extra.ndim != 3 or extra.shape[1:] != gen.shape:
                raise UsageError(f"metric {metric}: clip {clip.clip_id}: gen_samples has shape "
                                 f"{extra.shape}, expected [K, {n}, {FACE_DIM}] like gen_face")
            if not np.isfinite(extra).all():
                raise UsageError(f"metric {metric}: clip {clip.clip_id}: gen_samples holds NaN "
                                 "or inf values; fix the model output of that clip")
        out.append(FaceTracks(clip.clip_id, float(clip.fps), gen, ref,
                              _mask(clip, metric, "ref_face_mask", clip.ref_face_mask, ref, n),
                              spk, _mask(clip, metric, "spk_face_mask", clip.spk_face_mask, spk, n),
                              extra))
    return out


def _matrix(clip: ScoredClip, metric: str, name: str, value: np.ndarray | None, n: int | None
            ) -> np.ndarray | None:
    if value is None:
        return None
    arr = np.asarray(value)
    if arr.ndim != 2 or arr.shape[1] != FACE_DIM or (n is not None and len(arr) != n):
        want = f"[{n if n is not None else 'T'}, {FACE_DIM}]"
        raise UsageError(f"metric {metric}: clip {clip.clip_id}: {name} has shape {arr.shape}, "
                         f"expected {want} (52 blendshapes + 12 pose values per frame, as many "
                         "frames as gen_face); regenerate or re-export that clip")
    if not np.isfinite(arr).all():
        raise UsageError(f"metric {metric}: clip {clip.clip_id}: {name} holds NaN or inf values; "
                         "fix the model output or the corpus features of that clip")
    return arr


def _mask(clip: ScoredClip, metric: str, name: str, value: np.ndarray | None,
          face: np.ndarray | None, n: int) -> np.ndarray:
    if face is None:
        return np.zeros(n, bool)
    if value is None:
        return np.ones(n, bool)
    mask = np.asarray(value, bool)
    if mask.shape != (n,):
        raise UsageError(f"metric {metric}: clip {clip.clip_id}: {name} has shape {mask.shape}, "
                         f"expected [{n}] (one flag per frame)")
    return mask


# ---------------------------------------------------------------- fd


def fd(clips: Sequence[ScoredClip], ctx: MetricContext) -> float:
    """Frechet distance between the Gaussian of all generated listener frames of the split and
    that of all real listener frames (unbiased covariances, ddof=1, as ``np.cov``). Lower is
    better.

    As OmniResponse's released FD script, every frame of every clip counts by default
    (param ``frames="all"``), frames where the real listener's face was not found included
    (they hold the corpus's filled-in values). ``frames="face_present"`` leaves those frames
    out of both sets instead. Param ``features``: ``all`` (64 columns), ``expression`` (52
    blendshapes) or ``pose`` (12).
    """
    require(clips, "gen_face", "ref_face")
    features = ctx.param("fd", "features", "all")
    frames = ctx.param("fd", "frames", "all")
    if features not in _FEATURES or frames not in ("all", "face_present"):
        raise UsageError(f"metric fd: params features={features!r}, frames={frames!r}; "
                         f"expected features in {', '.join(_FEATURES)} and frames in all, "
                         "face_present")
    cols = _FEATURES[features]
    tracks = [t for t in face_tracks(clips, "fd") if t.ref is not None]
    keep = [t.ref_mask if frames == "face_present" else slice(None) for t in tracks]
    gen = _stack([t.gen[k, cols] for t, k in zip(tracks, keep)])
    real = _stack([t.ref[k, cols] for t, k in zip(tracks, keep)])  # type: ignore[index]
    if len(real) < 2:
        raise MetricSkipped(f"fd needs at least 2 real listener frames, found {len(real)}")
    return frechet_distance(*gaussian_stats(gen), *gaussian_stats(real),
                            eps=float(ctx.param("fd", "eps", 1e-6)))


def _stack(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros((0, FACE_DIM))


# ---------------------------------------------------------------- l2l


def l2l_suite(clips: Sequence[ScoredClip], ctx: MetricContext) -> dict[str, float]:
    """Learning to Listen (Ng et al., CVPR 2022) metrics, as its follow-ups' evaluation code
    computes them, on expression (the 52 blendshapes; keys without suffix) and on head pose
    (the 12 pose values; keys ``*_pose``): the two are kept apart as in L2L, which reports
    expression and rotation separately, because the pose translation (cm) would swamp the
    blendshape scores (0..1) in one Gaussian or one k-means.

    Keys: ``fd`` Frechet distance generated vs real frames over the split; ``pfd`` the same on
    (speaker, listener) frame pairs; ``variance`` mean over columns of the variance over time
    (ddof=0) of each generated clip, clip-averaged (``variance_real`` the same for the real
    listener); ``sid`` entropy in bits of the histogram of generated frames over k-means
    clusters fitted on real frames (``sid_real`` of the real frames); ``rpcc`` per clip the mean
    over columns of ``|r(gen, spk) - r(real, spk)|``, r = Pearson of column d with speaker
    column d, clip-averaged; ``l2`` per clip mean squared error to the real listener,
    clip-averaged. Lower is better for fd, pfd, rpcc, l2; variance and sid are best close to
    their ``*_real`` values (higher means more diverse). Departures from the DualTalk-style
    evaluation scripts: rPCC correlates column by column (they correlate the flattened arrays),
    SID uses exact entropy (they add 1e-6 inside the log), and statistics pool the whole split
    instead of averaging per-file values for fd/pfd/sid.
    """
    require(clips, "gen_face", "ref_face", "spk_face")
    tracks = [t for t in face_tracks(clips, "l2l")
              if t.ref is not None and t.spk is not None and t.ref_mask.any()]
    if not tracks:
        raise MetricSkipped("l2l needs clips with generated, real and speaker faces and at "
                            "least one frame with a real listener face")
    out: dict[str, float] = {}
    groups = ((EXPRESSION, "", int(ctx.param("l2l", "sid_k", 40))),
              (POSE, "_pose", int(ctx.param("l2l", "sid_k_pose", 20))))
    for cols, suffix, k in groups:
        values = _l2l_group(tracks, cols, k, ctx)
        out.update({f"{key}{suffix}": value for key, value in values.items()})
    return out


def _l2l_group(tracks: list[FaceTracks], cols: slice, k: int, ctx: MetricContext
               ) -> dict[str, float]:
    """The L2L metrics on columns ``cols`` (see :func:`l2l_suite`)."""
    eps = float(ctx.param("l2l", "eps", 1e-6))
    gen = _stack([t.gen[t.ref_mask, cols] for t in tracks])
    real = _stack([t.ref[t.ref_mask, cols] for t in tracks])  # type: ignore[index]
    both = [t.ref_mask & t.spk_mask for t in tracks]
    spk_gen = _stack([np.hstack([t.spk[m, cols], t.gen[m, cols]])  # type: ignore[index]
                      for t, m in zip(tracks, both)])
    spk_real = _stack([np.hstack([t.spk[m, cols], t.ref[m, cols]])  # type: ignore[index]
                       for t, m in zip(tracks, both)])
    if len(real) < 2 or not any(m.sum() >= 2 for m in both):
        raise MetricSkipped("l2l needs a clip with at least 2 frames where the real listener "
                            "and the speaker both show a face")
    centres = kmeans_fit(real, k, ctx.seed, int(ctx.param("l2l", "kmeans_max_iter", 300)),
                         float(ctx.param("l2l", "kmeans_tol", 1e-4)))
    all_gen = np.concatenate([t.gen[:, cols] for t in tracks])
    rpcc = [np.abs(pearson_per_dim(t.gen[m, cols], t.spk[m, cols])  # type: ignore[index]
                   - pearson_per_dim(t.ref[m, cols], t.spk[m, cols])).mean()  # type: ignore[index]
            for t, m in zip(tracks, both) if m.sum() >= 2]
    return {
        "fd": frechet_distance(*gaussian_stats(gen), *gaussian_stats(real), eps=eps),
        "pfd": frechet_distance(*gaussian_stats(spk_gen), *gaussian_stats(spk_real), eps=eps),
        "variance": float(np.mean([t.gen[:, cols].astype(np.float64).var(axis=0).mean()
                                   for t in tracks])),
        "variance_real": float(np.mean([t.ref[t.ref_mask, cols].astype(np.float64)  # type: ignore[index]
                                        .var(axis=0).mean() for t in tracks])),
        "sid": shannon_index(kmeans_assign(all_gen, centres), len(centres)),
        "sid_real": shannon_index(kmeans_assign(real, centres), len(centres)),
        "rpcc": float(np.mean(rpcc)),
        "l2": float(np.mean([((t.gen[t.ref_mask, cols].astype(np.float64)
                               - t.ref[t.ref_mask, cols]) ** 2).mean()  # type: ignore[index]
                             for t in tracks])),
    }


# ---------------------------------------------------------------- react


def react_suite(clips: Sequence[ScoredClip], ctx: MetricContext) -> dict[str, Any]:
    """REACT 2023 suite; see :func:`responsenet.eval.metrics.face_react.react_suite`. Keys that
    cannot be computed for this run hold ``{"skipped": reason}``."""
    from responsenet.eval.metrics.face_react import react_skipped as skipped
    from responsenet.eval.metrics.face_react import react_suite as run

    values: dict[str, Any] = dict(run(clips, ctx))
    for key, reason in skipped(clips, ctx).items():
        values.setdefault(key, {"skipped": reason})
    return values


def react_skipped(clips: Sequence[ScoredClip], ctx: MetricContext | None = None
                  ) -> dict[str, str]:
    """REACT keys that cannot be computed; see :mod:`responsenet.eval.metrics.face_react`."""
    from responsenet.eval.metrics.face_react import react_skipped as run

    return run(clips, ctx)
