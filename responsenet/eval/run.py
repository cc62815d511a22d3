"""``responsenet eval``: load a model, stream a split through it into a run folder, score it.

Runs are cached: the run key hashes (model spec, model args, data fingerprint, split, seed, mode,
chunking). Clips already generated under the same key are not generated again (resume); another
key in the same folder is refused unless ``force``. Generation runs in this process, or across a
local process pool or Ray (``executor``, ``workers``; see :mod:`responsenet.eval.distribute`),
with the same outputs and the same key.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from responsenet.errors import UsageError
from responsenet.eval.clips import EvalClip, EvalClipReader, eval_refs
from responsenet.eval.harness import generate
from responsenet.eval.metrics import metric_names
from responsenet.eval.protocol import load_model
from responsenet.eval.rundir import read_status, write_clip, write_json
from responsenet.eval.scoring import score_run
from responsenet.hashing import sha256_bytes, sha256_file

log = logging.getLogger(__name__)


@dataclass
class EvalOptions:
    """Everything ``responsenet eval`` takes (CLI flags map one to one)."""

    model: str
    data: Path
    out: Path
    split: str = "test"
    model_args: dict[str, Any] = field(default_factory=dict)
    metrics: list[str] | None = None
    suite: str | None = None
    limit: int | None = None
    seed: int = 0
    offline: bool = False
    batch_clips: int = 1
    device: str = "cpu"
    strict: bool = False
    compare: str | None = None
    asset_paths: dict[str, Path] = field(default_factory=dict)
    metric_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    force: bool = False
    progress: bool = True
    executor: str = "local"
    workers: int = 1
    ray_address: str | None = None

    @property
    def in_process(self) -> bool:
        """True when generation runs in this process (``local`` with one worker)."""
        return self.executor == "local" and self.workers == 1


#: Failure reasons of clips lost with their worker rather than failed by the model
#: (:mod:`responsenet.eval.distribute`): such clips are generated again on the next run.
LOST_REASONS = frozenset({"worker_crashed", "out_of_memory", "interrupted", "usage_error",
                          "internal_error"})


def needs_generation(status: dict[str, Any] | None) -> bool:
    """True for a clip without status.json, or one lost with its worker (:data:`LOST_REASONS`)."""
    return status is None or status.get("reason") in LOST_REASONS


def data_fingerprint(root: Path) -> str:
    """sha256 of dataset.json (it lists the checksum of every shard and media file)."""
    card = root / "dataset.json"
    if not card.is_file():
        raise UsageError(f"{root}: no dataset.json; expected a corpus built by "
                         "`responsenet build`")
    return sha256_file(card)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        import torch
    except ImportError:
        return
    torch.manual_seed(seed)


def evaluate(opts: EvalOptions) -> dict[str, Any]:
    """Generate (or resume) the run in ``opts.out`` and score it; return results.json's dict."""
    names = metric_names(opts.metrics, opts.suite)
    generate_run(opts)
    return score_run(opts.out, names, strict=opts.strict, asset_paths=opts.asset_paths,
                     compare=opts.compare, device=opts.device, params=opts.metric_params)


def generate_run(opts: EvalOptions) -> dict[str, Any]:
    """Generate the clips of the run in ``opts.out`` not generated yet (in this process, a
    local pool or Ray); return run.json's dict. ``evaluate`` without the scoring.

    Raises:
        UsageError: bad options, a model that cannot be loaded, or another run in ``out``.
    """
    if opts.device not in ("cpu", "cuda"):
        raise UsageError(f"--device must be cpu or cuda, got {opts.device!r}")
    if opts.batch_clips < 1:
        raise UsageError(f"--batch-clips must be at least 1, got {opts.batch_clips}")
    from responsenet.build.executors import check_executor

    check_executor(opts.executor, opts.workers, opts.ray_address)
    root = opts.data.resolve()
    refs = eval_refs(root, opts.split, opts.limit)
    seed_everything(opts.seed)
    model = load_model(opts.model, opts.model_args,
                       defaults={"corpus": root, "seed": opts.seed, "device": opts.device})
    meta = _run_meta(opts, root, model)
    _prepare(opts.out, meta, opts.force)
    todo = [r for r in refs if needs_generation(read_status(opts.out, r.clip_id))]
    if todo and opts.in_process:
        _generate(model, todo, root, opts, int(model.chunk_frames))
    elif todo:
        from responsenet.eval.distribute import generate_distributed

        sample_rate = int(model.sample_rate)
        del model  # each worker builds its own; free this copy (and its GPU memory) first
        generate_distributed(todo, root, opts, sample_rate)
    else:
        log.info("all %d clips already generated in %s (run %s)", len(refs), opts.out,
                 meta["key"])
    return meta


def _run_meta(opts: EvalOptions, root: Path, model: Any) -> dict[str, Any]:
    """run.json: what was run, and its key (which leaves out how: batching, device, executor)."""
    meta = {
        "model": {"spec": opts.model, "args": opts.model_args,
                  "outputs": sorted(model.outputs), "class": type(model).__qualname__},
        "data": {"root": str(root), "fingerprint": data_fingerprint(root), "split": opts.split},
        "seed": opts.seed, "mode": "offline" if opts.offline else "online",
        "chunk_frames": int(model.chunk_frames), "batch_clips": opts.batch_clips,
        "device": opts.device, "limit": opts.limit, "executor": opts.executor,
        "workers": opts.workers, "ray_address": opts.ray_address,
    }
    keyed = {k: meta[k] for k in ("model", "data", "seed", "mode", "chunk_frames")}
    meta["key"] = sha256_bytes(json.dumps(keyed, sort_keys=True, default=str).encode())[:16]
    return meta


def _prepare(out: Path, meta: dict[str, Any], force: bool) -> None:
    """Create the run folder, or check that the one there holds the same run."""
    path = out / "run.json"
    if path.is_file():
        old = json.loads(path.read_text())
        if old.get("key") != meta["key"] and not force:
            raise UsageError(f"{out} holds run {old.get('key')} ({old['model']['spec']}, "
                             f"{old['data']['split']}, seed {old['seed']}, {old['mode']}); this "
                             f"run is {meta['key']}: choose another --out or pass --force to "
                             "replace it")
    if force and (out / "clips").exists():
        shutil.rmtree(out / "clips")
    out.mkdir(parents=True, exist_ok=True)
    write_json(path, meta)


def video_loader(model: Any) -> Callable[[EvalClip], np.ndarray] | None:
    """Speaker frames at the model's ``video_size`` (width, height; default 224x224) for models
    that list ``"video"`` in ``inputs``."""
    if "video" not in set(getattr(model, "inputs", ())):
        return None
    width, height = getattr(model, "video_size", (224, 224))
    return lambda clip: clip.speaker_video((int(width), int(height)))


def _generate(model: Any, refs: list, root: Path, opts: EvalOptions, chunk: int) -> None:
    reader = EvalClipReader(root)
    clips = (reader.load(ref) for ref in refs)
    mode = "offline" if opts.offline else f"online, {chunk} frame(s)/step"
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), disable=not opts.progress) as bar:
        task = bar.add_task(f"generate ({mode})", total=len(refs))
        for result in generate(model, clips, offline=opts.offline, batch_clips=opts.batch_clips,
                               load_video=video_loader(model)):
            write_clip(opts.out, result, int(model.sample_rate))
            if not result.ok:
                log.warning("clip %s failed (%s): %s", result.clip_id, result.reason,
                            result.error)
            bar.advance(task)
