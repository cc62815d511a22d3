"""Corpus shards as PyTorch datasets: windows, streaming, collation and the Chrono-Text vocabulary.

    from responsenet.data import ResponseNetDataset, ChronoVocab, collate
    train = ResponseNetDataset("corpus", "train", window_frames=256, modalities=("face", "chrono"))
    loader = torch.utils.data.DataLoader(train, batch_size=32, collate_fn=collate, num_workers=2)

The batch dict and its dimension legend are documented on ``ResponseNetDataset`` and in
docs/data.md. Names are imported lazily, so ``ChronoVocab`` and ``window_starts`` work without
PyTorch; the datasets and ``collate`` need it (``pip install torch``).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ResponseNetDataset": "responsenet.data.dataset",
    "ResponseNetStream": "responsenet.data.iterable",
    "collate": "responsenet.data.batching",
    "ChronoVocab": "responsenet.data.vocab",
    "SPECIALS": "responsenet.data.vocab",
    "ClipRef": "responsenet.data.index",
    "scan_clips": "responsenet.data.index",
    "window_starts": "responsenet.data.index",
    "MODALITIES": "responsenet.data.items",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        return getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as e:
        if e.name == "torch":
            raise ModuleNotFoundError(
                f"responsenet.data.{name} needs PyTorch; install it "
                "(CPU build: pip install torch --index-url https://download.pytorch.org/whl/cpu)",
                name="torch") from e
        raise


def __dir__() -> list[str]:
    return __all__
