"""Wall time of ``responsenet eval`` generation in one process, a local pool, and on Ray.

    python benchmarks/bench_eval_workers.py --data demo-out/corpus-split --split train \
        --model lstm --run local:1 --run local:2 --run ray:2

For every ``executor:workers`` it generates the split into a fresh run folder (timed: model
loading in each worker, clip loading, generation, writing), then checks that the outputs are the
same bytes as the first run's and prints one Markdown table row. Scoring is left out (it runs in
the driver whatever the executor).
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import tempfile
import time
from pathlib import Path

from responsenet.eval.clips import eval_refs
from responsenet.eval.run import EvalOptions, generate_run


def _digest(run: Path) -> str:
    h = hashlib.sha256()
    for path in sorted((run / "clips").rglob("*")):
        if path.is_file() and path.name != "status.json":
            h.update(path.relative_to(run).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:12]


def _run(spec: str, data: Path, split: str, executor: str, workers: int, out: Path,
         limit: int | None) -> float:
    opts = EvalOptions(model=spec, data=data, out=out, split=split, executor=executor,
                       workers=workers, progress=False, limit=limit)
    started = time.perf_counter()
    generate_run(opts)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--model", default="lstm")
    parser.add_argument("--run", action="append", help="executor:workers, e.g. local:2")
    parser.add_argument("--limit", type=int)
    args = parser.parse_args()
    refs = eval_refs(args.data.resolve(), args.split, args.limit)
    frames = sum(r.n_frames for r in refs)
    print(f"{len(refs)} clips, {frames} frames; {platform.machine()} {platform.processor()}")
    print("| model | executor | workers | wall s | frames/s | outputs |")
    print("|---|---|---|---|---|---|")
    first = None
    with tempfile.TemporaryDirectory() as tmp:
        for i, item in enumerate(args.run or ["local:1"]):
            executor, workers = item.split(":")
            out = Path(tmp) / f"run{i}"
            seconds = _run(args.model, args.data, args.split, executor, int(workers), out,
                           args.limit)
            digest = _digest(out)
            first = first or digest
            same = "same as first" if digest == first else f"DIFFERENT ({digest})"
            print(f"| {args.model} | {executor} | {workers} | {seconds:.2f} | "
                  f"{frames / seconds:.0f} | {same} |")


if __name__ == "__main__":
    main()
