"""SyncNet (Chung & Zisserman 2016), the network behind LSE-D and LSE-C, and its weight loader.

The layer layout (and therefore every state-dict key and shape) is that of ``SyncNetModel.S`` in
joonson/syncnet_python, so that the released ``syncnet_v2.model`` (a ``torch.save``'d state dict)
loads with exact key matching. Inputs as the original evaluation feeds them:

- lips: float32 [B, 3, 5, 224, 224], five consecutive BGR frames with raw 0..255 values (no
  normalisation), channels first, time second;
- audio: float32 [B, 1, 13, 20], 13 MFCCs over 20 steps of 10 ms (0.2 s = 5 video frames at 25 fps).

Both branches end in a 1024-d embedding; LSE compares them by Euclidean distance.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from responsenet.errors import AssetMissing

EMBED_DIM = 1024


def _conv2d(cin: int, cout: int, kernel, padding, pool=None) -> list[nn.Module]:
    """Conv2d + BatchNorm2d + ReLU (+ MaxPool2d(kernel, stride) when ``pool`` is given)."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride=1, padding=padding),
                               nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    if pool is not None:
        layers.append(nn.MaxPool2d(kernel_size=pool[0], stride=pool[1]))
    return layers


def _conv3d(cin: int, cout: int, kernel, stride=1, padding=0, pool=None) -> list[nn.Module]:
    """Conv3d + BatchNorm3d + ReLU (+ MaxPool3d(kernel, stride, padding) when ``pool`` is given)."""
    layers: list[nn.Module] = [nn.Conv3d(cin, cout, kernel, stride=stride, padding=padding),
                               nn.BatchNorm3d(cout), nn.ReLU(inplace=True)]
    if pool is not None:
        layers.append(nn.MaxPool3d(kernel_size=pool[0], stride=pool[1], padding=pool[2]))
    return layers


def _head(embed_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(),
                         nn.Linear(512, embed_dim))


class SyncNet(nn.Module):
    """Audio and lip towers of SyncNet; ``netcnnaud``/``netfcaud``/``netcnnlip``/``netfclip``.

    Shapes through the audio tower: [B,1,13,20] -> ... -> [B,512,1,1]; lip tower:
    [B,3,5,224,224] -> [B,96,1,109,109] -> ... -> [B,512,1,1,1].
    """

    def __init__(self, embed_dim: int = EMBED_DIM):
        super().__init__()
        self.netcnnaud = nn.Sequential(
            *_conv2d(1, 64, 3, 1, pool=((1, 1), (1, 1))),
            *_conv2d(64, 192, 3, 1, pool=((3, 3), (1, 2))),
            *_conv2d(192, 384, 3, 1),
            *_conv2d(384, 256, 3, 1),
            *_conv2d(256, 256, 3, 1, pool=((3, 3), (2, 2))),
            *_conv2d(256, 512, (5, 4), 0),
        )
        self.netfcaud = _head(embed_dim)
        self.netfclip = _head(embed_dim)
        self.netcnnlip = nn.Sequential(
            *_conv3d(3, 96, (5, 7, 7), stride=(1, 2, 2), pool=((1, 3, 3), (1, 2, 2), 0)),
            *_conv3d(96, 256, (1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1),
                     pool=((1, 3, 3), (1, 2, 2), (0, 1, 1))),
            *_conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)),
            *_conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)),
            *_conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1), pool=((1, 3, 3), (1, 2, 2), 0)),
            *_conv3d(256, 512, (1, 6, 6)),
        )

    def forward_aud(self, mfcc: torch.Tensor) -> torch.Tensor:
        """float32 [B, 1, 13, 20] MFCC windows -> float32 [B, embed_dim]."""
        return self.netfcaud(self.netcnnaud(mfcc).flatten(1))

    def forward_lip(self, frames: torch.Tensor) -> torch.Tensor:
        """float32 [B, 3, 5, 224, 224] BGR 0..255 frame windows -> float32 [B, embed_dim]."""
        return self.netfclip(self.netcnnlip(frames).flatten(1))


def _is_optional(key: str) -> bool:
    # BatchNorm's step counter (PyTorch >= 0.4.1) is unused in eval mode; files saved by older
    # PyTorch versions lack it.
    return key.endswith(".num_batches_tracked")


def load_syncnet(path: str | Path, device: str = "cpu") -> SyncNet:
    """Build SyncNet and load the state dict saved at ``path`` (e.g. ``syncnet_v2.model``).

    Keys must match exactly, except that missing ``num_batches_tracked`` counters are allowed;
    shapes must match. Returns the network in eval mode on ``device``.

    Raises:
        AssetMissing: ``weights_corrupt`` when the file cannot be read or does not hold SyncNet's
            state dict (names the unexpected and missing keys).
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any unreadable file is the same user-facing failure
        raise AssetMissing("weights_corrupt", f"cannot read SyncNet weights {path}: {e}") from e
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise AssetMissing("weights_corrupt", f"{path} does not hold a state dict of tensors "
                           f"(found {type(state).__name__}); expected syncnet_v2.model")
    net = SyncNet()
    expected = set(net.state_dict())
    unexpected = sorted(set(state) - expected)
    missing = sorted(k for k in expected - set(state) if not _is_optional(k))
    if unexpected or missing:
        raise AssetMissing("weights_corrupt", f"{path} is not SyncNet's state dict: "
                           f"unexpected keys {unexpected[:5]}, missing keys {missing[:5]} "
                           f"({len(unexpected)} unexpected, {len(missing)} missing)")
    try:
        net.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise AssetMissing("weights_corrupt", f"{path}: {e}") from e
    return net.eval().to(device)
