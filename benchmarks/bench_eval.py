"""Harness overhead and model throughput of the streaming benchmark.

    python benchmarks/bench_eval.py --data demo-out/corpus-split --split train \
        --model silent --model mirror --batch-clips 1 --batch-clips 8 --device cpu

For every (model, batch size) it streams the split through the harness (online, the model's own
chunk size) and prints one Markdown table row from the harness's timing summary: harness overhead
per step, model step latency p50/p95, real-time factor and frames/s. Clips are loaded before
timing starts. ``--repeat R`` streams the clips R times (more steps for stable percentiles).
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

from responsenet.eval.clips import EvalClipReader, eval_refs
from responsenet.eval.harness import generate
from responsenet.eval.protocol import load_model
from responsenet.eval.timing import summarize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--model", action="append", required=True)
    parser.add_argument("--batch-clips", type=int, action="append")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--limit", type=int)
    args = parser.parse_args()
    reader = EvalClipReader(args.data)
    clips = [reader.load(r) for r in eval_refs(args.data, args.split, args.limit)] * args.repeat
    frames = sum(c.n_frames for c in clips)
    print(f"{len(clips)} clips, {frames} frames; {platform.machine()} {platform.processor()}")
    print("| model | device | batch | steps | overhead mean ms | overhead p95 ms | "
          "step p50 ms | step p95 ms | RTF | frames/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for spec in args.model:
        model = load_model(spec, defaults={"corpus": args.data.resolve(), "seed": 0,
                                           "device": args.device})
        for batch in args.batch_clips or [1]:
            runs = list(generate(model, clips, batch_clips=batch))
            failed = [r.error for r in runs if not r.ok]
            if failed:
                raise SystemExit(f"{spec}: {len(failed)} clips failed, first: {failed[0]}")
            t = summarize(runs, int(model.chunk_frames), batch)
            steps = sum(len(r.overhead_seconds) for r in runs)
            print(f"| {spec} | {args.device} | {batch} | {steps} | {t['overhead_mean_ms']:.4f} | "
                  f"{t['overhead_p95_ms']:.4f} | {t['step_p50_ms']:.4f} | "
                  f"{t['step_p95_ms']:.4f} | {t['real_time_factor']:.5f} | "
                  f"{t['frames_per_second']:.0f} |")


if __name__ == "__main__":
    main()
