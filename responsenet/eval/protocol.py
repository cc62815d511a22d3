"""The plugin contract between the benchmark harness and a listener model.

A model is any object with the attributes and methods of :class:`ResponseModel` (subclass it or
duck-type it). The harness calls ``reset(ClipContext)`` once per clip, then ``step`` with
consecutive :class:`SpeakerChunk` objects of ``chunk_frames`` frames (the last one may be
shorter), and expects a :class:`ListenerChunk` of exactly as many frames back. Dimension legend:
``n`` = frames in the chunk, ``sr`` = ``sample_rate``, ``fps`` = frames per second.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from responsenet.errors import UsageError

#: What a model may declare in ``outputs``, and the ListenerChunk field that carries each
#: (``text`` is carried as Chrono-Text tokens in ``chrono``).
OUTPUT_FIELDS = {"face": "face", "text": "chrono", "audio": "audio", "video": "video"}
OUTPUT_KINDS = frozenset(OUTPUT_FIELDS)
#: Width of a face frame: 52 blendshapes + 12 pose values.
FACE_DIM = 64


@dataclass(frozen=True)
class ClipContext:
    """What a model learns about a clip before its first frame."""

    clip_id: str
    fps: float
    sample_rate: int
    n_frames: int
    listener_role: str = "listener"
    speaker_role: str = "speaker"
    history: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class SpeakerChunk:
    """``n`` consecutive frames of the speaker, starting at ``start_frame``.

    Attributes:
        audio: float32 [n * sr / fps]; face: float32 [n, 64]; face_mask: bool [n];
        chrono: n Chrono-Text tokens; video: uint8 [n, H, W, 3] when the model asks for it
        (``"video" in model.inputs``); clip_id: the clip the chunk belongs to (``step_batch``
        gets chunks of several clips, in the order of the batch, finished clips left out).
    """

    start_frame: int
    n_frames: int
    audio: np.ndarray
    face: np.ndarray
    face_mask: np.ndarray
    chrono: list[str]
    video: np.ndarray | None = None
    clip_id: str = ""


@dataclass
class ListenerChunk:
    """The model's answer for exactly the frames of the chunk it was given.

    Attributes:
        face: float32 [n, 64] or None; audio: float32 [n * sr / fps] or None; chrono: n tokens or
        None; video: uint8 [n, H, W, 3] or None. What the model's ``outputs`` declares must be set.
    """

    face: np.ndarray | None = None
    audio: np.ndarray | None = None
    chrono: list[str] | None = None
    video: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class ResponseModel:
    """Base class for listener models (subclassing is optional; duck typing works too)."""

    fps: ClassVar[float] = 25
    sample_rate: ClassVar[int] = 16000
    outputs: ClassVar[frozenset[str]] = frozenset({"face"})
    chunk_frames: ClassVar[int] = 1

    def reset(self, clip: ClipContext) -> None:
        """Forget the previous clip."""

    def step(self, obs: SpeakerChunk) -> ListenerChunk:
        raise NotImplementedError


def samples_for(n_frames: int, fps: float, sample_rate: int) -> int:
    """Audio samples that ``n_frames`` frames span (exact for 25 fps at 16 kHz: 640 per frame)."""
    return round(n_frames * sample_rate / fps)


def check_model(model: Any, where: str = "model") -> None:
    """Raise UsageError naming what ``model`` lacks to be a ResponseModel."""
    missing = [name for name in ("reset", "step") if not callable(getattr(model, name, None))]
    missing += [name for name in ("fps", "sample_rate", "outputs", "chunk_frames")
                if not hasattr(model, name)]
    if missing:
        raise UsageError(f"{where} is not a ResponseModel: it lacks {', '.join(missing)} "
                         "(see responsenet.eval.ResponseModel)")
    unknown = set(model.outputs) - OUTPUT_KINDS
    if unknown or not model.outputs:
        raise UsageError(f"{where}.outputs must be a non-empty subset of {sorted(OUTPUT_KINDS)}, "
                         f"got {sorted(model.outputs)}")
    if int(model.chunk_frames) < 1:
        raise UsageError(f"{where}.chunk_frames must be at least 1, got {model.chunk_frames}")


def check_output(out: Any, model: Any, obs: SpeakerChunk, clip_id: str) -> list[str]:
    """Problems of one ``step`` answer (empty when it is well formed)."""
    where = f"clip {clip_id} frame {obs.start_frame}"
    if not isinstance(out, ListenerChunk):
        return [f"{where}: step returned {type(out).__name__}, expected a ListenerChunk"]
    n, problems = obs.n_frames, []
    expected = {
        "face": (n, FACE_DIM),
        "audio": (samples_for(n, model.fps, model.sample_rate),),
    }
    for kind in sorted(model.outputs):
        value = getattr(out, OUTPUT_FIELDS[kind])
        if value is None:
            problems.append(f"{where}: outputs declares {kind!r} but step returned no "
                            f"{OUTPUT_FIELDS[kind]}")
        elif kind in expected and np.shape(value) != expected[kind]:
            problems.append(f"{where}: {kind} has shape {np.shape(value)}, expected "
                            f"{expected[kind]}")
        elif kind == "text" and len(value) != n:
            problems.append(f"{where}: chrono has {len(value)} tokens, expected {n}")
        elif kind == "video" and (np.ndim(value) != 4 or np.shape(value)[0] != n):
            problems.append(f"{where}: video has shape {np.shape(value)}, expected [{n}, H, W, 3]")
    if out.face is not None and "face" in model.outputs and np.shape(out.face) == expected["face"]:
        if not np.all(np.isfinite(out.face)):
            problems.append(f"{where}: face holds NaN or infinite values")
    return problems


def parse_model_args(text: str | None) -> dict[str, Any]:
    """``"k=v,k2=v2"`` -> dict, values read as int, float, bool or str."""
    args: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--model-args expects k=v,... got {part!r}")
        args[key.strip()] = _value(value.strip())
    return args


def parse_metric_args(text: str | None) -> dict[str, dict[str, Any]]:
    """``"fvd.num_videos=0,lse.min_frames=0"`` -> ``{"fvd": {"num_videos": 0}, ...}``."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in parse_model_args(text).items():
        metric, dot, name = key.partition(".")
        if not dot or not metric or not name:
            raise UsageError(f"--metric-args expects metric.key=value,... got {key!r}")
        out.setdefault(metric, {})[name] = value
    return out


def _value(text: str) -> Any:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def load_model(spec: str, args: dict[str, Any] | None = None,
               defaults: dict[str, Any] | None = None) -> Any:
    """Build the model ``spec`` names and check it is a ResponseModel.

    ``spec`` is a registered baseline name (``responsenet eval --list-models``) or
    ``pkg.module:Attr``; the model is built with ``Attr.from_args(**args)`` when it has one, else
    ``Attr(**args)``. ``defaults`` (the harness's ``corpus``, ``seed``, ``device``) are added for
    the names that signature accepts and ``args`` does not set. Raises UsageError naming what went
    wrong.
    """
    target = _target(spec)
    factory = getattr(target, "from_args", None)
    factory = factory if callable(factory) else target
    args = {**_accepted(factory, defaults or {}), **(args or {})}
    try:
        model = factory(**args)
    except TypeError as e:
        raise UsageError(f"cannot build {spec} with --model-args {args}: {e}") from e
    check_model(model, spec)
    return model


def _target(spec: str) -> Any:
    from responsenet.eval.baselines import BASELINES

    if ":" not in spec:
        if spec not in BASELINES:
            raise UsageError(f"--model expects pkg.module:Class or a baseline name: "
                             f"{BASELINES.unknown_message(spec)}")
        return BASELINES.get(spec)
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"--model expects pkg.module:Class or a baseline name "
                         f"({', '.join(BASELINES.names())}), got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:
        raise UsageError(f"cannot import {module_name!r} for --model {spec}: "
                         f"{type(e).__name__}: {e}") from e
    target = getattr(module, attr, None)
    if target is None:
        raise UsageError(f"module {module_name!r} has no attribute {attr!r} (--model {spec})")
    return target


def _accepted(factory: Any, defaults: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``defaults`` that ``factory``'s signature names explicitly (a bare
    ``**kwargs`` does not count: a user model is never handed arguments it did not ask for)."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return {}
    return {k: v for k, v in defaults.items() if k in params}
