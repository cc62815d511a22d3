"""``python -m responsenet.demo``: the main job on the embedded default, as ``make demo`` runs it.

It writes a few small demo sources (a multi-shot video with a camera cut and a shot too short to
keep, a 30 fps video, a variable-frame-rate video), a manifest for them, and then runs
``responsenet build --stage all`` into ``OUT/corpus``, printing the report. The pipeline runs
as far as it goes today; stages that are not available yet are named in the report.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from responsenet.build.pipeline import build
from responsenet.testing.media import make_shots_video, make_video, make_vfr_video

SIZE = (640, 360)


def write_demo_sources(folder: Path) -> Path:
    """Write the demo sources (once; existing files are kept) and their manifest; return it."""
    folder.mkdir(parents=True, exist_ok=True)
    makers = {
        "demo-shots.mp4": lambda p: make_shots_video(
            p, (("testsrc2", 4.0), ("smptebars", 1.0), ("rgbtestsrc", 4.0)), size=SIZE,
            tone_hz=(440.0, 0.0, 660.0)),
        "demo-30fps.mp4": lambda p: make_video(p, duration=5.0, fps=30, size=SIZE),
        "demo-vfr.mp4": lambda p: make_vfr_video(p, duration=5.0, size=SIZE),
    }
    for name, make in makers.items():
        if not (folder / name).exists():
            make(folder / name)
    manifest = folder / "manifest.yaml"
    manifest.write_text("name: responsenet demo sources\nsources:\n" + "".join(
        f"  - {{id: {Path(name).stem}, path: {name}, layout: lr, topic: demo, "
        f"license: generated}}\n" for name in makers))
    return manifest


def _print_clips(console: Console, root: Path, items: dict[str, str]) -> None:
    from responsenet.build.workspace import Workspace

    ws = Workspace(root)
    for source_id in items:
        result = ws.read_result("source", source_id, "segment")
        if result is None:
            continue
        clips = ", ".join(f"{c['clip_id']} ({c['n_frames']} frames)"
                          for c in result["meta"]["clips"])
        dropped = len(result["meta"].get("dropped", []))
        console.print(f"{source_id}: {clips}" + (f"; {dropped} span(s) dropped" if dropped
                                                  else ""), highlight=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo-out"))
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    console = Console(stderr=True)
    manifest = write_demo_sources(args.out / "sources")
    console.print(f"demo manifest: {manifest}", highlight=False)
    report = build(manifest, args.out / "corpus", "all", workers=args.workers, console=console)
    report.render(console)
    _print_clips(console, args.out / "corpus", report.items)
    console.print(f"report: {args.out / 'corpus' / 'reports' / 'build-latest.json'}",
                  highlight=False)
    return 0 if report.succeeded else 1


if __name__ == "__main__":
    sys.exit(main())
