"""What every metric sees and declares.

A metric is a pure function ``fn(clips, ctx) -> value`` over the scored clips of one run, where
``value`` is a float or a dict of named floats (a suite returns several keys at once), plus a
:class:`MetricInfo` that declares what it needs (generated modalities, model assets), which way is
better and an implementation version recorded in results.json. A metric that cannot run (its
weights are missing, the model did not generate what it needs) raises :class:`MetricSkipped`
with the reason and, for missing weights, the file it wanted.

Dimension legend: ``T`` = frames of the clip, ``S`` = audio samples (``T * sample_rate / fps``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from responsenet.errors import AssetMissing


@dataclass
class ScoredClip:
    """One clip's generated listener beside the real listener and the speaker.

    Attributes:
        clip_id, fps, sample_rate, n_frames: the clip; ``n_frames`` = T.
        gen_face: float32 [T, 64] generated listener face (52 blendshapes + 12 pose), or None.
        gen_chrono: T generated Chrono-Text tokens, or None; ``gen_text`` their words as one string.
        gen_audio: float32 [S] generated listener speech at ``sample_rate``, or None.
        gen_video: path of the rendered listener video (mp4), or None.
        ref_face, ref_face_mask: the real listener's features [T, 64] and ``face_present`` [T].
        ref_chrono, ref_text: the real listener's tokens and words.
        ref_audio: float32 [S] the real listener's separated voice, or None when not loaded.
        ref_video: path of the real listener's video, or None.
        ref_vad: bool [T], the real listener speaks.
        spk_face, spk_face_mask, spk_audio, spk_video: the speaker, same shapes.
        gen_samples: float32 [K, T, 64] further face samples for the same clip (diversity
            metrics), or None when the model produced one sample.
    """

    clip_id: str
    fps: float
    sample_rate: int
    n_frames: int
    gen_face: np.ndarray | None = None
    gen_chrono: list[str] | None = None
    gen_text: str | None = None
    gen_audio: np.ndarray | None = None
    gen_video: Path | None = None
    ref_face: np.ndarray | None = None
    ref_face_mask: np.ndarray | None = None
    ref_chrono: list[str] | None = None
    ref_text: str | None = None
    ref_audio: np.ndarray | None = None
    ref_video: Path | None = None
    ref_vad: np.ndarray | None = None
    spk_face: np.ndarray | None = None
    spk_face_mask: np.ndarray | None = None
    spk_audio: np.ndarray | None = None
    spk_video: Path | None = None
    gen_samples: np.ndarray | None = None


class MetricSkipped(Exception):
    """A metric cannot be computed for this run; ``reason`` says why, ``wanted`` the missing file."""

    def __init__(self, reason: str, wanted: str | None = None):
        super().__init__(reason)
        self.reason, self.wanted = reason, wanted

    def as_dict(self) -> dict[str, str]:
        out = {"skipped": self.reason}
        if self.wanted:
            out["wanted"] = self.wanted
        return out


@dataclass
class MetricContext:
    """Run-wide settings a metric may read.

    Attributes:
        seed: seed for anything random (UTMOSv2 folds, FVD clip sampling).
        device: "cpu" or "cuda".
        params: per-metric hyper-parameters, ``params[metric_name][key]``.
        asset_paths: explicit asset folders by asset name (``--asset NAME=PATH``).
        train_faces: float32 [N, 64] real listener frames of the train split, for metrics that
            compare against the training distribution (None when not loaded).
        used_assets: filled by :meth:`asset`: asset name -> folder actually used.
        notes: what a metric wants recorded beside its value in results.json
            (``notes[metric][key]``, e.g. BERTScore's hash string).
    """

    seed: int = 0
    device: str = "cpu"
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    asset_paths: dict[str, Path] = field(default_factory=dict)
    train_faces: np.ndarray | None = None
    used_assets: dict[str, Path] = field(default_factory=dict)
    notes: dict[str, dict[str, Any]] = field(default_factory=dict)

    def param(self, metric: str, key: str, default: Any) -> Any:
        return self.params.get(metric, {}).get(key, default)

    def asset(self, name: str) -> Path:
        """Folder of asset ``name``; raises MetricSkipped naming the wanted file when missing."""
        from responsenet.assets import resolve
        from responsenet.assets_catalog import ASSETS

        try:
            folder = resolve(name, self.asset_paths.get(name))
        except AssetMissing as e:
            files = ASSETS.get(name).files
            raise MetricSkipped(str(e), wanted=f"{name}/{files[0]}") from e
        self.used_assets[name] = folder
        return folder


Direction = Literal["higher", "lower", "closer_to_real"]
MetricFn = Callable[[Sequence[ScoredClip], MetricContext], "float | dict[str, float]"]


@dataclass(frozen=True)
class MetricInfo:
    """A metric's declaration.

    Attributes:
        name: the results.json key (a suite's keys are ``{name}_{sub}``).
        fn: ``"module:function"`` computing it.
        needs: generated modalities it reads (subset of face, text, audio, video).
        direction: which way is better (for every key, unless ``directions`` names the key).
        directions: ``(key, direction)`` pairs for the keys of a dict-valued metric whose
            direction differs from ``direction`` (e.g. LSE-C is higher-better beside LSE-D).
        version: implementation version, bumped when the computation changes.
        assets: model assets it loads (names in ``responsenet models list``).
        paper: True for the paper's metric, False for an offline variant under its own name.
        description: one line for ``responsenet eval --list-metrics`` and the report.
    """

    name: str
    fn: str
    needs: frozenset[str]
    direction: Direction
    version: str
    assets: tuple[str, ...] = ()
    paper: bool = True
    description: str = ""
    directions: tuple[tuple[str, str], ...] = ()

    def direction_of(self, key: str) -> str:
        """Direction of result key ``key`` (``name`` or ``{name}_{sub}``)."""
        sub = key[len(self.name) + 1:] if key.startswith(self.name + "_") else key
        return dict(self.directions).get(sub, self.direction)


def require(clips: Sequence[ScoredClip], *attrs: str) -> None:
    """Raise MetricSkipped unless at least one clip has every attribute in ``attrs`` set."""
    if not clips:
        raise MetricSkipped("no clips to score")
    for attr in attrs:
        if all(getattr(c, attr) is None for c in clips):
            raise MetricSkipped(f"no clip has {attr} (the model does not generate it or the "
                                "corpus lacks it)")
