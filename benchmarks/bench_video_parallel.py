"""Throughput of crop + face with several clips at once (cpu-small settings).

Run: ``.venv/bin/python benchmarks/bench_video_parallel.py [--workers 2] [--duration 20]``.
Generates one lr conversation at 1280x720 and processes ``2 * workers`` copies of it as separate
jobs (crop, then face) in a process pool; prints wall time and clip-seconds per wall-second.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from responsenet.synth.generate import SynthSpec, conversation_id, synthesize


def job(video: Path, out: Path, n_frames: int) -> None:
    from responsenet.build.stages.base import StageContext, StageResult
    from responsenet.build.stages.crop import CropConfig, crop_clip
    from responsenet.build.stages.face import FaceConfig, FaceStage
    from responsenet.manifest import SourceEntry

    crop_dir, face_dir = out / "crop", out / "face"
    crop_dir.mkdir(parents=True)
    face_dir.mkdir()
    cfg = CropConfig(size=512, preset="ultrafast", detect_every=2)
    meta = crop_clip(video, crop_dir, cfg, fps=25.0, n_frames=n_frames)
    FaceStage().run(StageContext(item_id=out.name, source=SourceEntry(id="bench", path="x.mp4"),
                                 config=FaceConfig(), out_dir=face_dir,
                                 inputs={"crop": StageResult(crop_dir, meta, "bench")}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--duration", type=float, default=20.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        synthesize(tmp / "src", SynthSpec(n=1, seed=7, duration=args.duration,
                                          size=(1280, 720)), progress=False)
        video = tmp / "src" / f"{conversation_id(7, 0)}.mp4"
        jobs = 2 * args.workers
        start = time.perf_counter()
        with ProcessPoolExecutor(args.workers) as pool:
            list(pool.map(job, [video] * jobs, [tmp / f"job{i}" for i in range(jobs)],
                          [round(args.duration * 25)] * jobs))
        wall = time.perf_counter() - start
    print(f"| {args.workers} | {jobs} | {wall:.1f} | {jobs * args.duration / wall:.2f} |")


if __name__ == "__main__":
    main()
