"""Face metrics: FD, the L2L suite and the REACT suite against hand values and references.

References: pytorch-fid's ``calculate_frechet_distance`` (read from the installed package),
brute-force recursions written here (DTW, pairwise distances), and the REACT 2023 baseline's
formulas re-typed here with torch (FRDiv / S-MSE, FRDvs, FRVar, FRCorr, TLCC).
"""

from __future__ import annotations

import ast
import importlib.util
import math
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.linalg
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from responsenet.errors import UsageError
from responsenet.eval.metrics import MetricContext, MetricSkipped, ScoredClip, compute
from responsenet.eval.metrics.face import (
    _trace_sqrt_product,
    _trace_sqrt_product_sym,
    fd,
    frechet_distance,
    gaussian_stats,
    kmeans_assign,
    kmeans_fit,
    l2l_suite,
    pearson_per_dim,
    react_skipped,
    react_suite,
    shannon_index,
)
from responsenet.eval.metrics.face_react import (
    ccc,
    ccc_per_dim,
    dtw_distance,
    frame_variance,
    grouped_dtw,
    mean_pair_sq_distance,
    tlcc_offset,
    window_slices,
)

CTX = MetricContext(seed=0)


def make_clip(i: int, gen: np.ndarray, ref: np.ndarray | None = None,
              spk: np.ndarray | None = None, mask: np.ndarray | None = None,
              samples: np.ndarray | None = None) -> ScoredClip:
    return ScoredClip(clip_id=f"clip_{i:03d}", fps=25.0, sample_rate=16000, n_frames=len(gen),
                      gen_face=np.asarray(gen, np.float32),
                      ref_face=None if ref is None else np.asarray(ref, np.float32),
                      ref_face_mask=mask,
                      spk_face=None if spk is None else np.asarray(spk, np.float32),
                      gen_samples=None if samples is None else np.asarray(samples, np.float32))


def random_clips(n_clips: int = 3, n_frames: int = 60, seed: int = 0, noise: float = 0.1
                 ) -> list[ScoredClip]:
    rng = np.random.default_rng(seed)
    clips = []
    for i in range(n_clips):
        ref = rng.random((n_frames, 64))
        spk = rng.random((n_frames, 64))
        gen = ref + noise * rng.standard_normal((n_frames, 64))
        clips.append(make_clip(i, gen, ref, spk))
    return clips


def pytorch_fid_frechet():
    """pytorch-fid's calculate_frechet_distance, compiled from the installed fid_score.py.

    Importing ``pytorch_fid.fid_score`` needs torchvision (for its image pipeline, unused here),
    so the function's own source is taken with ast. ``linalg.sqrtm(..., disp=False)`` is
    deprecated in scipy 1.16 and gone in 1.18: a shim returns what it returned, (root, error).
    """
    spec = importlib.util.find_spec("pytorch_fid")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("reference pytorch-fid not installed: pip install pytorch-fid --no-deps")
    path = Path(next(iter(spec.submodule_search_locations))) / "fid_score.py"
    tree = ast.parse(path.read_text())
    func = next(node for node in tree.body if isinstance(node, ast.FunctionDef)
                and node.name == "calculate_frechet_distance")

    def sqrtm(a, disp=True):
        root = scipy.linalg.sqrtm(a)
        return root if disp else (root, 0.0)

    namespace = {"np": np, "linalg": SimpleNamespace(sqrtm=sqrtm)}
    exec(compile(ast.Module([func], []), str(path), "exec"), namespace)
    return namespace["calculate_frechet_distance"]


# ------------------------------------------------------------------------------------ FD math


def test_gaussian_stats_is_unbiased():
    frames = np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 4.0]])
    mu, sigma = gaussian_stats(frames)
    np.testing.assert_allclose(mu, [2.0, 2.0])
    # ddof=1: var([0,2,4]) = 8/2, var([1,1,4]) = 6/2, cov = (-2*-1 + 0*-1 + 2*2)/2 = 3
    np.testing.assert_allclose(sigma, [[4.0, 3.0], [3.0, 3.0]])


def test_frechet_distance_diagonal_closed_form():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    var1, var2 = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(var1) - np.sqrt(var2)) ** 2).sum()
    got = frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2))
    assert got == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_hand_value_1d():
    # N(0, 4) vs N(3, 1): 3^2 + (2 - 1)^2 = 10
    assert frechet_distance(np.zeros(1), np.array([[4.0]]), np.array([3.0]),
                            np.array([[1.0]])) == pytest.approx(10.0)


@pytest.mark.parametrize("dim", [3, 16, 64])
def test_frechet_distance_matches_pytorch_fid(dim):
    reference = pytorch_fid_frechet()
    rng = np.random.default_rng(dim)
    a = rng.normal(size=(500, dim)) @ rng.normal(size=(dim, dim))
    b = rng.normal(size=(400, dim)) @ rng.normal(size=(dim, dim)) + 0.3
    stats = (*gaussian_stats(a), *gaussian_stats(b))
    assert frechet_distance(*stats) == pytest.approx(reference(*stats), rel=1e-9, abs=1e-9)


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # the reference's sqrtm
def test_frechet_distance_singular_covariance_matches_pytorch_fid(capsys):
    reference = pytorch_fid_frechet()
    rng = np.random.default_rng(3)
    a = rng.normal(size=(200, 8))
    a[:, 3] = 0.5  # a constant column: sigma1 and the product are singular
    b = rng.normal(size=(200, 8))
    b[:, 3] = 0.5
    stats = (*gaussian_stats(a), *gaussian_stats(b))
    ours = frechet_distance(*stats)
    assert math.isfinite(ours)
    assert ours == pytest.approx(reference(*stats), rel=1e-6, abs=1e-6)


def test_symmetric_trace_fallback_agrees_with_sqrtm():
    rng = np.random.default_rng(4)
    s1, s2 = (np.cov(rng.normal(size=(100, 10)), rowvar=False) for _ in range(2))
    assert _trace_sqrt_product_sym(s1, s2) == pytest.approx(_trace_sqrt_product(s1, s2, 1e-6),
                                                            rel=1e-9)


@settings(max_examples=100, deadline=None)
@given(arrays(np.float64, (12, 3), elements=st.floats(-10, 10)),
       arrays(np.float64, (9, 3), elements=st.floats(-10, 10)))
def test_frechet_distance_non_negative_and_symmetric(a, b):
    sa, sb = gaussian_stats(a), gaussian_stats(b)
    ab, ba = frechet_distance(*sa, *sb), frechet_distance(*sb, *sa)
    assert ab >= 0
    # Symmetric up to the eps fix: where sqrtm of one product order is not finite, eps is added
    # to the diagonals, which moves tr sqrt(s1 s2) by at most about sqrt(eps) (sqrt(tr s1 d) +
    # sqrt(tr s2 d)) + d eps (scalar case: sqrt((a + e)(b + e)) - sqrt(ab) <= sqrt(e)(sqrt(a) +
    # sqrt(b)) + e); twice that bounds the difference of the two orders.
    d, eps = a.shape[1], 1e-6
    bound = 2 * (math.sqrt(eps) * (math.sqrt(np.trace(sa[1]) * d) + math.sqrt(np.trace(sb[1]) * d))
                 + d * eps)
    assert ab == pytest.approx(ba, rel=1e-6, abs=1e-6 + 2 * bound)


# ------------------------------------------------------------------------------------ fd metric


def test_fd_of_identical_data_is_zero():
    clips = [make_clip(c.n_frames, c.ref_face, c.ref_face) for c in random_clips()]
    assert fd(clips, CTX) == pytest.approx(0.0, abs=1e-8)


def test_fd_of_mean_shift_is_squared_norm():
    v = np.linspace(-0.2, 0.3, 64)
    clips = [make_clip(i, c.ref_face + v, c.ref_face) for i, c in enumerate(random_clips())]
    assert fd(clips, CTX) == pytest.approx(float(v @ v), rel=1e-6)


def test_fd_is_translation_and_order_invariant():
    clips = random_clips(seed=5)
    base = fd(clips, CTX)
    moved = [make_clip(i, c.gen_face + 7.0, c.ref_face + 7.0) for i, c in enumerate(clips)]
    assert fd(moved, CTX) == pytest.approx(base, rel=1e-6)
    assert fd(clips[::-1], CTX) == pytest.approx(base, rel=1e-12)


def test_fd_counts_every_frame_by_default_as_the_released_script():
    """Default: all frames, masked or not, as OmniResponse's FD script (np.cov, ddof=1)."""
    clips = random_clips(seed=6)
    mask = np.ones(60, bool)
    mask[::7] = False
    masked = [make_clip(i, c.gen_face, c.ref_face, mask=mask) for i, c in enumerate(clips)]
    gen = np.concatenate([c.gen_face for c in clips]).astype(np.float64)
    real = np.concatenate([c.ref_face for c in clips]).astype(np.float64)
    expected = frechet_distance(gen.mean(0), np.cov(gen, rowvar=False), real.mean(0),
                                np.cov(real, rowvar=False))
    assert fd(masked, CTX) == pytest.approx(expected, rel=1e-9)


def test_fd_face_present_drops_frames_without_a_real_face_from_both_sets():
    ctx = MetricContext(params={"fd": {"frames": "face_present"}})
    clips = random_clips(seed=6)
    mask = np.ones(60, bool)
    mask[::7] = False
    spoiled = []
    for i, c in enumerate(clips):
        gen = c.gen_face.copy()
        gen[~mask] = 100.0  # garbage where the real face is missing must not count
        spoiled.append(make_clip(i, gen, c.ref_face, mask=mask))
    trimmed = [make_clip(i, c.gen_face[mask], c.ref_face[mask]) for i, c in enumerate(clips)]
    assert fd(spoiled, ctx) == pytest.approx(fd(trimmed, ctx), rel=1e-9)
    assert fd(spoiled, CTX) > 10 * fd(trimmed, CTX)


def test_fd_features_param_selects_columns():
    shift = np.zeros(64)
    shift[60] = 2.0  # a pose column only
    clips = [make_clip(i, c.ref_face + shift, c.ref_face) for i, c in enumerate(random_clips())]
    assert fd(clips, MetricContext(params={"fd": {"features": "expression"}})) == pytest.approx(
        0.0, abs=1e-8)
    assert fd(clips, MetricContext(params={"fd": {"features": "pose"}})) == pytest.approx(4.0)
    with pytest.raises(UsageError, match="features"):
        fd(clips, MetricContext(params={"fd": {"features": "mouth"}}))


def test_fd_skips_without_real_faces_and_names_a_bad_clip():
    gen = np.zeros((10, 64))
    with pytest.raises(MetricSkipped, match="ref_face"):
        fd([make_clip(0, gen)], CTX)
    with pytest.raises(UsageError, match=r"clip_007.*ref_face.*\(9, 64\)"):
        fd([make_clip(7, gen, np.zeros((9, 64)))], CTX)
    with pytest.raises(UsageError, match="clip_001.*gen_face.*NaN"):
        fd([make_clip(1, np.full((10, 64), np.nan), gen)], CTX)
    with pytest.raises(MetricSkipped, match="at least 2 real listener frames"):
        fd([make_clip(2, gen, gen, mask=np.zeros(10, bool))],
           MetricContext(params={"fd": {"frames": "face_present"}}))


# ------------------------------------------------------------------------------------ L2L math


def test_pearson_per_dim_matches_corrcoef_and_zero_for_constant():
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(30, 4)), rng.normal(size=(30, 4))
    x[:, 2] = 1.0
    got = pearson_per_dim(x, y)
    for d in (0, 1, 3):
        assert got[d] == pytest.approx(np.corrcoef(x[:, d], y[:, d])[0, 1], rel=1e-12)
    assert got[2] == 0.0


def test_shannon_index_hand_values():
    assert shannon_index(np.array([0, 0, 1, 2]), 3) == pytest.approx(1.5)  # p = 1/2, 1/4, 1/4
    assert shannon_index(np.arange(8), 8) == pytest.approx(3.0)
    assert shannon_index(np.zeros(5, int), 4) == 0.0


def test_kmeans_finds_separated_blobs_and_is_seeded():
    rng = np.random.default_rng(8)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    labels = rng.integers(0, 4, 400)
    frames = centres[labels] + 0.1 * rng.normal(size=(400, 2))
    fitted = kmeans_fit(frames, 4, seed=0)
    found = kmeans_assign(frames, fitted)
    # the same partition up to renaming: each true blob maps to one fitted cluster
    assert all(len(set(found[labels == c])) == 1 for c in range(4))
    assert len(set(found)) == 4
    np.testing.assert_array_equal(fitted, kmeans_fit(frames, 4, seed=0))
    np.testing.assert_allclose(np.sort(fitted, axis=0), np.sort(centres, axis=0), atol=0.05)


def test_kmeans_with_fewer_distinct_frames_than_k():
    frames = np.repeat(np.eye(3), 5, axis=0)
    assert len(kmeans_fit(frames, 40, seed=1)) == 3


# ------------------------------------------------------------------------------------ l2l suite


L2L_KEYS = {f"{k}{s}" for k in ("fd", "pfd", "variance", "variance_real", "sid", "sid_real",
                               "rpcc", "l2") for s in ("", "_pose")}


def test_l2l_identity():
    clips = [make_clip(i, c.ref_face, c.ref_face, c.spk_face) for i, c in enumerate(random_clips())]
    out = l2l_suite(clips, CTX)
    assert set(out) == L2L_KEYS
    for key in ("fd", "pfd", "l2", "rpcc", "fd_pose", "pfd_pose", "l2_pose", "rpcc_pose"):
        assert out[key] == pytest.approx(0.0, abs=1e-7), key
    assert out["sid"] == pytest.approx(out["sid_real"])
    assert out["variance"] == pytest.approx(out["variance_real"])


def test_l2l_hand_values():
    t = np.arange(4.0)
    spk = np.tile(t[:, None], (1, 64))                      # every speaker column 0, 1, 2, 3
    ref = np.empty((4, 64))
    ref[:, :52] = t[:, None]                                # expression follows the speaker
    ref[:, 52:] = t[::-1, None]                             # pose mirrors it
    gen = np.empty((4, 64))
    gen[:, :52] = 0.5                                       # constant: r = 0, variance 0
    gen[:, 52:] = t[:, None]                                # r = +1 against the mirrored -1
    out = l2l_suite([make_clip(0, gen, ref, spk)], CTX)
    assert out["rpcc"] == pytest.approx(1.0)                # |0 - 1|
    assert out["rpcc_pose"] == pytest.approx(2.0)           # |1 - (-1)|
    assert out["variance"] == 0.0
    assert out["variance_pose"] == pytest.approx(1.25)      # var([0, 1, 2, 3]), ddof=0
    assert out["variance_real"] == pytest.approx(1.25)
    assert out["l2"] == pytest.approx(np.mean((t - 0.5) ** 2))  # 1.75
    assert out["l2_pose"] == pytest.approx(np.mean((t - t[::-1]) ** 2))  # 5
    assert out["sid"] == 0.0                                # every generated frame in one cluster
    assert out["sid_real"] == pytest.approx(2.0)            # 4 distinct real frames, 4 clusters


def test_l2l_masked_frames_do_not_count_in_comparisons():
    clips = random_clips(seed=9)
    mask = np.ones(60, bool)
    mask[10:20] = False
    spoiled, trimmed = [], []
    for i, c in enumerate(clips):
        ref = c.ref_face.copy()
        ref[~mask] = -50.0
        spoiled.append(make_clip(i, c.gen_face, ref, c.spk_face, mask=mask))
        trimmed.append(make_clip(i, c.gen_face, c.ref_face, c.spk_face, mask=mask))
    a, b = l2l_suite(spoiled, CTX), l2l_suite(trimmed, CTX)
    for key in ("fd", "pfd", "l2", "rpcc", "sid", "sid_real", "variance_real", "fd_pose"):
        assert a[key] == pytest.approx(b[key], rel=1e-9), key


def test_l2l_is_deterministic_and_order_invariant():
    clips = random_clips(n_clips=4, seed=10)
    first = l2l_suite(clips, CTX)
    assert l2l_suite(clips[::-1], CTX) == pytest.approx(first, rel=1e-9)
    assert first["l2"] == pytest.approx(0.01, rel=0.1)      # noise 0.1: E[e^2] = 0.01


def test_l2l_needs_the_speaker():
    clips = [make_clip(0, np.zeros((5, 64)), np.zeros((5, 64)))]
    with pytest.raises(MetricSkipped, match="spk_face"):
        l2l_suite(clips, CTX)


# ------------------------------------------------------------------------------------ REACT math


def react_ccc(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """The challenge's concordance_correlation_coefficient (metric/FRC.py), re-typed."""
    out = []
    for i in range(y_true.shape[1]):
        cor = np.corrcoef(y_true[:, i], y_pred[:, i])[0][1]
        num = 2 * cor * np.std(y_true[:, i]) * np.std(y_pred[:, i])
        den = (np.var(y_true[:, i]) + np.var(y_pred[:, i])
               + (np.mean(y_true[:, i]) - np.mean(y_pred[:, i])) ** 2)
        out.append(num / (den + 1e-8))
    return float(np.mean(out))


def test_ccc_published_example_and_reference():
    # the example of the challenge's (and sklearn-style) docstring
    assert ccc(np.array([3, -0.5, 2, 7]), np.array([2.5, 0.0, 2, 8])) == pytest.approx(
        0.97678916827853024, rel=1e-12)
    rng = np.random.default_rng(11)
    x, y = rng.normal(size=(50, 6)), rng.normal(size=(50, 6)) + rng.normal(size=(50, 6))
    assert ccc(x, y) == pytest.approx(react_ccc(x, y), abs=1e-7)


def test_ccc_identity_and_constant_columns():
    x = np.random.default_rng(12).normal(size=(20, 3))
    assert ccc(x, x) == pytest.approx(1.0)
    assert ccc(x, x + 1.0) < 1.0
    const = np.ones((20, 2))
    np.testing.assert_allclose(ccc_per_dim(const, const), [1.0, 1.0])
    np.testing.assert_allclose(ccc_per_dim(const, np.column_stack([x[:, 0], x[:, 1]])), [0, 0])


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, (8, 2), elements=st.floats(-1e3, 1e3)),
       arrays(np.float64, (8, 2), elements=st.floats(-1e3, 1e3)))
def test_ccc_is_bounded_and_symmetric(x, y):
    value = ccc(x, y)
    assert -1.0 <= value <= 1.0
    assert value == pytest.approx(ccc(y, x), abs=1e-9)


def brute_dtw(x: np.ndarray, y: np.ndarray, radius: int | None = None) -> float:
    """The textbook O(n m) recursion on a full matrix, in plain Python."""
    n, m = len(x), len(y)
    acc = [[math.inf] * (m + 1) for _ in range(n + 1)]
    acc[0][0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            if radius is not None and abs(i - j) > radius:
                continue
            cost = float(((np.atleast_1d(x[i - 1]) - np.atleast_1d(y[j - 1])) ** 2).sum())
            acc[i][j] = cost + min(acc[i - 1][j], acc[i][j - 1], acc[i - 1][j - 1])
    return math.sqrt(acc[n][m])


def test_dtw_hand_value():
    # costs [[0, 4], [1, 1], [4, 0]]: path (0,0) (1,0) (2,1) costs 0 + 1 + 0
    assert dtw_distance(np.array([0.0, 1.0, 2.0]), np.array([0.0, 2.0])) == pytest.approx(1.0)
    assert dtw_distance(np.array([1.0, 2.0]), np.array([1.0, 1.0, 1.0, 2.0])) == 0.0


@pytest.mark.parametrize("seed", range(6))
def test_dtw_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n, m, d = rng.integers(1, 12), rng.integers(1, 12), rng.integers(1, 4)
    x, y = rng.normal(size=(n, d)), rng.normal(size=(m, d))
    assert dtw_distance(x, y) == pytest.approx(brute_dtw(x, y), rel=1e-9)
    radius = int(abs(n - m) + rng.integers(0, 3))
    assert dtw_distance(x, y, radius) == pytest.approx(brute_dtw(x, y, radius), rel=1e-9)


def test_dtw_identity_symmetry_and_reversal():
    rng = np.random.default_rng(13)
    x, y = rng.random((40, 5)), rng.random((35, 5))
    assert dtw_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    assert dtw_distance(x, y) == pytest.approx(dtw_distance(y, x), rel=1e-9)
    assert dtw_distance(x[::-1], y[::-1]) == pytest.approx(dtw_distance(x, y), rel=1e-9)
    with pytest.raises(ValueError, match="radius"):
        dtw_distance(x, y, radius=2)


def test_grouped_dtw_is_the_weighted_sum_of_group_distances():
    rng = np.random.default_rng(14)
    x, y = rng.random((15, 64)), rng.random((15, 64))
    groups = [(0, 52, 1 / 52), (52, 64, 1 / 12)]
    expected = brute_dtw(x[:, :52], y[:, :52]) / 52 + brute_dtw(x[:, 52:], y[:, 52:]) / 12
    assert grouped_dtw(x, y, groups) == pytest.approx(expected, rel=1e-9)


def react_tlcc_offset(pred: np.ndarray, sp: np.ndarray, max_lag: int) -> int:
    """The challenge's calculate_tlcc (metric/TLCC.py) offset, re-typed with numpy."""
    def shift(x, y, lag):
        if lag > 0:
            return x[lag:], y[:-lag]
        if lag < 0:
            return x[:lag], y[-lag:]
        return x, y

    rs = []
    for lag in range(-max_lag, max_lag + 1):
        pcc = [np.corrcoef(*shift(pred[:, i], sp[:, i], lag))[0, 1] for i in range(sp.shape[1])]
        rs.append(np.mean(pcc))
    return abs(len(rs) // 2 - int(np.argmax(rs)))


def test_tlcc_offset_finds_a_delay_and_matches_the_challenge():
    rng = np.random.default_rng(15)
    speaker = rng.normal(size=(120, 4))
    listener = np.roll(speaker, 5, axis=0) + 0.1 * rng.normal(size=(120, 4))  # 5 frames late
    assert tlcc_offset(listener, speaker, 20) == 5
    for seed in range(3):
        a, b = np.random.default_rng(seed).normal(size=(2, 60, 3))
        assert tlcc_offset(a, b, 10) == react_tlcc_offset(a, b, 10)


def test_tlcc_offset_of_a_constant_listener_is_the_largest_lag():
    # every correlation is 0, so the first lag (-max_lag) is the peak, as the challenge's
    # argmax over NaNs also picks the first entry
    assert tlcc_offset(np.ones((50, 3)), np.random.default_rng(0).normal(size=(50, 3)), 9) == 9


def test_mean_pair_sq_distance_matches_brute_force_and_s_mse():
    torch = pytest.importorskip("torch")
    items = np.random.default_rng(16).normal(size=(5, 7, 3))
    flat = items.reshape(5, -1)
    brute = np.mean([((flat[i] - flat[j]) ** 2).sum() for i in range(5) for j in range(5)
                     if i != j]) / flat.shape[1]
    t = torch.from_numpy(flat)
    s_mse = float(torch.pow(torch.cdist(t, t), 2).sum() / (5 * 4 * flat.shape[1]))
    assert mean_pair_sq_distance(items) == pytest.approx(brute, rel=1e-12)
    assert mean_pair_sq_distance(items) == pytest.approx(s_mse, rel=1e-6)


def test_frame_variance_is_torch_var():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(17).normal(size=(30, 4))
    assert frame_variance(x) == pytest.approx(float(torch.var(torch.from_numpy(x), dim=0)
                                                    .mean()), rel=1e-12)


@pytest.mark.parametrize(("n", "size", "starts"), [
    (0, 5, []), (3, 5, [0]), (5, 5, [0]), (10, 5, [0, 5]), (12, 5, [0, 5, 7]),
])
def test_window_slices(n, size, starts):
    windows = window_slices(n, size)
    assert [w.start for w in windows] == starts
    assert all(w.stop - w.start == min(n, size) for w in windows)


# ------------------------------------------------------------------------------------ react suite


def test_react_identity():
    clips = [make_clip(i, c.ref_face, c.ref_face, c.spk_face) for i, c in enumerate(random_clips())]
    out = react_suite(clips, CTX)
    assert out["frcorr"] == pytest.approx(1.0)
    assert out["frdist"] == pytest.approx(0.0, abs=1e-6)
    assert set(out) == {"frcorr", "frdist", "frvar", "frdvs", "frsyn", "frdiv"}
    assert set(react_skipped(clips)) == {"frdiv"}
    assert out["frdiv"] == {"skipped": react_skipped(clips)["frdiv"]}


def test_react_matches_the_challenge_formulas_on_one_window_clips():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(18)
    n, k, t = 4, 3, 40                                      # 40 frames: one window per clip
    preds = rng.random((n, k, t, 64))
    real, spk = rng.random((n, t, 64)), rng.random((n, t, 64))
    clips = [make_clip(i, preds[i, 0], real[i], spk[i], samples=preds[i, 1:]) for i in range(n)]
    out = react_suite(clips, MetricContext(params={"react": {"tlcc_max_lag_s": 0.4}}))
    p = torch.from_numpy(preds)
    flat = p.reshape(n, k, -1)
    frdiv = float(np.mean([torch.pow(torch.cdist(f, f), 2).sum() / (k * (k - 1) * f.shape[1])
                           for f in flat]))
    by_k = flat.transpose(0, 1)
    frdvs = float(torch.pow(torch.cdist(by_k, by_k), 2).sum() / (n * (n - 1) * k) / by_k.shape[2])
    frvar = float(torch.var(p, dim=2).mean())
    frc = np.mean([sum(react_ccc(real[i], preds[i, j]) for j in range(k)) for i in range(n)])
    frsyn = np.mean([react_tlcc_offset(preds[i, j], spk[i], 9) for i in range(n)
                     for j in range(k)])
    assert out["frdiv"] == pytest.approx(frdiv, rel=1e-6)
    assert out["frdvs"] == pytest.approx(frdvs, rel=1e-6)
    assert out["frvar"] == pytest.approx(frvar, rel=1e-6)
    assert out["frcorr"] * k == pytest.approx(frc, abs=1e-6)  # the challenge sums over samples
    assert out["frsyn"] == pytest.approx(frsyn)
    frdist = np.mean([brute_dtw(preds[i, j, :, :52], real[i, :, :52]) / 52
                      + brute_dtw(preds[i, j, :, 52:], real[i, :, 52:]) / 12
                      for i in range(n) for j in range(k)])
    assert out["frdist"] == pytest.approx(frdist, rel=1e-9)


def test_react_windows_and_masks():
    rng = np.random.default_rng(19)
    ref = rng.random((30, 64))
    gen = ref.copy()
    mask = np.ones(30, bool)
    mask[5:9] = False
    gen[~mask] = 9.0                                        # where no real face: ignored
    ctx = MetricContext(params={"react": {"window_s": 0.4}})  # 10 frames at 25 fps
    out = react_suite([make_clip(0, gen, ref, mask=mask)], ctx)
    assert out["frcorr"] == pytest.approx(1.0)
    assert out["frdist"] == pytest.approx(0.0, abs=1e-6)
    expected = np.mean([frame_variance(gen[s:s + 10]) for s in (0, 10, 20)])
    assert out["frvar"] == pytest.approx(expected)
    assert "skipped" in out["frsyn"] and "frsyn" in react_skipped([make_clip(0, gen, ref)])


def test_react_frsyn_of_a_delayed_mirror():
    rng = np.random.default_rng(20)
    spk = rng.random((100, 64))
    gen = np.roll(spk, 7, axis=0)                           # the speaker, 7 frames late
    out = react_suite([make_clip(0, gen, spk, spk)], CTX)
    assert out["frsyn"] == pytest.approx(7.0)


def test_react_skips_without_generated_faces_and_validates_params():
    clip = ScoredClip("c", 25.0, 16000, 5, ref_face=np.zeros((5, 64), np.float32))
    assert set(react_skipped([clip])) == {"frcorr", "frdist", "frdiv", "frvar", "frdvs", "frsyn"}
    with pytest.raises(MetricSkipped, match="gen_face"):
        react_suite([clip], CTX)
    one = [make_clip(0, np.eye(10, 64), np.eye(10, 64))]  # one window, one sample, no speaker
    assert set(react_skipped(one)) == {"frdiv", "frdvs", "frsyn"}
    assert {k for k, v in react_suite(one, CTX).items() if not isinstance(v, dict)} == {
        "frcorr", "frdist", "frvar"}
    bad = MetricContext(params={"react": {"dtw_groups": [[0, 80, 1.0]]}})
    with pytest.raises(UsageError, match="dtw_groups"):
        react_suite(random_clips(), bad)


# ------------------------------------------------------------------------------------ registry


def test_registry_computes_the_face_metrics():
    clips = random_clips(n_clips=2, n_frames=40)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                      # no runtime warnings on good data
        values, details = compute(["fd", "l2l", "react"], clips, CTX)
    assert values["fd"] > 0
    assert {"l2l_fd", "l2l_sid_pose", "react_frcorr", "react_frsyn"} <= set(values)
    assert values["react_frdiv"] == {"skipped": react_skipped(clips)["frdiv"]}
    assert all(isinstance(v, float) and math.isfinite(v) for k, v in values.items()
               if k != "react_frdiv")
    assert set(details) == {"fd", "l2l", "react"}
