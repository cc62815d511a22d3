"""Scoring a run folder: generated outputs beside the corpus's real listener, through the metrics.

``score_run`` never regenerates: it reads ``RUN/clips/*`` (see :mod:`responsenet.eval.rundir`),
pairs each completed clip with its references, computes the selected metrics and writes
``results.json``, ``results.md`` and ``per_clip.csv``.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

from responsenet.chrono import plain_text
from responsenet.errors import UsageError
from responsenet.eval.clips import EvalClip, EvalClipReader, eval_refs
from responsenet.eval.metrics import METRICS, MetricContext, ScoredClip, compute
from responsenet.eval.protocol import OUTPUT_KINDS
from responsenet.eval.report import write_per_clip, write_results_md
from responsenet.eval.rundir import read_outputs, read_status, status_as_run, write_json
from responsenet.eval.timing import summarize
from responsenet.hashing import sha256_file


def scored_clip(clip: EvalClip, outputs: dict[str, Any]) -> ScoredClip:
    """Pair one clip's generated outputs with its real listener and speaker."""
    chrono = outputs.get("chrono")
    listener, speaker = clip.listener, clip.speaker
    return ScoredClip(
        clip_id=clip.clip_id, fps=clip.ref.fps, sample_rate=outputs.get("sample_rate", 16000),
        n_frames=clip.n_frames, gen_face=outputs.get("face"), gen_chrono=chrono,
        gen_text=None if chrono is None else plain_text(chrono), gen_audio=outputs.get("audio"),
        gen_video=outputs.get("video"), ref_face=listener.face, ref_face_mask=listener.face_mask,
        ref_chrono=listener.chrono, ref_text=listener.text, ref_video=listener.video_path,
        ref_vad=listener.vad, spk_face=speaker.face, spk_face_mask=speaker.face_mask,
        spk_video=speaker.video_path)


def load_run(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "run.json"
    if not path.is_file():
        raise UsageError(f"{run_dir}: no run.json; expected a folder written by "
                         "`responsenet eval --out`")
    return json.loads(path.read_text())


def score_run(run_dir: str | Path, names: list[str], *, strict: bool = False,
              asset_paths: dict[str, Path] | None = None, compare: str | None = None,
              device: str | None = None, params: dict[str, dict[str, Any]] | None = None
              ) -> dict[str, Any]:
    """Compute ``names`` for the run in ``run_dir`` and write its reports; return results.json."""
    run_dir = Path(run_dir)
    meta = load_run(run_dir)
    root = Path(meta["data"]["root"])
    reader = EvalClipReader(root)
    refs = eval_refs(root, meta["data"]["split"], meta.get("limit"))
    clips, runs, rows = [], [], []
    for ref in refs:
        status = read_status(run_dir, ref.clip_id)
        if status is None:
            rows.append({"clip_id": ref.clip_id, "status": "missing", "n_frames": ref.n_frames,
                         "reason": "not_generated", "error": "no outputs in the run folder"})
            continue
        runs.append(status_as_run(status, ref.fps))
        rows.append(_row(status))
        if status["status"] == "ok":
            clips.append(scored_clip(reader.load(ref), read_outputs(run_dir, ref.clip_id)))
    unknown = sorted(set(params or {}) - set(METRICS))
    if unknown:
        raise UsageError(f"--metric-args names unknown metric(s) {', '.join(unknown)}; known: "
                         f"{', '.join(METRICS)}")
    ctx = MetricContext(seed=meta["seed"], device=device or meta["device"],
                        asset_paths=dict(asset_paths or {}), params=dict(params or {}))
    outputs = frozenset(meta["model"]["outputs"]) & OUTPUT_KINDS
    values, details = compute(names, clips, ctx, outputs=outputs, strict=strict)
    results = {
        "metrics": values, "metric_versions": details,
        "timing": summarize(runs, meta["chunk_frames"], meta["batch_clips"]),
        "model": meta["model"], "data": {**meta["data"], "n_clips": len(refs),
                                         "n_scored": len(clips)},
        "mode": meta["mode"], "seed": meta["seed"], "device": ctx.device,
        "metric_params": ctx.params,
        "versions": _versions(), "assets": _asset_sums(ctx.used_assets),
        "failures": [r for r in rows if r["status"] != "ok"],
    }
    write_json(run_dir / "results.json", results)
    write_per_clip(run_dir / "per_clip.csv", rows)
    write_results_md(run_dir / "results.md", results, compare=compare)
    return results


def _row(status: dict[str, Any]) -> dict[str, Any]:
    steps = status["step_seconds"]
    return {"clip_id": status["clip_id"], "status": status["status"],
            "n_frames": status["n_frames"], "reason": status["reason"] or "",
            "error": status["error"] or "", "steps": len(steps),
            "model_seconds": round(sum(status["share_seconds"]), 6),
            "first_output_ms": round(steps[0] * 1000, 4) if steps else ""}


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("responsenet", "numpy", "torch", "nltk", "transformers", "onnxruntime", "scipy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def _asset_sums(used: dict[str, Path]) -> dict[str, dict[str, str]]:
    """sha256 of every file of every asset a metric loaded."""
    from responsenet.assets_catalog import ASSETS

    out: dict[str, dict[str, str]] = {}
    for name, folder in sorted(used.items()):
        files = ASSETS.get(name).files
        out[name] = {f: sha256_file(folder / f) for f in files if (folder / f).is_file()}
    return out


__all__ = ["METRICS", "load_run", "score_run", "scored_clip"]
