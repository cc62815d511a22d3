"""Quality of the generated listener speech: DNSMOS P.835 and UTMOSv2.

Both score ``clip.gen_audio`` (float32 [S] at ``clip.sample_rate``, resampled to 16 kHz) and
average over clips. Clips without generated audio are ignored, and so are clips whose audio is
empty or digital silence (peak below :data:`SILENCE_PEAK`, -80 dBFS): a MOS predicted for
silence rates no speech, so a listener that stays silent neither helps nor hurts the score. When
no clip has speech the metric is skipped with reason ``no speech``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from responsenet.errors import UsageError
from responsenet.eval.metrics.base import MetricContext, MetricSkipped, ScoredClip, require

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
#: Peak below which a clip counts as silence (-80 dBFS).
SILENCE_PEAK = 1e-4


def speech_audio(clips: Sequence[ScoredClip]) -> list[np.ndarray]:
    """The clips' generated audio at 16 kHz, float32 [S] each, silent or missing ones left out."""
    from responsenet.wavio import resample

    require(clips, "gen_audio")
    out = []
    for clip in clips:
        if clip.gen_audio is None:
            continue
        audio = resample(np.asarray(clip.gen_audio, np.float32), clip.sample_rate, SAMPLE_RATE)
        if audio.size and float(np.max(np.abs(audio))) >= SILENCE_PEAK:
            out.append(audio)
    if not out:
        raise MetricSkipped(f"no speech: the generated audio of all {len(clips)} clips is empty "
                            "or silent (peak below -80 dBFS)")
    if len(out) < len(clips):
        log.info("audio metrics: %d of %d clips have generated speech", len(out), len(clips))
    return out


# ------------------------------------------------------------------------------------ DNSMOS

#: DNSMOS input: 9.01 s windows at 16 kHz, hop 1 s (Microsoft's dnsmos_local.py).
DNSMOS_WINDOW_S = 9.01
#: P.835 polynomial fits of the raw network outputs (dnsmos_local.py, personalized=False).
P835_FITS = {"sig": (-0.08397278, 1.22083953, 0.0052439),
             "bak": (-0.13166888, 1.60915514, -0.39604546),
             "ovrl": (-0.06766283, 1.11546468, 0.04602535)}


def dnsmos_windows(audio: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """The 9.01 s windows DNSMOS scores, float32 [n_windows, 144160] at 16 kHz.

    As the reference: audio shorter than a window is doubled (``append(a, a)``) until long enough;
    windows start every second; a window whose end index ``int((i + 9.01) * sr)`` rounds one
    sample short in floating point is skipped (at 16 kHz: windows 7 to 23).
    """
    if audio.size == 0:
        raise ValueError("DNSMOS needs at least one sample")
    length = int(DNSMOS_WINDOW_S * sr)
    while len(audio) < length:
        audio = np.append(audio, audio)
    n_hops = int(np.floor(len(audio) / sr) - DNSMOS_WINDOW_S) + 1
    windows = [audio[int(i * sr): int((i + DNSMOS_WINDOW_S) * sr)] for i in range(n_hops)]
    return np.stack([w for w in windows if len(w) >= length]).astype(np.float32)


def p835_scores(raw: np.ndarray) -> dict[str, np.ndarray]:
    """SIG, BAK, OVRL from the network's raw outputs float [n, 3] (columns sig, bak, ovrl)."""
    return {key: np.polyval(P835_FITS[key], raw[:, col]) for col, key in
            enumerate(("sig", "bak", "ovrl"))}


@lru_cache(maxsize=2)
def _onnx_session(path: str):
    import onnxruntime as ort

    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def dnsmos_clip(audio: np.ndarray, model: Path) -> dict[str, float]:
    """DNSMOS P.835 of one clip: float32 [S] at 16 kHz (clipped to [-1, 1]) -> sig, bak, ovrl,
    each the mean over the clip's windows; ``model`` is ``sig_bak_ovr.onnx``."""
    session = _onnx_session(str(model))
    windows = dnsmos_windows(np.clip(audio, -1.0, 1.0))
    raw = np.concatenate([session.run(None, {"input_1": w[None]})[0] for w in windows])
    return {key: float(np.mean(values)) for key, values in p835_scores(raw).items()}


def dnsmos(clips: Sequence[ScoredClip], ctx: MetricContext) -> dict[str, float]:
    """DNSMOS P.835 SIG/BAK/OVRL (not personalized) of the generated speech, mean over clips."""
    audios = speech_audio(clips)
    model = ctx.asset("dnsmos") / "sig_bak_ovr.onnx"
    per_clip = [dnsmos_clip(a, model) for a in audios]
    return {key: float(np.mean([c[key] for c in per_clip])) for key in ("sig", "bak", "ovrl")}


# ----------------------------------------------------------------------------------- UTMOSv2

def remove_silent_section(audio: np.ndarray, min_length: int = 4800) -> np.ndarray:
    """UTMOSv2's silence removal: drop every run of more than ``min_length`` samples below 0.1.

    Like the official code it compares the signed sample (not its magnitude) with 0.1. Unlike it,
    audio that would be removed entirely is kept as it is (the official code fails on it).
    """
    quiet = audio < 0.1
    edges = np.flatnonzero(np.pad(quiet, (1, 0)) ^ np.pad(quiet, (0, 1)))
    starts, ends = edges[::2], edges[1::2]
    keep = np.ones(audio.shape[0], dtype=bool)
    for start, end in zip(starts, ends):
        if end - start > min_length:
            keep[start:end] = False
    return audio[keep] if keep.any() else audio


def _extend(audio: np.ndarray, length: int) -> np.ndarray:
    return audio if len(audio) > length else np.tile(audio, length // len(audio) + 1)


def _crop(audio: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    start = int(rng.integers(0, len(audio) - length))
    return audio[start:start + length]


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:  # Slaney's scale, as librosa (htk=False)
    return np.where(hz >= 1000.0, 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27),
                    hz / (200.0 / 3))


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return np.where(mel >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27) * (mel - 15.0)),
                    mel * (200.0 / 3))


@lru_cache(maxsize=8)
def mel_filters(sr: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Slaney-normalised triangular mel filters float32 [n_mels, 1 + n_fft // 2] (librosa's)."""
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array(0.0)), _hz_to_mel(np.array(sr / 2)),
                                   n_mels + 2))
    widths, ramps = np.diff(edges), np.subtract.outer(edges, freqs)
    rising, falling = -ramps[:-2] / widths[:-1, None], ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    return (weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]).astype(np.float32)


@lru_cache(maxsize=16)
def _torch_filters(sr: int, n_fft: int, n_mels: int, device: str):
    import torch

    return torch.from_numpy(mel_filters(sr, n_fft, n_mels)).to(device)


def mel_db(audio: np.ndarray, spec, sr: int = SAMPLE_RATE, norm: float = 80.0,
           device: str = "cpu"):
    """UTMOSv2's spectrogram (librosa melspectrogram + power_to_db(ref=max) as it calls them):
    power mel with a hann window, centred with zero padding; dB relative to the maximum, floored
    80 dB below it; then ``(db + norm) / norm``. Torch float32 [n_mels, 1 + S // hop_length]."""
    import torch

    window = torch.hann_window(spec.win_length, periodic=True, device=device)
    stft = torch.stft(torch.from_numpy(np.ascontiguousarray(audio, np.float32)).to(device),
                      spec.n_fft, spec.hop_length, spec.win_length, window, center=True,
                      pad_mode="constant", return_complex=True)
    mel = _torch_filters(sr, spec.n_fft, spec.n_mels, device) @ (stft.real ** 2 + stft.imag ** 2)
    db = 10.0 * torch.log10(mel.clamp_min(1e-10))
    return ((db - db.max()).clamp_min(-80.0) + norm) / norm


def utmosv2_inputs(audio: np.ndarray, arch, rng: np.random.Generator, device: str = "cpu"):
    """One draw of UTMOSv2's inputs for one clip, as its inference dataset makes them.

    Silence removed, then a ``ssl_sec`` crop (tiled when short) for the SSL branch; for each of
    ``num_frames`` ``frame_sec`` crops and each spectrogram kind, the crop's spectrogram mixed
    with another random crop's (weight ~ Beta(mixup_alpha, mixup_alpha)), resized bilinearly
    (antialiased) to ``spec_shape`` and repeated on 3 channels.

    Returns:
        ``(wave, specs)``: float32 [ssl_sec * sr] and torch float32 [num_frames * len(specs), 3,
        H, W] on ``device``, frame-major.
    """
    import torch
    import torch.nn.functional as F

    audio = remove_silent_section(audio)
    ssl_len = int(arch.ssl_sec * arch.sample_rate)
    wave = _crop(_extend(audio, ssl_len), ssl_len, rng)
    frame_len = int(arch.frame_sec * arch.sample_rate)
    long = _extend(audio, frame_len)
    images = []
    for _ in range(arch.num_frames):
        first = _crop(long, frame_len, rng)
        for spec in arch.specs:
            image = mel_db(first, spec, arch.sample_rate, arch.spec_norm, device)
            other = mel_db(_crop(long, frame_len, rng), spec, arch.sample_rate, arch.spec_norm,
                           device)
            weight = float(rng.beta(arch.mixup_alpha, arch.mixup_alpha))
            mixed = weight * image + (1 - weight) * other
            resized = F.interpolate(mixed[None, None], size=arch.spec_shape, mode="bilinear",
                                    align_corners=False, antialias=True)[0]
            images.append(resized.expand(3, -1, -1))
    return wave.astype(np.float32), torch.stack(images)


def _normalise(waves: np.ndarray) -> np.ndarray:
    """wav2vec2-base's feature extractor (do_normalize): zero mean, unit variance per row."""
    mean, var = waves.mean(axis=1, keepdims=True), waves.var(axis=1, keepdims=True)
    return ((waves - mean) / np.sqrt(var + 1e-7)).astype(np.float32)


def utmosv2_fold_scores(audios: Sequence[np.ndarray], fold_files: Sequence[Path], arch, *,
                        seed: int, repetitions: int, domain: str, device: str = "cpu",
                        batch_size: int = 4) -> np.ndarray:
    """Predicted MOS per fold and clip, float64 [n_folds, n_clips], each the mean of
    ``repetitions`` random input draws; every fold sees the same draws (from ``seed``)."""
    import torch

    from responsenet.eval.metrics.utmosv2_model import DATA_DOMAINS, load_fold

    if domain not in DATA_DOMAINS:
        raise UsageError(f"unknown UTMOSv2 data domain {domain!r} (params utmosv2.domain); "
                         f"known: {', '.join(DATA_DOMAINS)}")
    onehot = torch.zeros(1, len(DATA_DOMAINS))
    onehot[0, DATA_DOMAINS.index(domain)] = 1.0
    scores = np.zeros((len(fold_files), len(audios)))
    for f, path in enumerate(fold_files):
        net = load_fold(path, arch, device)
        rng = np.random.default_rng(seed)
        for _ in range(repetitions):
            for start in range(0, len(audios), batch_size):
                drawn = [utmosv2_inputs(a, arch, rng, device)
                         for a in audios[start:start + batch_size]]
                wave = torch.from_numpy(_normalise(np.stack([d[0] for d in drawn]))).to(device)
                specs = torch.stack([d[1] for d in drawn])
                with torch.no_grad(), torch.autocast("cuda", enabled=device.startswith("cuda")):
                    pred = net(wave, specs, onehot.expand(len(drawn), -1).to(device))
                scores[f, start:start + len(drawn)] += pred.float().cpu().numpy() / repetitions
        del net
    return scores


def utmosv2(clips: Sequence[ScoredClip], ctx: MetricContext) -> float:
    """UTMOSv2 predicted MOS of the generated speech: 5 folds x ``num_repetitions`` (default 5,
    as in the paper) input draws averaged, data domain ``sarulab`` (the official default), then
    the mean over clips.

    Params (``ctx.params["utmosv2"]``): ``num_repetitions``, ``domain``, ``batch_size``, and
    ``arch`` (UTMOSv2Arch settings; only for stand-in networks in tests, never official).
    """
    from responsenet.assets_catalog import ASSETS

    audios = speech_audio(clips)
    folder = ctx.asset("utmosv2")
    try:
        import transformers  # noqa: F401

        from responsenet.eval.metrics.utmosv2_model import UTMOSv2Arch
    except ImportError as e:
        raise MetricSkipped(f"UTMOSv2 needs torch and transformers ({e}); install them: "
                            "pip install torch transformers") from e
    overrides = ctx.param("utmosv2", "arch", None)
    if overrides:
        log.warning("utmosv2: architecture overridden (%s); this is not the official network",
                    sorted(overrides))
    arch = UTMOSv2Arch.from_dict(overrides) if overrides else UTMOSv2Arch()
    scores = utmosv2_fold_scores(
        audios, [folder / name for name in ASSETS.get("utmosv2").files], arch, seed=ctx.seed,
        repetitions=int(ctx.param("utmosv2", "num_repetitions", 5)),
        domain=ctx.param("utmosv2", "domain", "sarulab"), device=ctx.device,
        batch_size=int(ctx.param("utmosv2", "batch_size", 4)))
    return float(scores.mean())
