"""The ground truth of a synthetic (or composed real-media) conversation, and its checks.

``{id}.truth.json``::

    {"id", "fps", "duration", "n_frames", "layout", "size": [W, H], "seed", "topic",
     "participants": [{"panel", "participant_id", "face", "voice", "role",
                       "words": [{"text", "start", "end"}], "speech": [[start, end], ...],
                       "head_pose": {"yaw": [...], "pitch": [...], "roll": [...]} | null,
                       "box": [x, y, w, h], "audio": "{id}.{panel}.wav"}, ...],
     "cuts": [seconds, ...], "noise_snr_db": float | null, "source": "synth"}

Times are seconds from the start of the video; head pose is degrees per video frame; boxes are
canvas pixels. JSON is written with sorted keys and floats rounded to microseconds, so the same
seed gives the same bytes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from responsenet.build.workspace import write_json_atomic

TIME_DECIMALS = 6
POSE_DECIMALS = 4


def round_floats(value: Any, decimals: int = TIME_DECIMALS) -> Any:
    """Round every float inside nested lists/dicts (for stable bytes)."""
    if isinstance(value, float):
        return round(value, decimals)
    if isinstance(value, dict):
        return {k: round_floats(v, POSE_DECIMALS if k == "head_pose" else decimals)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [round_floats(v, decimals) for v in value]
    return value


def write_truth(path: str | Path, truth: dict[str, Any]) -> None:
    write_json_atomic(Path(path), round_floats(truth))


def read_truth(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _inside(start: float, end: float, spans: list[list[float]], tol: float) -> bool:
    return any(a - tol <= start and end <= b + tol for a, b in spans)


def truth_problems(truth: dict[str, Any], tol: float = 1e-6) -> list[str]:
    """Self-consistency problems of a truth dict (empty when consistent).

    Checks: frame count = fps x duration; every word has start < end, lies inside
    [0, duration] and inside one of that participant's speech spans; a participant's words do
    not overlap; speech spans are ordered and disjoint; head-pose arrays have one value per frame;
    cuts are inside the video.
    """
    problems = []
    n_frames, duration = truth["n_frames"], truth["duration"]
    if round(truth["fps"] * duration) != n_frames:
        problems.append(f"n_frames {n_frames} != fps {truth['fps']} x duration {duration}")
    for p in truth["participants"]:
        who = f"participant {p['panel']}"
        spans = p["speech"]
        if any(b <= a for a, b in spans) or any(spans[i][1] > spans[i + 1][0]
                                                for i in range(len(spans) - 1)):
            problems.append(f"{who}: speech spans are not ordered and disjoint")
        previous_end = -1.0
        for w in p["words"]:
            if not (0 <= w["start"] < w["end"] <= duration + tol):
                problems.append(f"{who}: word {w['text']!r} at {w['start']}-{w['end']} "
                                f"is outside [0, {duration}] or empty")
            if not _inside(w["start"], w["end"], spans, tol):
                problems.append(f"{who}: word {w['text']!r} is outside every speech span")
            if w["start"] < previous_end - tol:
                problems.append(f"{who}: word {w['text']!r} overlaps the previous word")
            previous_end = w["end"]
        for axis, values in (p.get("head_pose") or {}).items():
            if len(values) != n_frames:
                problems.append(f"{who}: head_pose {axis} has {len(values)} values, "
                                f"expected {n_frames}")
    problems += [f"cut at {c} s is outside the video" for c in truth["cuts"]
                 if not 0 < c < duration]
    return problems
