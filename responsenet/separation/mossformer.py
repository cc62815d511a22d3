"""MossFormer2 speech separation (backend ``mossformer2``), loaded from a local checkpoint.

Variant ``modelscope_8k`` is modelscope's network class
``modelscope.models.audio.separation.m2.mossformer.MossFormer2``, the model behind
``damo/speech_mossformer2_separation_temporal_8k`` (asset ``mossformer2_8k_modelscope``: the
model folder's ``simple_model.bin`` state dict and ``configuration.json``). It separates 8 kHz
mono audio into two sources; 55.7 M parameters at the published size.

Long audio runs in chunks of ``chunk_s`` seconds (at 8 kHz) that overlap by ``overlap_s``:

- each chunk's sources are scaled by one common gain, the least-squares fit of their sum to the
  chunk's mixture (the network's output scale is not tied to its input's);
- each chunk's sources are put in the order of the sources already written, by the permutation
  with the highest summed normalized correlation on the overlap;
- chunks are cross-faded with trapezoid weights (ramps as long as the overlap) and normalized by
  the summed weights, so the result is exact wherever one chunk covers a sample.

A silent overlap carries no order information: the order may then flip at that chunk boundary.
"""

from __future__ import annotations

import inspect
import itertools
import json
from pathlib import Path

import numpy as np

from responsenet.assets import resolve
from responsenet.errors import AssetMissing, UsageError
from responsenet.wavio import resample

#: variant name -> (asset name, model sample rate in Hz)
VARIANTS: dict[str, tuple[str, int]] = {"modelscope_8k": ("mossformer2_8k_modelscope", 8000)}
STATE_FILE = "simple_model.bin"
CONFIG_FILE = "configuration.json"
#: The network needs at least this many samples (two encoder frames).
MIN_SAMPLES = 24
_INSTALL = ("pip install 'responsenet[separation]' (and for CPU-only torch: pip install "
            "torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu)")


def load_mossformer2(weights: str | Path | None = None, *, variant: str = "modelscope_8k",
                     device: str = "cpu"):
    """Build the MossFormer2 network and load its checkpoint.

    Args:
        weights: the model folder (holding ``simple_model.bin`` and ``configuration.json``) or the
            state-dict file itself (its folder's ``configuration.json`` is used when present,
            else the network's default sizes); default: ``$RESPONSENET_MODELS/
            mossformer2_8k_modelscope/``, then the user cache.
        variant: ``"modelscope_8k"`` (the only one so far).
        device: torch device for the weights, e.g. ``"cpu"`` or ``"cuda"``.

    Returns:
        The network in eval mode on ``device``, with ``sample_rate`` (Hz) and ``num_spks`` set.

    Raises:
        UsageError: unknown variant, or torch/modelscope not installed.
        AssetMissing: reason ``weights_missing`` (no checkpoint), ``weights_corrupt`` (unreadable
            file) or ``weights_mismatch`` (a checkpoint of another network or size).
    """
    if variant not in VARIANTS:
        raise UsageError(f"unknown MossFormer2 variant {variant!r}; available: "
                         f"{', '.join(VARIANTS)}")
    asset, rate = VARIANTS[variant]
    torch, network_class = _import_network()
    state_path, config = _locate(asset, weights)
    model = network_class(str(state_path.parent), **_network_kwargs(network_class, config))
    try:
        state = torch.load(state_path, map_location=device, weights_only=True)
    except Exception as e:  # torch raises many kinds for a bad file; all mean the same here
        raise AssetMissing("weights_corrupt", f"{asset}: cannot read {state_path} as a torch "
                           f"state dict ({type(e).__name__}: {e}); get the file again from "
                           "modelscope damo/speech_mossformer2_separation_temporal_8k") from e
    _load_state(model, state, state_path, asset)
    model.sample_rate = rate
    return model.to(device).eval()


def separate_mossformer2(model, audio: np.ndarray, sample_rate: int = 16000, *,
                         chunk_s: float = 4.0, overlap_s: float | None = None,
                         device: str | None = None, batch_size: int | None = None) -> np.ndarray:
    """Separate a mono mixture into the network's sources.

    Args:
        model: from :func:`load_mossformer2`.
        audio: mono ``float [n_samples]`` at ``sample_rate``.
        sample_rate: in Hz; the audio is resampled to the model's rate and the sources back.
        chunk_s: chunk length in seconds; shorter audio runs whole.
        overlap_s: overlap of consecutive chunks in seconds, below ``chunk_s``; default
            ``min(1.0, chunk_s / 4)``.
        device: where the forward pass runs; default the model's own device (the model is moved
            when another is named).
        batch_size: chunks per forward pass; default 8 on a GPU, 1 on the CPU.

    Returns:
        ``float32 [num_spks, n_samples]`` at ``sample_rate``, sources in the model's order for
        the first chunk.
    """
    import torch

    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"separation expects mono audio [n_samples], got shape {audio.shape}")
    if overlap_s is None:
        overlap_s = min(1.0, chunk_s / 4)
    if not 0 <= overlap_s < chunk_s:
        raise ValueError(f"overlap_s must be in [0, chunk_s), got {overlap_s} and {chunk_s}")
    if device is not None:
        model.to(device)
    where = next(model.parameters()).device
    batch_size = batch_size or (8 if where.type == "cuda" else 1)
    rate = getattr(model, "sample_rate", VARIANTS["modelscope_8k"][1])
    mix = resample(audio, sample_rate, rate)
    chunk, overlap = round(chunk_s * rate), round(overlap_s * rate)
    starts = chunk_starts(len(mix), chunk, chunk - overlap)
    pieces = [mix[s : s + chunk] for s in starts]
    with torch.inference_mode():
        estimates = _forward(model, pieces, batch_size, where)
    sources = overlap_add(mix, starts, estimates, ramp=overlap)
    back = np.stack([resample(s, rate, sample_rate) for s in sources])
    out = np.zeros((len(sources), len(audio)), dtype=np.float32)
    out[:, : min(back.shape[1], len(audio))] = back[:, : len(audio)]
    return out


def chunk_starts(n_samples: int, chunk: int, hop: int) -> list[int]:
    """First sample of each chunk: every ``hop`` samples, the last one ending at ``n_samples``."""
    if n_samples <= chunk:
        return [0]
    starts = list(range(0, n_samples - chunk, hop))
    return [*starts, n_samples - chunk]


def overlap_add(mix: np.ndarray, starts: list[int], estimates: list[np.ndarray], *,
                ramp: int) -> np.ndarray:
    """Join per-chunk sources: scale, reorder and cross-fade them (see the module docstring).

    Args:
        mix: ``float32 [n]``, the mixture at the model rate.
        starts: first sample of each chunk in ``mix``.
        estimates: per chunk ``float32 [n_sources, chunk_len]``.
        ramp: cross-fade length in samples.

    Returns:
        ``float32 [n_sources, n]``.
    """
    n_sources = estimates[0].shape[0]
    total = np.zeros((n_sources, len(mix)), dtype=np.float64)
    weight = np.zeros(len(mix), dtype=np.float64)
    filled = 0
    for start, est in zip(starts, estimates):
        end = start + est.shape[1]
        est = est * common_gain(mix[start:end], est)
        if start < filled:
            written = total[:, start:filled] / np.maximum(weight[start:filled], 1e-12)
            est = est[best_order(written, est[:, : filled - start])]
        w = _trapezoid(end - start, ramp)
        total[:, start:end] += est * w
        weight[start:end] += w
        filled = max(filled, end)
    return (total / np.maximum(weight, 1e-12)).astype(np.float32)


def common_gain(mix: np.ndarray, sources: np.ndarray) -> float:
    """The gain ``g`` minimizing ``|mix - g * sum(sources)|``; 1.0 when it is not positive."""
    total = sources.sum(axis=0, dtype=np.float64)
    energy = float(total @ total)
    gain = float(mix @ total) / energy if energy > 0 else 1.0
    return gain if np.isfinite(gain) and gain > 0 else 1.0


def best_order(reference: np.ndarray, sources: np.ndarray) -> list[int]:
    """Permutation of ``sources`` [k, m] best matching ``reference`` [k, m]: the highest summed
    normalized correlation (ties keep the given order)."""
    def unit(x):
        x = np.asarray(x, dtype=np.float64)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    similarity = unit(reference) @ unit(sources).T  # [k, k]
    orders = list(itertools.permutations(range(len(sources))))
    scores = [sum(similarity[i, j] for i, j in enumerate(order)) for order in orders]
    return list(orders[int(np.argmax(scores))])


def _trapezoid(length: int, ramp: int) -> np.ndarray:
    """Weights rising over ``ramp`` samples, flat at 1, falling over ``ramp``; at least 1e-3."""
    i = np.arange(length, dtype=np.float64)
    edge = np.minimum(i + 0.5, length - i - 0.5)
    return np.clip(edge / max(ramp, 1), 1e-3, 1.0)


def _forward(model, pieces: list[np.ndarray], batch_size: int, device) -> list[np.ndarray]:
    """Run the network on equal-length chunks (the last may be shorter when it is the only one):
    per chunk ``float32 [n_sources, len]``."""
    import torch

    out = []
    for i in range(0, len(pieces), batch_size):
        group = pieces[i : i + batch_size]
        length = max(len(p) for p in group)
        batch = np.zeros((len(group), max(length, MIN_SAMPLES)), dtype=np.float32)
        for row, piece in zip(batch, group):
            row[: len(piece)] = piece
        est = model(torch.from_numpy(batch).to(device))  # [B, T, n_sources]
        est = est.float().cpu().numpy().transpose(0, 2, 1)
        out.extend(e[:, : len(p)] for e, p in zip(est, group))
    return out


def _import_network():
    """``(torch, MossFormer2 class)``, or UsageError saying what to install."""
    try:
        import torch
    except ImportError as e:
        raise UsageError(f"separation backend mossformer2 needs torch: {_INSTALL}") from e
    try:
        from modelscope.models.audio.separation.m2.mossformer import MossFormer2
    except ImportError as e:
        raise UsageError("separation backend mossformer2 needs modelscope's MossFormer2 "
                         f"(import failed: {e}); {_INSTALL}") from e
    return torch, MossFormer2


def _locate(asset: str, weights: str | Path | None) -> tuple[Path, dict]:
    """The state-dict file and the parsed configuration (empty when there is none)."""
    explicit = Path(weights).expanduser() if weights is not None else None
    if explicit is not None and explicit.is_file():
        state_path = explicit
    else:
        try:
            state_path = resolve(asset, weights) / STATE_FILE
        except AssetMissing as e:
            raise AssetMissing(e.reason, f"{e.message}. MossFormer2 weights are the files of "
                               "modelscope's damo/speech_mossformer2_separation_temporal_8k; "
                               f"put {STATE_FILE} and {CONFIG_FILE} in "
                               f"$RESPONSENET_MODELS/{asset}/ or pass their folder") from e
    config_path = state_path.with_name(CONFIG_FILE)
    if not config_path.is_file():
        return state_path, {}
    try:
        return state_path, json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise AssetMissing("weights_corrupt", f"{asset}: {config_path} is not readable JSON: "
                           f"{e}") from e


def _network_kwargs(network_class, config: dict) -> dict:
    """The constructor arguments named in the configuration's ``model`` section (modelscope
    passes that whole section; the class ignores keys it does not name)."""
    section = config.get("model", {}) if isinstance(config, dict) else {}
    names = set(inspect.signature(network_class.__init__).parameters) - {"self", "model_dir"}
    return {k: v for k, v in section.items() if k in names}


def _load_state(model, state, state_path: Path, asset: str) -> None:
    """Load every parameter of ``model`` from ``state``; extra keys are ignored (as modelscope
    does), a missing or misshapen one is an error."""
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise AssetMissing("weights_mismatch", f"{asset}: {state_path} holds a "
                           f"{type(state).__name__}, expected a state dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    fix = (f"check that {state_path} is {STATE_FILE} of damo/speech_mossformer2_separation_"
           f"temporal_8k and that {CONFIG_FILE} beside it is the model's own")
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise AssetMissing("weights_mismatch", f"{asset}: {state_path} does not fit the "
                           f"network ({str(e).splitlines()[0]} ...); {fix}") from e
    if result.missing_keys:
        raise AssetMissing("weights_mismatch", f"{asset}: {state_path} lacks "
                           f"{len(result.missing_keys)} of the network's "
                           f"{len(model.state_dict())} tensors (e.g. "
                           f"{', '.join(result.missing_keys[:3])}); {fix}")
