"""Built-in reference listeners, registered by name for ``responsenet eval --model NAME``.

- ``silent``: ``[PAUSE]``, silent audio, the train mean listener face (no corpus: neutral face).
- ``mirror``: the speaker's face ``delay_frames`` (8) frames late, ``[PAUSE]``.
- ``random_train``: a seeded random train-split listener replayed, looped or cut (needs corpus).
- ``nearest``: the listener frame of the nearest train speaker window, brute force (corpus).
- ``lstm``: small LSTM, speaker face + audio -> listener face + Chrono-Text (needs a checkpoint:
  ``responsenet train-baseline lstm --data DIR``).

Conventions every baseline follows (the harness relies on them):

- ``Class.from_args(*, corpus=None, seed=0, **model_args)`` builds it; the harness passes the
  data root as ``corpus`` and the run seed as ``seed``. What is learnt comes from the corpus's
  ``train`` split only.
- ``chunk_frames = 1``; ``outputs`` holds at least ``face`` and ``text``; every answer depends
  only on the chunks given so far (strictly causal).
- Lock-step batching: ``reset_batch(clips: list[ClipContext])`` starts several clips at once and
  ``step_batch(chunks)`` takes one chunk per clip *in the order of that reset_batch* (an entry
  may be None for a clip that has ended; its answer is then None) and returns one
  ListenerChunk per clip, the same as ``reset(clip)`` + ``step(chunk)`` per clip would give.
  ``reset_batch`` is an optional method of the plugin contract: a model with ``step_batch``
  but no ``reset_batch`` must keep no per-clip state.

``train_baseline("lstm", data_root)`` trains what needs training (``responsenet
train-baseline``), saving ``{data_root}/baselines/lstm.pt`` by default, where ``lstm`` looks
for it.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from responsenet.errors import UsageError
from responsenet.registry import Registry

_P = "responsenet.eval.baselines"

BASELINES: Registry[type] = Registry("baseline")
BASELINES.register("silent", f"{_P}.simple:SilentListener")
BASELINES.register("mirror", f"{_P}.simple:MirrorListener")
BASELINES.register("random_train", f"{_P}.simple:RandomTrainListener")
BASELINES.register("nearest", f"{_P}.simple:NearestListener")
BASELINES.register("lstm", f"{_P}.lstm:LSTMListener")

#: Baselines with weights to train: name -> ``train(corpus, out_path, **options)``.
TRAINABLE: Registry[Any] = Registry("trainable baseline")
TRAINABLE.register("lstm", f"{_P}.lstm_train:train_lstm")


def default_checkpoint(data: str | Path, name: str) -> Path:
    """Where ``name``'s weights live by default: ``{data}/baselines/{name}.pt``."""
    return Path(data) / "baselines" / f"{name}.pt"


def load_baseline(name: str, corpus: str | Path | None = None, seed: int = 0,
                  **model_args: Any) -> Any:
    """Build the baseline registered as ``name`` (UsageError with did-you-mean when unknown),
    the way ``responsenet eval --model NAME`` does."""
    from responsenet.eval.protocol import load_model

    if ":" in name:
        raise UsageError(f"{name!r} is an import path, not a baseline name")
    return load_model(name, model_args, defaults={"corpus": corpus, "seed": seed})


def train_baseline(name: str, data: str | Path, out: str | Path | None = None,
                   **options: Any) -> Any:
    """Train baseline ``name`` on ``data``'s train split; returns the trainer's result (for
    ``lstm`` a ``TrainResult``: path, per-epoch losses, seconds).

    Args:
        name: a name in ``TRAINABLE``.
        data: the corpus root.
        out: checkpoint path; default ``default_checkpoint(data, name)``.
        options: the trainer's keyword options (lstm: epochs, hidden, layers, embed_dim,
            audio_bands, window_frames, batch_size, lr, token_weight, max_vocab, seed, device,
            progress).
    """
    if name not in TRAINABLE:
        if name in BASELINES:
            raise UsageError(f"baseline {name!r} has nothing to train; trainable: "
                             f"{', '.join(TRAINABLE.names())}")
        raise UsageError(TRAINABLE.unknown_message(name))
    train = TRAINABLE.get(name)
    out = out or default_checkpoint(data, name)
    try:
        inspect.signature(train).bind(data, out, **options)
    except TypeError as e:
        raise UsageError(f"cannot train {name!r} with options {options}: {e}") from e
    return train(data, out, **options)
