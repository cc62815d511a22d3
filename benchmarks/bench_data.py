"""DataLoader throughput of responsenet.data in windows/s; prints Markdown table rows.

A generated corpus (``make_tiny_corpus``: random features, Chrono-Text streams) of ``--clips``
clips x ``--frames`` frames, with real 16 kHz WAV files written over its placeholder media so
that audio windows can be read. For each configuration the loader runs ``--epochs`` epochs of
``window_frames=256`` windows (stride 256, last short window kept) in batches of 64:

- first batch s: from the loader's creation (worker start included) to the first batch.
- cold: windows/s over the rest of the first epoch; every clip is decoded from Parquet.
- warm: windows/s over the later epochs (``persistent_workers``); both datasets then serve
  clips from each worker's LRU (``cache_clips`` holds the whole corpus), except clips a stream
  worker meets for the first time (clips are dealt to workers anew each epoch).
- CPU ms/window: CPU time of the main process and its workers over all epochs, per window; it
  does not depend on other load on the machine, the windows/s columns do.

Command: .venv/bin/python benchmarks/bench_data.py --clips 160 --frames 1500
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np
import torch

from responsenet.data import ResponseNetDataset, ResponseNetStream, collate
from responsenet.data.index import scan_clips
from responsenet.testing.corpus import make_tiny_corpus

MODES = {"face+chrono": ("face", "chrono"), "face+chrono+audio": ("face", "chrono", "audio")}


def write_real_wavs(root: Path) -> None:
    """Replace each track's placeholder WAV with 16-bit noise of the clip's length at 16 kHz."""
    rng = np.random.default_rng(0)
    for ref in scan_clips(root):
        samples = ref.n_frames * 640
        for role in ("speaker", "listener"):
            pcm = rng.integers(-3000, 3000, samples, dtype=np.int16)
            with wave.open(str(root / "media" / ref.clip_id / f"{role}.wav"), "wb") as wav:
                wav.setnchannels(1)
                wav.setsampwidth(2)
                wav.setframerate(16000)
                wav.writeframes(pcm.tobytes())


def run(root: Path, kind: str, modalities: tuple[str, ...], workers: int, epochs: int,
        n_clips: int) -> dict:
    if kind == "map":
        dataset = ResponseNetDataset(root, None, 256, modalities=modalities,
                                     cache_clips=n_clips)
        loader_args = {"shuffle": True}
    else:
        dataset = ResponseNetStream(root, None, 256, modalities=modalities, shuffle_buffer=1000,
                                    cache_clips=n_clips)
        loader_args = {}
    cpu_start, start = _cpu_s(), time.perf_counter()
    loader = torch.utils.data.DataLoader(dataset, batch_size=64, num_workers=workers,
                                         collate_fn=collate, persistent_workers=workers > 0,
                                         generator=torch.Generator().manual_seed(0),
                                         **loader_args)
    marks, counts = [], []
    for _ in range(epochs):
        count = 0
        for batch in loader:
            if not marks:
                marks.append(time.perf_counter())  # the first batch: workers are up
                first_batch = len(batch["n_frames"])
            count += len(batch["n_frames"])
        marks.append(time.perf_counter())
        counts.append(count)
    del loader  # stops persistent workers, so their CPU time is counted below
    warm_s = marks[-1] - marks[1]
    return {"windows": counts[0], "first_batch_s": marks[0] - start,
            "cpu_ms": 1000 * (_cpu_s() - cpu_start) / sum(counts),
            "cold": (counts[0] - first_batch) / (marks[1] - marks[0]),
            "warm": sum(counts[1:]) / warm_s if warm_s > 0 else float("nan")}


def _cpu_s() -> float:
    """CPU seconds of this process and its finished children (DataLoader workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=160)
    parser.add_argument("--frames", type=int, default=1500)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = make_tiny_corpus(Path(tmp) / "corpus", n_clips=args.clips, n_frames=args.frames)
        write_real_wavs(root)
        print(f"corpus: {args.clips} clips x {args.frames} frames, window 256, batch 64",
              file=sys.stderr)
        print("| dataset | modalities | workers | windows/epoch | first batch s "
              "| cold windows/s | warm windows/s | CPU ms/window |")
        print("|---|---|---|---|---|---|---|---|")
        for kind in ("map", "stream"):
            for mode, modalities in MODES.items():
                for workers in args.workers:
                    r = run(root, kind, modalities, workers, args.epochs, args.clips)
                    print(f"| {kind} | {mode} | {workers} | {r['windows']} | "
                          f"{r['first_batch_s']:.2f} | {r['cold']:.0f} | {r['warm']:.0f} | "
                          f"{r['cpu_ms']:.2f} |",
                          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
