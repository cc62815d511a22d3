"""End-to-end speed and memory of ``responsenet build`` (every stage after download).

Run: ``.venv/bin/python benchmarks/bench_e2e.py [--n 4] [--duration 60] [--size 1280x720]
[--workers 1 --workers 2] [--config pipelines/cpu-small.yaml]``.

Makes ``n`` synthetic conversations with ``responsenet synth``, runs the download stage once
(untimed: a local copy), then times ``build --stage segment,...,shard`` as a subprocess per worker
count, sampling the resident memory of the build's process tree from /proc every 0.2 s. Prints
per-stage wall seconds (from the build report), the end-to-end real-time factor (seconds of
conversation per wall second) and peak RSS (largest single process, and the whole tree).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

STAGES = ["segment", "crop", "face", "separate", "transcribe", "chrono", "shard"]
CLI = [sys.executable, "-m", "responsenet"]


def tree_rss(pid: int) -> tuple[int, int]:
    """(largest process RSS, total RSS) in bytes over ``pid`` and its descendants."""
    pids, seen, sizes = [pid], set(), []
    while pids:
        p = pids.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            status = Path(f"/proc/{p}/status").read_text()
            sizes += [int(line.split()[1]) * 1024 for line in status.splitlines()
                      if line.startswith("VmRSS:")]
            for task in Path(f"/proc/{p}/task").iterdir():
                pids += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return (max(sizes), sum(sizes)) if sizes else (0, 0)


def run_sampled(args: list[str]) -> tuple[float, int, int]:
    """Run ``args``; return (wall seconds, peak single-process RSS, peak tree RSS)."""
    peak = [0, 0]
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def sample() -> None:
        while proc.poll() is None:
            one, total = tree_rss(proc.pid)
            peak[0], peak[1] = max(peak[0], one), max(peak[1], total)
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = proc.communicate()
    wall = time.perf_counter() - start
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}): {err.decode()[-2000:]}")
    return wall, peak[0], peak[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--workers", type=int, action="append")
    parser.add_argument("--config", default="pipelines/cpu-small.yaml")
    parser.add_argument("--keep", type=Path, help="keep the work folder here")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    synth = work / "synth"
    if not (synth / "manifest.yaml").is_file():
        subprocess.run([*CLI, "synth", "--out", str(synth), "--n", str(args.n), "--duration",
                        str(args.duration), "--size", args.size, "--seed", "7"], check=True,
                       stdout=subprocess.DEVNULL)
    seconds = args.duration * args.n
    print(f"# {platform.node()}, {len(os.sched_getaffinity(0))} cores, {args.n} x "
          f"{args.duration:g} s at {args.size}, config {args.config}")
    print("| workers | " + " | ".join(f"{s} s" for s in STAGES)
          + " | total s | x real time | peak RSS / process | peak RSS / tree |")
    print("|---|" + "---|" * (len(STAGES) + 4))
    for workers in args.workers or [1, 2]:
        out = work / f"out-{workers}"
        shutil.rmtree(out, ignore_errors=True)
        base = [*CLI, "build", "--manifest", str(synth / "manifest.yaml"), "--out", str(out),
                "--config", args.config]
        subprocess.run([*base, "--stage", "download"], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        wall, one, total = run_sampled([*base, "--stage", ",".join(STAGES), "--workers",
                                        str(workers)])
        report = json.loads((out / "reports" / "build-latest.json").read_text())
        per_stage = [report["stages"].get(s, {}).get("seconds", 0.0) for s in STAGES]
        print(f"| {workers} | " + " | ".join(f"{s:.1f}" for s in per_stage)
              + f" | {wall:.1f} | {seconds / wall:.2f} | {one / 2**30:.2f} GB | "
              f"{total / 2**30:.2f} GB |")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
