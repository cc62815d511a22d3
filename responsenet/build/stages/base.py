"""The Stage abstraction: inputs -> outputs for one item, plus a version and a config model.

A stage never schedules, caches or retries; the runner does. A stage reads its inputs from
``ctx.inputs`` (the finished results of the stages it requires), writes files only under
``ctx.out_dir`` (a private temporary folder the runner renames into place when the stage returns),
and returns a JSON-able dict of metadata. It signals a per-item failure by raising
:class:`responsenet.errors.StageFailure` with a reason code.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from responsenet.manifest import SourceEntry


class StageConfig(BaseModel):
    """Base class for stage configs: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


@dataclass(frozen=True)
class StageResult:
    """A finished stage output for one item, as recorded by the runner.

    Attributes:
        dir: folder holding the stage's files.
        meta: the dict the stage returned.
        fingerprint: hex digest identifying the stage version, config and inputs that made it.
    """

    dir: Path
    meta: dict[str, Any]
    fingerprint: str


@dataclass
class StageContext:
    """Everything a stage sees while it runs for one item.

    Attributes:
        item_id: source id (unit ``source``) or clip id (unit ``clip``).
        source: the manifest entry the item comes from.
        config: the stage's resolved config.
        out_dir: empty folder to write outputs into (renamed into place on success).
        inputs: results of the required stages, by stage name.
        root: the build output folder (``--out``), for build-wide files such as archives.
    """

    item_id: str
    source: SourceEntry
    config: Any
    out_dir: Path
    inputs: dict[str, StageResult] = field(default_factory=dict)
    root: Path | None = None
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("responsenet.stage"))


class Stage:
    """Base class of pipeline stages (subclass it, or duck-type the same attributes).

    Class attributes:
        name: stage name as used on the CLI (``download``).
        version: bump when outputs change for the same inputs; part of the fingerprint.
        unit: ``source`` (one manifest row) or ``clip`` (one clip made by ``segment``).
        requires: names of the stages whose outputs this stage reads.
        Config: the stage's pydantic config model.
        resources: what one task of the stage needs from a scheduler such as Ray: ``CPU``
            (cores), ``GPU`` (devices), ``memory`` (bytes). The Ray executor adds one GPU when
            the config says ``device: cuda`` and raises CPU to a config's ``threads``.
    """

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    unit: ClassVar[Literal["source", "clip"]] = "source"
    requires: ClassVar[tuple[str, ...]] = ()
    Config: ClassVar[type[StageConfig]] = StageConfig
    resources: ClassVar[dict[str, float]] = {"CPU": 1}

    def input_fingerprint(self, source: SourceEntry, config: Any) -> dict[str, Any]:
        """Extra facts about the item's inputs that should trigger a redo when they change."""
        return {}

    def run(self, ctx: StageContext) -> dict[str, Any]:
        raise NotImplementedError
