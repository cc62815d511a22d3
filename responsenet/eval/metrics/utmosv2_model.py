"""The UTMOSv2 network (VoiceMOS 2024 system T05), written to load the official fold checkpoints.

This is our own PyTorch module for sarulab-speech/UTMOSv2's config ``fusion_stage3`` (model
``ssl_multispec_ext_v2``): an SSL branch over wav2vec2-base hidden states and a multi-spectrogram
branch of four timm ``tf_efficientnetv2_s`` backbones, fused by one linear layer with a
data-domain one-hot. Its ``state_dict`` keys are those of the official checkpoints
``fold{i}_s42_best_model.pth`` (``torch.save(model.state_dict())``: ``ssl.encoder.model.*``,
``ssl.weights``, ``ssl.attn.0.*``, ``spec_long.backbones.{0..3}.*``, ``spec_long.weights``,
``spec_long.attn.*``, ``fc.*``). Everything the network needs is in each fold file: the
wav2vec2-base and EfficientNetV2 weights are fine-tuned copies, so nothing is downloaded.

What is verified here and what is not (no official weights on this machine):

- verified: the EfficientNetV2-S backbone has the same state_dict keys and shapes as
  ``timm.create_model("tf_efficientnetv2_s", num_classes=0)`` (timm 1.0.31; 780 tensors,
  20,177,488 parameters) and, with the same weights, the same output (max abs diff 0.0 on
  512x512 and 97x131 inputs); the SSL encoder is transformers' own ``Wav2Vec2Model`` with
  facebook/wav2vec2-base's architecture; the heads follow the official code. Built with timm's
  module tree, the full model's ``torch.save(state_dict())`` is 818,494,425 bytes against
  818,531,314 for each official LFS object (36,889 bytes, 0.005 %, apart: module metadata of
  other library versions; no layer of more than about 9k parameters can be missing or extra).
  Stand-in checkpoints of this format, also with legacy ``weight_g``/``weight_v`` names, load
  strictly through the production path (tests/eval/test_metrics_audio.py).
- not verified: loading the real fold files, and that their scores equal the official
  ``utmosv2`` package's predictions on the same audio.

Dimension legend: ``B`` = clips in a batch, ``S`` = samples (16 kHz), ``N`` = ``num_frames *
len(specs)`` spectrogram images, ``H, W`` = ``spec_shape``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

#: Data-domain ids of the official training data (``get_dataset_map``), in one-hot order.
DATA_DOMAINS = ("bvcc", "sarulab", "blizzard2008", "blizzard2009", "blizzard2010-EH1",
                "blizzard2010-EH2", "blizzard2010-ES1", "blizzard2010-ES3", "blizzard2011",
                "somos")

#: facebook/wav2vec2-base's architecture (its config.json), as transformers' Wav2Vec2Config keys.
WAV2VEC2_BASE: dict[str, Any] = dict(
    hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
    hidden_act="gelu", conv_dim=(512,) * 7, conv_stride=(5, 2, 2, 2, 2, 2, 2),
    conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_bias=False, feat_extract_norm="group",
    feat_extract_activation="gelu", num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16,
    do_stable_layer_norm=False, layer_norm_eps=1e-5, mask_time_prob=0.05)

#: timm's tf_efficientnetv2_s: (block kind, repeats, first stride, expansion, out channels,
#: squeeze-excite ratio of the block input); "cn" conv-bn-act, "er" edge residual,
#: "ir" inverted residual.
EFFNETV2_S_STAGES: tuple[tuple[str, int, int, int, int, float], ...] = (
    ("cn", 2, 1, 1, 24, 0.0), ("er", 4, 2, 4, 48, 0.0), ("er", 4, 2, 4, 64, 0.0),
    ("ir", 6, 2, 4, 128, 0.25), ("ir", 9, 1, 6, 160, 0.25), ("ir", 15, 2, 6, 256, 0.25))


@dataclass(frozen=True)
class MelSpec:
    """One mel spectrogram of the multi-spectrogram branch (librosa melspectrogram settings)."""

    n_fft: int
    hop_length: int
    win_length: int
    n_mels: int


@dataclass(frozen=True)
class UTMOSv2Arch:
    """Network and input settings; the defaults are the official ``fusion_stage3`` ones.

    Attributes:
        ssl: Wav2Vec2Config settings of the SSL encoder.
        stem, stages, num_features: the EfficientNetV2 backbone (``tf_efficientnetv2_s``).
        specs: the four mel spectrograms (one backbone each), ``spec_shape`` their resized size,
            ``spec_norm`` the dB offset/scale (``(db + 80) / 80``).
        num_frames, frame_sec, mixup_alpha: spectrogram crops per input, their length in
            seconds, and the Beta parameter of the inner mixup of two crops.
        ssl_sec: SSL crop length in seconds; ``heads``: attention heads of both branches.
    """

    ssl: dict[str, Any] = field(default_factory=lambda: dict(WAV2VEC2_BASE))
    stem: int = 24
    stages: tuple[tuple[str, int, int, int, int, float], ...] = EFFNETV2_S_STAGES
    num_features: int = 1280
    specs: tuple[MelSpec, ...] = tuple(MelSpec(4096, 32, w, 512) for w in (4096, 2048, 1024, 512))
    spec_shape: tuple[int, int] = (512, 512)
    spec_norm: float = 80.0
    num_frames: int = 2
    frame_sec: float = 1.4
    mixup_alpha: float = 0.4
    ssl_sec: float = 3.0
    heads: int = 8
    sample_rate: int = 16000

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> UTMOSv2Arch:
        """Settings from plain values (lists become tuples, spec dicts become MelSpec)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown UTMOSv2 arch settings {unknown}; known: {sorted(known)}")
        out = dict(values)
        if "stages" in out:
            out["stages"] = tuple(tuple(s) for s in out["stages"])
        if "specs" in out:
            out["specs"] = tuple(s if isinstance(s, MelSpec) else MelSpec(**s)
                                 for s in out["specs"])
        if "spec_shape" in out:
            out["spec_shape"] = tuple(out["spec_shape"])
        return cls(**out)


# ---------------------------------------------------------------- EfficientNetV2 (timm names)

class _SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding (asymmetric for strided convs), as timm's Conv2dSame."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size),
                              reversed(self.stride)):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation,
                        self.groups)


def _conv(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    if stride == 1:  # "same" padding is static and symmetric for stride 1
        return nn.Conv2d(cin, cout, k, 1, (k - 1) // 2, groups=groups, bias=False)
    return _SameConv2d(cin, cout, k, stride, 0, groups=groups, bias=False)


class _BnAct(nn.BatchNorm2d):
    """BatchNorm (TF epsilon 1e-3) followed by SiLU when ``act``, as timm's BatchNormAct2d."""

    def __init__(self, channels: int, act: bool = True):
        super().__init__(channels, eps=1e-3)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        return F.silu(x) if self.act else x


def _make_divisible(v: float, divisor: int = 8) -> int:
    out = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * v else out


class _Block(nn.Module):
    """One timm EfficientNet block: "cn" ConvBnAct, "er" EdgeResidual, "ir" InvertedResidual."""

    def __init__(self, kind: str, cin: int, cout: int, stride: int, expand: int, se: float):
        super().__init__()
        self.kind, self.skip = kind, stride == 1 and cin == cout
        mid = _make_divisible(cin * expand)
        if kind == "cn":
            self.conv, self.bn1 = _conv(cin, cout, 3, stride), _BnAct(cout)
        elif kind == "er":
            self.conv_exp, self.bn1 = _conv(cin, mid, 3, stride), _BnAct(mid)
            self.conv_pwl, self.bn2 = _conv(mid, cout, 1), _BnAct(cout, act=False)
        elif kind == "ir":
            self.conv_pw, self.bn1 = _conv(cin, mid, 1), _BnAct(mid)
            self.conv_dw, self.bn2 = _conv(mid, mid, 3, stride, groups=mid), _BnAct(mid)
            self.se = _SqueezeExcite(mid, round(cin * se)) if se else nn.Identity()
            self.conv_pwl, self.bn3 = _conv(mid, cout, 1), _BnAct(cout, act=False)
        else:
            raise ValueError(f"unknown EfficientNet block kind {kind!r} (cn, er or ir)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "cn":
            y = self.bn1(self.conv(x))
        elif self.kind == "er":
            y = self.bn2(self.conv_pwl(self.bn1(self.conv_exp(x))))
        else:
            y = self.se(self.bn2(self.conv_dw(self.bn1(self.conv_pw(x)))))
            y = self.bn3(self.conv_pwl(y))
        return y + x if self.skip else y


class _SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduced: int):
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, reduced, 1)
        self.conv_expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.conv_expand(F.silu(self.conv_reduce(x.mean((2, 3), keepdim=True))))
        return x * torch.sigmoid(s)


class EfficientNetV2(nn.Module):
    """timm ``tf_efficientnetv2_s`` with ``num_classes=0`` and no global pool.

    ``forward``: float32 [B, 3, H, W] -> feature map [B, num_features, H/32, W/32].
    """

    def __init__(self, arch: UTMOSv2Arch):
        super().__init__()
        self.conv_stem, self.bn1 = _conv(3, arch.stem, 3, 2), _BnAct(arch.stem)
        stages, cin = [], arch.stem
        for kind, repeats, stride, expand, cout, se in arch.stages:
            blocks = [_Block(kind, cin if i == 0 else cout, cout, stride if i == 0 else 1,
                             expand, se) for i in range(repeats)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.blocks = nn.Sequential(*stages)
        self.conv_head, self.bn2 = _conv(cin, arch.num_features, 1), _BnAct(arch.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv_head(self.blocks(self.bn1(self.conv_stem(x)))))


# ---------------------------------------------------------------- the two branches and fusion

class _SSLEncoder(nn.Module):
    def __init__(self, ssl: dict[str, Any]):
        super().__init__()
        from transformers import Wav2Vec2Config, Wav2Vec2Model

        self.model = Wav2Vec2Model(Wav2Vec2Config(**ssl))


class SSLBranch(nn.Module):
    """wav2vec2 hidden states, learned layer weights, self-attention, mean+max pooling.

    ``forward``: normalised wave float32 [B, S] -> [B, 2 * hidden_size].
    """

    def __init__(self, arch: UTMOSv2Arch):
        super().__init__()
        self.encoder = _SSLEncoder(arch.ssl)
        config = self.encoder.model.config
        n_states = config.num_hidden_layers + 1
        self.weights = nn.Parameter(torch.full((n_states,), 1.0 / n_states))
        self.attn = nn.ModuleList([nn.MultiheadAttention(config.hidden_size, arch.heads,
                                                         dropout=0.2, batch_first=True)])

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        states = self.encoder.model(wave, output_hidden_states=True).hidden_states
        x = sum(t * w for t, w in zip(states, self.weights))
        y = x
        for attn in self.attn:
            y, _ = attn(y, y, y, need_weights=False)
        return torch.cat([y.mean(dim=1), x.max(dim=1).values], dim=1)


class SpecBranch(nn.Module):
    """One backbone per spectrogram kind, learned kind weights, frames side by side in time,
    catavgmax pooling over time, self-attention over frequency rows.

    ``forward``: float32 [B, N, 3, H, W] (frame-major: image ``f * len(specs) + k``) ->
    [B, 4 * num_features].
    """

    def __init__(self, arch: UTMOSv2Arch):
        super().__init__()
        self.backbones = nn.ModuleList([EfficientNetV2(arch) for _ in arch.specs])
        self.weights = nn.Parameter(torch.full((len(arch.specs),), 1.0 / len(arch.specs)))
        self.attn = nn.MultiheadAttention(2 * arch.num_features, arch.heads, dropout=0.2,
                                          batch_first=True)

    def forward(self, specs: torch.Tensor) -> torch.Tensor:
        kinds = len(self.backbones)
        feats = [self.backbones[i % kinds](specs[:, i]) for i in range(specs.shape[1])]
        frames = [sum(feats[f * kinds + k] * w for k, w in enumerate(self.weights))
                  for f in range(specs.shape[1] // kinds)]
        x = torch.cat(frames, dim=3)
        x = torch.cat([F.adaptive_avg_pool2d(x, (None, 1)), F.adaptive_max_pool2d(x, (None, 1))],
                      dim=1).squeeze(3)
        xt = x.permute(0, 2, 1)
        y, _ = self.attn(xt, xt, xt, need_weights=False)
        return torch.cat([y.mean(dim=1), x.max(dim=2).values], dim=1)


class UTMOSv2Net(nn.Module):
    """The fusion model; ``forward(wave [B, S], specs [B, N, 3, H, W], domain [B, D]) -> MOS [B]``.

    As in the official code each branch's removed head leaves a zero data-domain vector behind,
    so the fused layer sees ``[ssl, 0_D, spec, 0_D, domain]``.
    """

    def __init__(self, arch: UTMOSv2Arch | None = None):
        super().__init__()
        arch = arch or UTMOSv2Arch()
        self.ssl, self.spec_long = SSLBranch(arch), SpecBranch(arch)
        hidden, nd = self.ssl.encoder.model.config.hidden_size, len(DATA_DOMAINS)
        self.fc = nn.Linear(2 * hidden + 4 * arch.num_features + 3 * nd, 1)

    def forward(self, wave: torch.Tensor, specs: torch.Tensor, domain: torch.Tensor
                ) -> torch.Tensor:
        zeros = torch.zeros_like(domain)
        x = torch.cat([self.ssl(wave), zeros, self.spec_long(specs), zeros, domain], dim=1)
        return self.fc(x).squeeze(1)


def load_fold(path: Path, arch: UTMOSv2Arch | None = None, device: str = "cpu") -> UTMOSv2Net:
    """Build the network and load one official fold checkpoint (a plain state_dict) strictly.

    Raises:
        ValueError: the file is not a UTMOSv2 fusion_stage3 state_dict (names what differs).
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ValueError(f"{path}: expected a state_dict of tensors (torch.save(model."
                         f"state_dict())), got {type(state).__name__}")
    with torch.device("meta"):  # no random init: every tensor comes from the file
        net = UTMOSv2Net(arch)
    # pos_conv weight norm: old checkpoints say weight_g/weight_v; torch's weight_norm
    # parametrization converts them in its load_state_dict pre-hook.
    try:
        result = net.load_state_dict(state, strict=False, assign=True)
    except RuntimeError as e:  # shapes differ
        raise ValueError(f"{path} does not fit the UTMOSv2 architecture: {e}") from e
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"{path} is not a UTMOSv2 fusion_stage3 checkpoint for this "
                         f"architecture: missing {result.missing_keys[:5]} "
                         f"({len(result.missing_keys)}), unexpected "
                         f"{result.unexpected_keys[:5]} ({len(result.unexpected_keys)})")
    return net.to(device).eval()
