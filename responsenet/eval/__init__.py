"""The benchmark: the plugin contract for listener models (``protocol``).

The streaming harness, metrics and baselines are the rest of issue 7 and are not built yet.
"""

from responsenet.eval.protocol import (
    ClipContext,
    ListenerChunk,
    ResponseModel,
    SpeakerChunk,
    check_model,
    check_output,
    load_model,
    parse_model_args,
)

__all__ = ["ClipContext", "ListenerChunk", "ResponseModel", "SpeakerChunk", "check_model",
           "check_output", "load_model", "parse_model_args"]
