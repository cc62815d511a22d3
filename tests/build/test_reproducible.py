"""The same input gives the same output bytes whatever the machine's CPU count.

x264 picks its thread count from the CPUs it may run on, and its output depends on that count:
a Ray worker or a CI runner that sees other CPUs than a laptop would encode other bytes. The
encodes therefore use fixed thread counts; these tests run each encoding step twice, once
pinned to one CPU and once on all of them, and compare bytes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

if not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2:
    pytest.skip("needs Linux and at least two CPUs to change the CPU count",
                allow_module_level=True)
for _tool in ("ffmpeg", "ffprobe"):
    if shutil.which(_tool) is None:
        pytest.skip(f"{_tool} not on PATH (make system-deps)", allow_module_level=True)


@contextmanager
def cpus(n: int) -> Iterator[None]:
    """Run the block (and the ffmpeg children it starts) on the first ``n`` allowed CPUs."""
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, sorted(allowed)[:n])
    try:
        yield
    finally:
        os.sched_setaffinity(0, allowed)


def digests(folder: Path, pattern: str) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob(pattern))}


def on_one_and_all_cpus(tmp_path: Path, make: Callable[[Path], Path],
                        pattern: str) -> tuple[dict[str, str], dict[str, str]]:
    """``make(out)`` writes into ``out`` and returns the folder to hash; run it both ways."""
    with cpus(1):
        one = digests(make(tmp_path / "one"), pattern)
    many = digests(make(tmp_path / "many"), pattern)
    return one, many


def test_segment_clips_do_not_depend_on_the_cpu_count(tmp_path):
    from responsenet.build.pipeline import build
    from responsenet.testing.media import make_video

    make_video(tmp_path / "b.mp4", duration=4.0, size=(320, 180), fps=30)
    (tmp_path / "m.yaml").write_text("- {id: b, path: b.mp4}\n")

    def segment(out: Path) -> Path:
        report = build(tmp_path / "m.yaml", out, "download,segment",
                       overrides=["download.min_duration=1"], workers=1, progress=False)
        assert report.items == {"b": "ok"}
        return out / "work" / "sources" / "b" / "segment"

    one, many = on_one_and_all_cpus(tmp_path, segment, "*.mp4")
    assert len(one) == 1
    assert one == many


def test_synthetic_conversations_do_not_depend_on_the_cpu_count(tmp_path):
    pytest.importorskip("cv2", reason="the synth extra (opencv) renders the faces")
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not on PATH (make system-deps)")
    from responsenet.synth.generate import SynthSpec, synthesize

    def synth(out: Path) -> Path:
        synthesize(out, SynthSpec(n=1, seed=3, duration=8.0, size=(320, 180)), progress=False)
        return out

    one, many = on_one_and_all_cpus(tmp_path, synth, "*.mp4")
    assert len(one) == 1
    assert one == many


def test_face_crops_do_not_depend_on_the_cpu_count(tmp_path):
    pytest.importorskip("cv2", reason="the synth extra (opencv) renders the faces")
    pytest.importorskip("mediapipe", reason="MediaPipe finds the faces to crop")
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not on PATH (make system-deps)")
    from responsenet.build.stages.crop import CropConfig, crop_clip
    from responsenet.synth.generate import SynthSpec, conversation_id, synthesize

    synthesize(tmp_path / "src", SynthSpec(n=1, seed=21, duration=8.0, size=(480, 270)),
               progress=False)
    video = tmp_path / "src" / f"{conversation_id(21, 0)}.mp4"

    def crop(out: Path) -> Path:
        out.mkdir(parents=True)
        crop_clip(video, out, CropConfig(size=128, preset="ultrafast"), fps=25.0,
                  n_frames=200, layout="auto")
        return out

    one, many = on_one_and_all_cpus(tmp_path, crop, "*.mp4")
    assert len(one) == 2
    assert one == many


def test_segment_clips_are_the_same_on_busy_cpus(tmp_path):
    """Eight copies of one source segmented while two busy loops hold the CPUs: the case where
    x264's threaded lookahead gave other bytes from run to run (see media.x264_threads)."""
    from responsenet.build.pipeline import build
    from responsenet.testing.media import make_video

    make_video(tmp_path / "b.mp4", duration=4.0, size=(160, 90), fps=30)
    ids = [f"copy{i}" for i in range(8)]
    (tmp_path / "m.yaml").write_text("".join(f"- {{id: {i}, path: b.mp4}}\n" for i in ids))
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        report = build(tmp_path / "m.yaml", tmp_path / "out", "download,segment",
                       overrides=["download.min_duration=1"], workers=1, progress=False)
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    assert report.items == dict.fromkeys(ids, "ok")
    clips = {i: hashlib.sha256((tmp_path / "out" / "work" / "sources" / i / "segment" /
                                f"{i}_000.mp4").read_bytes()).hexdigest() for i in ids}
    assert len(set(clips.values())) == 1, clips
