"""Speed of the download and segment stages on generated sources.

Run: ``.venv/bin/python benchmarks/bench_build.py [--minutes 1] [--sources 4]``.
Prints a Markdown row per configuration; copy the rows into benchmarks/README.md with the
machine and date.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

from rich.console import Console

from responsenet.build.pipeline import build
from responsenet.testing.http import serve_directory
from responsenet.testing.media import PATTERNS, make_shots_video


def make_sources(folder: Path, n: int, minutes: float, size: tuple[int, int]) -> list[Path]:
    shot = 10.0
    shots = [(PATTERNS[i % len(PATTERNS)], shot) for i in range(int(minutes * 60 / shot))]
    first = make_shots_video(folder / "s0.mp4", shots, size=size, tone_hz=440.0)
    paths = [first]
    for i in range(1, n):  # identical content, distinct files
        paths.append(folder / f"s{i}.mp4")
        paths[-1].write_bytes(first.read_bytes())
    return paths


def run(folder: Path, sources: list[Path], workers: int, over_http: bool, config: str | None):
    out = folder / f"out-{workers}-{int(over_http)}-{time.monotonic_ns()}"
    manifest = folder / "m.jsonl"
    with serve_directory(folder) as base:
        rows = [{"id": p.stem, **({"url": f"{base}/{p.name}"} if over_http else
                                  {"path": str(p)})} for p in sources]
        manifest.write_text("\n".join(json.dumps(r) for r in rows))
        start = time.perf_counter()
        report = build(manifest, out, "download,segment", workers=workers, progress=False,
                       config_path=config, console=Console(quiet=True))
        wall = time.perf_counter() - start
    assert report.succeeded == len(sources), report.failures
    return wall, report.stages


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--sources", type=int, default=4)
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--config", default=None)
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    print(f"# {platform.node()} {platform.processor() or platform.machine()}, "
          f"{len(__import__('os').sched_getaffinity(0))} cores")
    print("| input | workers | via | download s | segment s | total s | x real time |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sources = make_sources(folder, args.sources, args.minutes, size)
        media_s = args.sources * args.minutes * 60
        for workers, http in ((1, False), (2, False), (2, True)):
            wall, stages = run(folder, sources, workers, http, args.config)
            print(f"| {args.sources} x {args.minutes:g} min {args.size} 25 fps | {workers} | "
                  f"{'http' if http else 'local'} | {stages['download'].seconds:.1f} | "
                  f"{stages['segment'].seconds:.1f} | {wall:.1f} | {media_s / wall:.1f} |")


if __name__ == "__main__":
    main()
