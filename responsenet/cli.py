"""The ``responsenet`` command line: a thin adapter from arguments to library calls.

Exit codes: 0 success, 1 the work failed (see the report), 2 a usage error (bad arguments,
config or manifest; or a capability that is not available yet) or a write error of the machine
(disk full, read-only file system, folder not writable) that stopped the command.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from responsenet import __version__
from responsenet.errors import UsageError

app = typer.Typer(name="responsenet", no_args_is_help=True, rich_markup_mode="rich",
                  add_completion=False,
                  help="Build and benchmark dyadic conversation corpora (ResponseNet style).")
err = Console(stderr=True)


def _usage_exit(error: Exception) -> typer.Exit:
    # escaped: messages hold brackets that are not markup, e.g. pip install 'responsenet[ray]'
    err.print(f"[red]error[/red]: {escape(str(error))}", highlight=False)
    return typer.Exit(2)


def _failure_exit(message: str, error: BaseException) -> typer.Exit:
    """Print ``message`` and the error's notes (what state it left, what to do); exit 1."""
    notes = " ".join(getattr(error, "__notes__", ()))
    err.print(f"[red]error[/red]: {escape(message)}" + (f" {escape(notes)}" if notes else ""),
              highlight=False)
    return typer.Exit(1)


def _version(value: bool) -> None:
    if value:
        print(f"responsenet {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
          verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
          ) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


@app.command()
def build(
    manifest: Annotated[Path, typer.Option(help="Manifest of sources (.yaml, .jsonl or .csv).")],
    out: Annotated[Path, typer.Option(help="Build folder; re-running into it resumes.")],
    stage: Annotated[str, typer.Option(help="'all' or a comma list, e.g. download,segment.")]
    = "all",
    config: Annotated[Path | None, typer.Option(help="Pipeline config YAML.")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Override a config key: stage.key=value (repeatable).")] = None,
    workers: Annotated[int, typer.Option(
        help="Worker processes (local), or the CPUs of the local Ray (ray).")] = 1,
    executor: Annotated[str, typer.Option(
        help="Executor: local (process pool) or ray (pip install 'responsenet\\[ray]').")]
    = "local",
    ray_address: Annotated[str | None, typer.Option(
        help="Ray cluster to join: 'auto' or ray://HOST:10001; default: start a local Ray. "
        "Every node must see --out at the same path.")] = None,
    force: Annotated[list[str] | None, typer.Option(
        help="Redo this stage and every stage after it that depends on it (repeatable).")] = None,
    retry_failed: Annotated[bool, typer.Option(
        help="Retry failures remembered from earlier runs.")] = False,
    strict: Annotated[bool, typer.Option(help="Exit 1 unless every source succeeded.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Run pipeline stages over a manifest of videos.

    Exit 0 when at least one source went through every requested stage (every source with
    [bold]--strict[/bold]) and the corpus, when shard ran, was assembled; 1 otherwise; 2 for
    usage errors and for a write error that stopped the build (disk full, read-only, not
    writable: its report is written when the disk allows).
    """
    from responsenet.build.pipeline import build as run_build

    try:
        report = run_build(manifest, out, stage, config_path=config, overrides=set_ or [],
                           workers=workers, executor=executor, ray_address=ray_address,
                           force=force or [],
                           retry_failed=retry_failed, progress=not quiet, console=err)
    except UsageError as e:
        raise _usage_exit(e) from e
    report.render(err)
    raise typer.Exit(report.exit_code(strict))


@app.command()
def validate(root: Annotated[Path, typer.Argument(help="A built corpus folder.")]) -> None:
    """Check a built corpus: schema, array lengths, media checksums, disjoint splits."""
    from responsenet.validate import validate_root

    problems = validate_root(root)
    for problem in problems:
        print(problem)
    if problems:
        err.print(f"[red]{len(problems)} problem(s)[/red] in {root}", highlight=False)
        raise typer.Exit(1)
    err.print(f"[green]valid[/green]: {root}", highlight=False)


def _parse_size(text: str) -> tuple[int, int]:
    width, sep, height = text.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit():
        raise UsageError(f"--size expects WxH such as 640x360, got {text!r}")
    return int(width), int(height)


@app.command()
def synth(
    out: Annotated[Path, typer.Option(help="Folder for the conversations and manifest.yaml.")],
    n: Annotated[int, typer.Option("--n", help="Number of conversations.")] = 4,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same truth.")]
    = 0,
    layout: Annotated[str, typer.Option(help="lr, tb or pip.")] = "lr",
    duration: Annotated[float, typer.Option(help="Seconds per conversation (>= 8).")] = 12.0,
    size: Annotated[str, typer.Option(help="Canvas size WxH in pixels.")] = "640x360",
    faces: Annotated[list[str] | None, typer.Option(
        "--faces", help="Face photos (repeatable); 'astronaut' is built in.")] = None,
    cut: Annotated[bool, typer.Option(help="Add one camera cut mid-way.")] = False,
    snr: Annotated[float | None, typer.Option(
        help="Add white noise at this SNR in dB.")] = None,
    interruption: Annotated[bool, typer.Option(help="Include an interruption.")] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Write synthetic dyadic conversations with exact ground truth, and a manifest for build."""
    from responsenet.synth.generate import SynthSpec, synthesize

    try:
        spec = SynthSpec(n=n, seed=seed, layout=layout, duration=duration,
                         size=_parse_size(size), faces=tuple(faces or ("astronaut",)), cut=cut,
                         snr_db=snr, interruption=interruption)
        manifest = synthesize(out, spec, progress=not quiet)
    except UsageError as e:
        raise _usage_exit(e) from e
    err.print(f"wrote {n} conversation(s); manifest: {manifest}", highlight=False)


@app.command()
def split(
    root: Annotated[Path, typer.Argument(help="A built corpus folder; rewritten in place.")],
    ratios: Annotated[str, typer.Option(help="train:val:test weights of hours.")] = "6:2:2",
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same split.")]
    = 0,
) -> None:
    """Assign clips to participant-disjoint, topic-stratified train/val/test splits.

    Rewrites shards/{split}/, writes splits/{split}.txt and splits/spec.json and updates the
    checksums in dataset.json. Exit 0 also when the ratios cannot be met (it says so).
    """
    from responsenet.schema import ShardFormatError
    from responsenet.split import split_corpus

    try:
        result = split_corpus(root, ratios=ratios, seed=seed)
    except (UsageError, ShardFormatError) as e:  # OutputWriteError (disk full, ...) too: exit 2
        raise _usage_exit(e) from e
    except OSError as e:
        raise _failure_exit(f"split of {root} failed: {e}.", e) from e
    for note in result.recovered:
        err.print(f"[yellow]note[/yellow]: {note}", highlight=False)
    for name, clip_ids in result.clips.items():
        err.print(f"{name}: {len(clip_ids)} clips, {result.achieved_hours[name]:.2f} of hours "
                  f"(asked {result.ratios[name]:.2f}), {result.achieved_clips[name]:.2f} of "
                  "clips", highlight=False)
    for note in result.notes:
        err.print(f"[yellow]note[/yellow]: {note}", highlight=False)
    err.print(f"wrote shards/, splits/*.txt and splits/spec.json in {root} "
              f"({len(result.units)} participant units, seed {seed})", highlight=False)


@app.command()
def stats(
    root: Annotated[Path, typer.Argument(help="A built corpus folder.")],
    out: Annotated[Path, typer.Option(help="Folder for README.md, PNG figures, stats.json.")],
) -> None:
    """Write a data card (Markdown + PNG figures) for a built corpus."""
    from responsenet.schema import ShardFormatError
    from responsenet.stats import write_data_card

    try:
        card = write_data_card(root, out)
    except (UsageError, ShardFormatError) as e:
        raise _usage_exit(e) from e
    err.print(f"wrote the data card {card}", highlight=False)


@app.command()
def export(
    root: Annotated[Path, typer.Argument(help="A built corpus folder.")],
    out: Annotated[Path, typer.Option(help="Destination folder (new or empty).")],
    layout: Annotated[str, typer.Option(help="Folder layout: responsenet.")] = "responsenet",
    media: Annotated[str, typer.Option(help="copy or hardlink the media files.")] = "copy",
    name: Annotated[str | None, typer.Option(
        help="Dataset name in croissant.json (default: the corpus folder name).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty --out.")] = False,
) -> None:
    """Export a corpus in the public ResponseNet folder layout, with Croissant metadata."""
    from responsenet.export import export_corpus
    from responsenet.schema import ShardFormatError

    try:
        report = export_corpus(root, out, layout=layout, media=media, name=name,
                               overwrite=overwrite)
    except (UsageError, ShardFormatError) as e:
        raise _usage_exit(e) from e
    for problem in report.missing_media:
        err.print(f"[yellow]skipped[/yellow]: {problem}", highlight=False)
    counts = ", ".join(f"{n} {kind}" for kind, n in report.files.items())
    err.print(f"exported {report.tracks} tracks ({counts}) to {report.out}", highlight=False)


models_app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich",
                         help="List, verify and fetch model weights (see MODELS.md).")
app.add_typer(models_app, name="models")


@models_app.command("list")
def models_list() -> None:
    """Every model asset: where it was found, or that it is missing."""
    from rich.table import Table

    from responsenet.assets import resolve
    from responsenet.assets_catalog import ASSETS
    from responsenet.errors import AssetMissing

    table = Table()
    for col in ("asset", "used by", "license", "found at"):
        table.add_column(col, overflow="fold")
    for name in ASSETS.names():
        asset = ASSETS.get(name)
        try:
            where = str(resolve(name))
        except AssetMissing as e:
            where = f"[red]{e.reason}[/red]"
        table.add_row(name, asset.used_by, asset.license, where)
    Console().print(table)


@models_app.command("verify")
def models_verify(names: Annotated[list[str] | None, typer.Argument(
        help="Assets to check (default: every asset that is found).")] = None) -> None:
    """Check the sha256 of assets found on this machine; exit 1 on a mismatch or a missing one."""
    from responsenet.assets import resolve
    from responsenet.assets_catalog import ASSETS
    from responsenet.errors import AssetMissing

    failed = False
    for name in names or ASSETS.names():
        try:
            print(f"ok      {name}: {resolve(name)}")
        except UsageError as e:
            raise _usage_exit(e) from e
        except AssetMissing as e:
            if names or e.reason != "weights_missing":
                failed = True
                print(f"{e.reason} {name}: {e.message}")
    raise typer.Exit(1 if failed else 0)


@models_app.command("fetch")
def models_fetch(name: Annotated[str, typer.Argument(help="Asset name.")]) -> None:
    """Download an asset from its official address into the user cache (needs network)."""
    from responsenet.assets import resolve
    from responsenet.errors import AssetMissing

    try:
        print(resolve(name, allow_download=True))
    except UsageError as e:
        raise _usage_exit(e) from e
    except AssetMissing as e:
        err.print(f"[red]{e.reason}[/red]: {e.message}", highlight=False)
        raise typer.Exit(1) from e


def main() -> None:
    app()


# the benchmark's commands live in their own module and register themselves on ``app``
from responsenet import cli_eval  # noqa: E402, F401
