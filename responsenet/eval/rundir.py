"""The run folder: what a generation wrote per clip, and reading it back for scoring.

    RUN/run.json                      key, model spec and args, data, split, seed, mode, device
    RUN/clips/{clip_id}/face.npy      float32 [T, 64]   (when the model generates face)
    RUN/clips/{clip_id}/listener.wav  16-bit PCM        (audio)
    RUN/clips/{clip_id}/chrono.jsonl  one JSON token per frame (text)
    RUN/clips/{clip_id}/text.txt      the generated words (text)
    RUN/clips/{clip_id}/video.mp4     rendered listener (video)
    RUN/clips/{clip_id}/status.json   written last: ok or the failure reason, timing samples

A clip folder without status.json is unfinished and is generated again on resume.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from responsenet.chrono import plain_text
from responsenet.errors import UsageError
from responsenet.eval.harness import ClipRun
from responsenet.manifest import is_safe_name
from responsenet.media import require_tool
from responsenet.wavio import read_wav, write_wav


def clip_dir(run: Path, clip_id: str) -> Path:
    """``run/clips/{clip_id}``; a clip id that is not a safe file name is refused (it comes from
    the corpus, which may not be ours)."""
    if not is_safe_name(clip_id):
        raise UsageError(f"clip id {clip_id!r} is not a safe file name; the run folder would "
                         "reach outside RUN/clips. Run `responsenet validate` on the corpus")
    return run / "clips" / clip_id


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: Path, data: Any) -> None:
    _atomic_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_clip(run_dir: Path, result: ClipRun, sample_rate: int) -> None:
    """Write one clip's outputs, then its status.json (the completion marker)."""
    folder = clip_dir(run_dir, result.clip_id)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "status.json").unlink(missing_ok=True)
    if result.face is not None:
        np.save(folder / "face.npy", result.face)
    if result.audio is not None:
        write_wav(folder / "listener.wav", result.audio, sample_rate)
    if result.chrono is not None:
        _atomic_text(folder / "chrono.jsonl", "".join(json.dumps(t) + "\n" for t in result.chrono))
        _atomic_text(folder / "text.txt", plain_text(result.chrono) + "\n")
    if result.video is not None:
        encode_video(folder / "video.mp4", result.video, result.fps)
    write_json(folder / "status.json", {
        "clip_id": result.clip_id, "n_frames": result.n_frames,
        "status": "ok" if result.ok else "failed", "reason": result.reason, "error": result.error,
        "step_seconds": [round(s, 7) for s in result.step_seconds],
        "share_seconds": [round(s, 7) for s in result.share_seconds],
        "overhead_seconds": [round(s, 7) for s in result.overhead_seconds]})


def read_status(run_dir: Path, clip_id: str) -> dict[str, Any] | None:
    path = clip_dir(run_dir, clip_id) / "status.json"
    return json.loads(path.read_text()) if path.is_file() else None


def status_as_run(status: dict[str, Any], fps: float) -> ClipRun:
    """A ClipRun carrying only the timing and status of a clip generated earlier."""
    return ClipRun(status["clip_id"], status["n_frames"], fps, reason=status["reason"],
                   error=status["error"], step_seconds=status["step_seconds"],
                   share_seconds=status["share_seconds"],
                   overhead_seconds=status["overhead_seconds"])


def read_outputs(run_dir: Path, clip_id: str) -> dict[str, Any]:
    """Generated outputs of one clip: face [T, 64], audio [S] (+ rate), chrono, video path."""
    folder = clip_dir(run_dir, clip_id)
    out: dict[str, Any] = {}
    if (folder / "face.npy").is_file():
        out["face"] = np.load(folder / "face.npy")
    if (folder / "listener.wav").is_file():
        out["audio"], out["sample_rate"] = read_wav(folder / "listener.wav")
    if (folder / "chrono.jsonl").is_file():
        out["chrono"] = [json.loads(line) for line in
                         (folder / "chrono.jsonl").read_text().splitlines()]
    if (folder / "video.mp4").is_file():
        out["video"] = folder / "video.mp4"
    return out


def encode_video(path: Path, frames: np.ndarray, fps: float) -> None:
    """Encode uint8 [T, H, W, 3] RGB frames as H.264 mp4 (yuv420p, even size by padding)."""
    n, height, width, _ = frames.shape
    tmp = path.with_name(path.stem + ".tmp.mp4")
    args = [require_tool("ffmpeg"), "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
            "-s", f"{width}x{height}", "-r", f"{fps:g}", "-i", "pipe:0",
            "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-c:v", "libx264", "-preset", "ultrafast",
            "-crf", "18", "-pix_fmt", "yuv420p", str(tmp)]
    done = subprocess.run(args, input=np.ascontiguousarray(frames).tobytes(),
                          capture_output=True, check=False)
    if done.returncode != 0:
        raise UsageError(f"{path}: ffmpeg could not encode {n} frames: "
                         f"{done.stderr.decode(errors='replace')[-300:]}")
    os.replace(tmp, path)
