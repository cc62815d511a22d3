"""The benchmark: stream a corpus split into a listener model, causally and timed, and score it.

    from responsenet.eval import ResponseModel, ListenerChunk   # write a model plugin
    responsenet eval --model mypkg.models:MyListener --data corpus --out runs/mine

Modules: ``protocol`` (the plugin contract), ``harness`` (the clock: chunks, lock-step batches,
timing), ``clips`` (what a clip holds for the benchmark), ``run`` (``responsenet eval``),
``scoring`` and ``report`` (``responsenet score``, results.json/.md, per_clip.csv), ``metrics``
(pure metric functions and their registry), ``baselines`` (registered reference models).
"""

from responsenet.eval.protocol import (
    FACE_DIM,
    ClipContext,
    ListenerChunk,
    ResponseModel,
    SpeakerChunk,
    check_model,
    check_output,
    load_model,
    parse_model_args,
    samples_for,
)

__all__ = ["FACE_DIM", "ClipContext", "ListenerChunk", "ResponseModel", "SpeakerChunk",
           "check_model", "check_output", "load_model", "parse_model_args", "samples_for"]
