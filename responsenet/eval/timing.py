"""Timing summary of a generation run (the ``timing`` block of results.json)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from responsenet.eval.harness import ClipRun


def _sig(value: float) -> float:
    """``value`` to 6 significant digits (timings span microseconds to hours)."""
    return float(f"{value:.6g}")


def _ms(values: np.ndarray, q: float) -> float:
    return _sig(float(np.percentile(values, q)) * 1000)


def summarize(runs: Sequence[ClipRun], chunk_frames: int, batch_clips: int) -> dict[str, Any]:
    """Latency and throughput over the clips that produced at least one step.

    ``first_output_ms`` is the mean over clips of the first model call's seconds (warm-up
    included); ``step_p50_ms``/``step_p95_ms`` are over every model call a clip waited on;
    ``real_time_factor`` = model seconds / seconds of conversation generated (below 1 is faster
    than real time); ``realtime_steps`` is the share of calls that finished within the
    wall-clock span of the frames they answered; ``overhead_*`` is the harness's own time per step.
    """
    steps = np.array([s for r in runs for s in r.step_seconds], np.float64)
    overhead = np.array([s for r in runs for s in r.overhead_seconds], np.float64)
    model_seconds = float(sum(sum(r.share_seconds) for r in runs))
    frames = sum(r.n_frames for r in runs if r.ok)
    conversation = sum(r.n_frames / r.fps for r in runs if r.ok)
    firsts = [r.step_seconds[0] for r in runs if r.step_seconds]
    fps = runs[0].fps if runs else 25.0
    budget = chunk_frames / fps
    return {
        "clips": len(runs), "frames": int(frames), "model_seconds": _sig(model_seconds),
        "first_output_ms": _sig(float(np.mean(firsts)) * 1000) if firsts else None,
        "step_p50_ms": _ms(steps, 50) if steps.size else None,
        "step_p95_ms": _ms(steps, 95) if steps.size else None,
        "real_time_factor": _sig(model_seconds / conversation) if conversation else None,
        "frames_per_second": _sig(frames / model_seconds) if model_seconds > 0 else None,
        "realtime_steps": round(float(np.mean(steps <= budget)), 4) if steps.size else None,
        "overhead_mean_ms": _sig(float(overhead.mean()) * 1000) if overhead.size else None,
        "overhead_p95_ms": _ms(overhead, 95) if overhead.size else None,
        "chunk_frames": chunk_frames, "batch_clips": batch_clips,
    }
