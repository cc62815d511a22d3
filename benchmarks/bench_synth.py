"""Speed of `responsenet synth`, and how well MediaPipe sees what it rendered.

Run: ``.venv/bin/python benchmarks/bench_synth.py [--n 4] [--duration 12] [--size 640x360]``.
Prints one Markdown row per layout: wall seconds per conversation (TTS + animation + H.264
encode, word cache cold at the start), the share of sampled frames where MediaPipe finds exactly one
face in each panel, and the correlation of MediaPipe's jawOpen with the speech envelope of the voice
that drives that panel (mean and minimum over panels).
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from responsenet.synth.audio import frame_envelope
from responsenet.synth.generate import SynthSpec, conversation_id, synthesize
from responsenet.synth.render import panel_rects
from responsenet.synth.truth import read_truth
from responsenet.testing.video import decode_rgb, faces_per_panel, jaw_open_series
from responsenet.wavio import read_wav


def measure(folder: Path, spec: SynthSpec) -> tuple[float, float, float, float]:
    start = time.perf_counter()
    synthesize(folder, spec, progress=False)
    seconds = (time.perf_counter() - start) / spec.n
    rects = panel_rects(spec.layout, spec.size)
    shares, correlations = [], []
    for index in range(spec.n):
        truth = read_truth(folder / f"{conversation_id(spec.seed, index)}.truth.json")
        frames = decode_rgb(folder / f"{truth['id']}.mp4", spec.size)
        found = faces_per_panel(frames[::5], rects)
        shares += [np.mean([len(faces) == 1 for faces in per]) for per in found.values()]
        for person in truth["participants"]:
            audio, rate = read_wav(folder / person["audio"])
            jaw = jaw_open_series(frames, rects[person["panel"]], spec.fps)
            correlations.append(np.corrcoef(frame_envelope(audio, spec.fps, rate), jaw)[0, 1])
    return seconds, min(shares), float(np.mean(correlations)), min(correlations)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--duration", type=float, default=12.0)
    parser.add_argument("--size", default="640x360")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    print(f"# {platform.node() or 'machine'} {platform.machine()}, {args.n} conversations")
    print("| layout | size | s per conversation | x real time | one face per panel (min) "
          "| jawOpen r mean | jawOpen r min |")
    print("|---|---|---|---|---|---|---|")
    for layout in ("lr", "tb", "pip"):
        size = (height, width) if layout == "tb" else (width, height)
        spec = SynthSpec(n=args.n, seed=2026, layout=layout, duration=args.duration, size=size)
        with tempfile.TemporaryDirectory() as tmp:
            seconds, share, r_mean, r_min = measure(Path(tmp), spec)
        print(f"| {layout} | {size[0]}x{size[1]} | {seconds:.1f} | {args.duration / seconds:.1f} "
              f"| {share:.0%} | {r_mean:.2f} | {r_min:.2f} |")


if __name__ == "__main__":
    main()
