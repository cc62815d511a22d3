"""The benchmark's commands: ``eval``, ``score`` and ``train-baseline`` (registered on the app)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from responsenet.cli import _usage_exit, app, err
from responsenet.errors import UsageError


def _assets(values: list[str] | None) -> dict[str, Path]:
    out = {}
    for item in values or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"--asset expects NAME=PATH, got {item!r}")
        out[name] = Path(path)
    return out


def _list(text: str | None) -> list[str] | None:
    return [p.strip() for p in text.split(",") if p.strip()] if text else None


def _print_table(run: Path) -> None:
    print((run / "results.md").read_text())


@app.command(name="eval")
def eval_(
    model: Annotated[str | None, typer.Option(
        help="pkg.module:Class, or a baseline name (see --list-models).")] = None,
    data: Annotated[Path | None, typer.Option(help="A built corpus folder.")] = None,
    out: Annotated[Path | None, typer.Option(
        help="Run folder (per-clip outputs, results.json/.md, per_clip.csv); resumes.")] = None,
    split: Annotated[str, typer.Option(help="Split to evaluate.")] = "test",
    model_args: Annotated[str | None, typer.Option(
        help="k=v,... passed to the model's from_args or constructor.")] = None,
    metrics: Annotated[str | None, typer.Option(help="Comma list of metrics.")] = None,
    suite: Annotated[str | None, typer.Option(
        help="Metric suite: table2 (default), text, offline, l2l, react, all.")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N clips (by id).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for the model and the metrics.")] = 0,
    offline: Annotated[bool, typer.Option(
        help="Hand over the whole speaker stream at once (reported as offline).")] = False,
    batch_clips: Annotated[int, typer.Option(
        help="Clips run in lock-step through step_batch.")] = 1,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    strict: Annotated[bool, typer.Option(help="A skipped metric is an error.")] = False,
    compare: Annotated[str | None, typer.Option(
        help="Put published rows beside this run: a bundled table name or a JSON file.")]
    = None,
    asset: Annotated[list[str] | None, typer.Option(
        help="NAME=PATH of a model asset for a metric (repeatable).")] = None,
    metric_args: Annotated[str | None, typer.Option(
        help="Metric hyper-parameters: metric.key=value,... (e.g. fvd.num_videos=0).")] = None,
    force: Annotated[bool, typer.Option(help="Replace another run in --out.")] = False,
    executor: Annotated[str, typer.Option(
        help="Where generation runs: local (this process, or a pool with --workers N) or ray "
        "(pip install 'responsenet\\[ray]'). Same outputs, same run key.")] = "local",
    workers: Annotated[int, typer.Option(
        help="Worker processes, each generating one group of clips with its own copy of the "
        "model (local), or the CPUs of the local Ray and the number of groups (ray).")] = 1,
    ray_address: Annotated[str | None, typer.Option(
        help="Ray cluster to join (--executor ray): 'auto', HOST:6379 or ray://HOST:10001; "
        "default: start a local Ray. Every node must see --data and --out at the same path.")]
    = None,
    list_models: Annotated[bool, typer.Option(help="List the baselines and exit.")] = False,
    list_metrics: Annotated[bool, typer.Option(help="List metrics and suites and exit.")]
    = False,
) -> None:
    """Stream a split's clips into a model plugin, causally and timed, and score it."""
    from responsenet.eval.protocol import parse_metric_args, parse_model_args
    from responsenet.eval.run import EvalOptions, evaluate
    from responsenet.schema import ShardFormatError

    if list_models or list_metrics:
        _listing(list_models)
        return
    try:
        if model is None or data is None or out is None:
            raise UsageError("eval needs --model, --data and --out (see --help)")
        opts = EvalOptions(model=model, data=data, out=out, split=split,
                           model_args=parse_model_args(model_args), metrics=_list(metrics),
                           suite=suite, limit=limit, seed=seed, offline=offline,
                           batch_clips=batch_clips, device=device, strict=strict,
                           compare=compare, asset_paths=_assets(asset),
                           metric_params=parse_metric_args(metric_args), force=force,
                           executor=executor, workers=workers, ray_address=ray_address)
        results = evaluate(opts)
    except (UsageError, ShardFormatError) as e:
        raise _usage_exit(e) from e
    _print_table(out)
    failed = len(results["failures"])
    if failed:
        err.print(f"[yellow]{failed} clip(s) failed[/yellow]; see {out / 'per_clip.csv'}",
                  highlight=False)
        raise typer.Exit(1)


def _listing(models: bool) -> None:
    from responsenet.eval.baselines import BASELINES
    from responsenet.eval.metrics import METRICS, SUITES

    if models:
        for name in BASELINES.names():
            print(name)
        return
    for info in METRICS.values():
        tag = "" if info.paper else " [offline variant]"
        need = ", ".join(sorted(info.needs))
        assets = f"; weights: {', '.join(info.assets)}" if info.assets else ""
        print(f"{info.name:18} {info.direction:7} needs {need}{assets}{tag}\n"
              f"{'':18} {info.description}")
    for name, members in SUITES.items():
        print(f"suite {name}: {', '.join(members)}")


@app.command()
def score(
    run: Annotated[Path, typer.Argument(help="A run folder written by `responsenet eval`.")],
    metrics: Annotated[str | None, typer.Option(help="Comma list of metrics.")] = None,
    suite: Annotated[str | None, typer.Option(help="Metric suite (default table2).")] = None,
    strict: Annotated[bool, typer.Option(help="A skipped metric is an error.")] = False,
    compare: Annotated[str | None, typer.Option(help="Published rows to put beside.")] = None,
    asset: Annotated[list[str] | None, typer.Option(help="NAME=PATH (repeatable).")] = None,
    device: Annotated[str | None, typer.Option(help="cpu or cuda (default: the run's).")]
    = None,
    metric_args: Annotated[str | None, typer.Option(
        help="Metric hyper-parameters: metric.key=value,...")] = None,
) -> None:
    """Recompute metrics for an evaluation run without regenerating."""
    from responsenet.eval.metrics import metric_names
    from responsenet.eval.protocol import parse_metric_args
    from responsenet.eval.scoring import score_run
    from responsenet.schema import ShardFormatError

    try:
        score_run(run, metric_names(_list(metrics), suite), strict=strict,
                  asset_paths=_assets(asset), compare=compare, device=device,
                  params=parse_metric_args(metric_args))
    except (UsageError, ShardFormatError) as e:
        raise _usage_exit(e) from e
    _print_table(run)


@app.command(name="train-baseline")
def train_baseline(
    name: Annotated[str, typer.Argument(help="A trainable baseline: lstm.")],
    data: Annotated[Path, typer.Option(help="A built, split corpus (trains on its train split).")],
    out: Annotated[Path | None, typer.Option(
        help="Checkpoint path (default {data}/baselines/{name}.pt, where eval looks).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Passes over the train windows (30).")]
    = None,
    hidden: Annotated[int | None, typer.Option(help="LSTM hidden size (128).")] = None,
    layers: Annotated[int | None, typer.Option(help="LSTM layers (1).")] = None,
    window_frames: Annotated[int | None, typer.Option(help="Training window frames (250).")]
    = None,
    batch_size: Annotated[int | None, typer.Option(help="Windows per batch (16).")] = None,
    lr: Annotated[float | None, typer.Option(help="Adam learning rate (3e-3).")] = None,
    audio_bands: Annotated[int | None, typer.Option(
        help="Log band energies of the speaker audio per frame (16; 0 turns audio off).")]
    = None,
    seed: Annotated[int, typer.Option(help="Seed (same seed, same checkpoint on CPU).")] = 0,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto.")] = "cpu",
    quiet: Annotated[bool, typer.Option(help="No progress output.")] = False,
) -> None:
    """Train a baseline listener (the paper's LSTM) on a corpus's train split."""
    from responsenet.eval.baselines import train_baseline as train
    from responsenet.schema import ShardFormatError

    opts = {"epochs": epochs, "hidden": hidden, "layers": layers, "window_frames": window_frames,
            "batch_size": batch_size, "lr": lr, "audio_bands": audio_bands}
    try:
        result = train(name, data, out, seed=seed, device=device, progress=not quiet,
                       **{k: v for k, v in opts.items() if v is not None})
    except (UsageError, ShardFormatError) as e:
        raise _usage_exit(e) from e
    err.print(f"trained {name} on {result.n_clips} clips ({result.n_windows} windows) in "
              f"{result.seconds:.1f} s: loss {result.losses[0]:.3f} -> {result.losses[-1]:.3f}; "
              f"wrote {result.path}", highlight=False)
