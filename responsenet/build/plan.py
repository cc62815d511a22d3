"""Which stages a build runs: parse ``--stage`` and ``--force`` against the stage registry."""

from __future__ import annotations

from responsenet.build.stages import STAGE_ORDER, available_stages, stages
from responsenet.errors import UsageError


def parse_stages(spec: str) -> tuple[list[str], list[str]]:
    """Turn ``"all"`` or ``"download,segment"`` into stage names in pipeline order.

    Returns:
        (names to run, names of planned stages left out of ``all`` because they are not
        available yet).

    Raises:
        UsageError: an unknown stage (with did-you-mean), or one that is not available yet.
    """
    if spec.strip() == "all":
        missing = [name for name in STAGE_ORDER if stages.is_planned(name)]
        return available_stages(), missing
    names = [part.strip() for part in spec.split(",") if part.strip()]
    if not names:
        raise UsageError("--stage needs 'all' or a comma list such as 'download,segment'")
    for name in names:
        if name not in stages:
            raise UsageError(stages.unknown_message(name))
    return [name for name in STAGE_ORDER if name in names], []


def dependents(name: str) -> set[str]:
    """``name`` and every available stage that needs its output, directly or not."""
    out = {name}
    for candidate in available_stages():
        if set(stages.get(candidate).requires) & out:
            out.add(candidate)
    return out


def parse_force(forced: list[str], run: list[str]) -> set[str]:
    """Stages to redo regardless of fingerprints: each ``--force`` stage and its dependents."""
    out: set[str] = set()
    for name in forced:
        if name not in run:
            raise UsageError(f"--force {name}: that stage is not part of this run "
                             f"(--stage {','.join(run)}); add it to --stage")
        out |= dependents(name)
    return out & set(run)
