"""Speed of the `crop` and `face` stages on a synthetic two-person clip, and MediaPipe's cost.

Run: ``.venv/bin/python benchmarks/bench_video.py [--duration 20] [--size 1280x720]``.
Generates one lr conversation (``responsenet synth``), then times, in this process (one worker):
``crop`` at 512 and 1024 crops (default settings, and cpu-small's ``ultrafast`` preset with
``detect_every=2``), ``face`` on its output (two tracks in two threads), and MediaPipe FaceLandmarker alone (VIDEO mode, ms per face-frame on the decoded crops).
Prints Markdown rows; "x real time" is clip seconds per wall-clock second.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

from responsenet.build.stages.base import StageContext, StageResult
from responsenet.build.stages.crop import CropConfig, crop_clip
from responsenet.build.stages.face import FaceConfig, FaceStage, model_file
from responsenet.manifest import SourceEntry
from responsenet.media import decode_frames
from responsenet.synth.generate import SynthSpec, conversation_id, synthesize


def time_face(crop_dir: Path, meta: dict) -> float:
    out = crop_dir.parent / f"{crop_dir.name}-face"
    out.mkdir()
    ctx = StageContext(item_id="bench_000", source=SourceEntry(id="bench", path="x.mp4"),
                       config=FaceConfig(), out_dir=out,
                       inputs={"crop": StageResult(crop_dir, meta, "bench")})
    start = time.perf_counter()
    FaceStage().run(ctx)
    return time.perf_counter() - start


def mediapipe_ms(video: Path, frames: int = 150) -> float:
    import mediapipe as mp

    from responsenet.build.stages.face import landmarker_for

    decoded = [f for _, f in zip(range(frames), decode_frames(video))]
    with landmarker_for(model_file(None), FaceConfig()) as landmarker:
        start = time.perf_counter()
        for index, frame in enumerate(decoded):
            image = mp.Image(image_format=mp.ImageFormat.SRGB, data=frame)
            landmarker.detect_for_video(image, index * 40)
        return (time.perf_counter() - start) * 1000 / len(decoded)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--size", default="1280x720")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    print(f"# {platform.node() or 'machine'} {platform.machine()}, one {args.duration:g} s lr "
          f"clip at {width}x{height}, 1 worker")
    print("| crop size | preset | detect_every | crop s | crop x RT | face s | face x RT "
          "| crop+face x RT | MediaPipe ms/face-frame |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        spec = SynthSpec(n=1, seed=7, duration=args.duration, size=(width, height))
        synthesize(tmp / "src", spec, progress=False)
        video = tmp / "src" / f"{conversation_id(7, 0)}.mp4"
        n_frames = round(args.duration * 25)
        for size in (512, 1024):
            for preset, every in (("veryfast", 1), ("ultrafast", 2)):  # default, cpu-small
                out = tmp / f"crop-{size}-{preset}"
                out.mkdir()
                start = time.perf_counter()
                cfg = CropConfig(size=size, preset=preset, detect_every=every)
                meta = crop_clip(video, out, cfg, fps=25.0, n_frames=n_frames)
                crop_s = time.perf_counter() - start
                face_s = time_face(out, meta)
                ms = mediapipe_ms(out / meta["tracks"][0]["video"])
                d = args.duration
                print(f"| {size} | {preset} | {every} | {crop_s:.1f} | {d / crop_s:.1f} | {face_s:.1f} | "
                      f"{d / face_s:.1f} | {d / (crop_s + face_s):.1f} | {ms:.1f} |")


if __name__ == "__main__":
    main()
