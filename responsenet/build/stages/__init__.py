"""The stage registry: every pipeline stage, in pipeline order, declared once."""

from __future__ import annotations

from responsenet.registry import Registry

#: All stages of the pipeline, in the order they run. DESIGN.md numbers ``face`` sixth, but
#: ``separate`` assigns voices to faces from the mouth blendshapes, so ``face`` runs before it.
STAGE_ORDER = ("download", "segment", "crop", "face", "separate", "transcribe", "chrono",
               "refine", "shard")

stages: Registry = Registry("stage")
stages.register("download", "responsenet.build.stages.download:DownloadStage")
stages.register("segment", "responsenet.build.stages.segment:SegmentStage")
stages.register("crop", "responsenet.build.stages.crop:CropStage")
stages.register("transcribe", "responsenet.build.stages.transcribe:TranscribeStage")
stages.register("face", "responsenet.build.stages.face:FaceStage")
stages.register("chrono", "responsenet.build.stages.chrono:ChronoStage")
stages.register("separate", "responsenet.build.stages.separate:SeparateStage")
stages.register("shard", "responsenet.build.stages.shard:ShardStage")
for _name in STAGE_ORDER:
    if _name not in stages:
        stages.plan(_name, "a later release of the pipeline")


def available_stages() -> list[str]:
    """Stage names that can run today, in pipeline order."""
    return [name for name in STAGE_ORDER if name in stages]
