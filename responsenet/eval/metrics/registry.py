"""Declarations of every metric, the named suites, and the loop that computes a selection."""

from __future__ import annotations

import difflib
import logging
import math
import time
from collections.abc import Sequence
from typing import Any

from responsenet.errors import ResponseNetError, UsageError
from responsenet.eval.metrics.base import MetricContext, MetricInfo, MetricSkipped, ScoredClip
from responsenet.registry import import_target

log = logging.getLogger(__name__)

_M = "responsenet.eval.metrics"


def _info(name: str, fn: str, needs: str, direction: str, version: str = "1", **kw: Any
          ) -> MetricInfo:
    return MetricInfo(name, f"{_M}.{fn}", frozenset(needs.split()), direction,  # type: ignore[arg-type]
                      version, **kw)


_DECLARED = (
    _info("meteor", "text:meteor", "text", "higher", assets=("wordnet",),
          description="METEOR (nltk meteor_score, WordNet 3.0, word_tokenize-style tokens), mean over clips"),
    _info("bertscore_f1", "text:bertscore_f1", "text", "higher", assets=("roberta_large",),
          description="BERTScore F1, roberta-large layer 17, no idf, no rescale, mean over clips"),
    _info("bertscore_minilm", "text:bertscore_minilm", "text", "higher",
          assets=("minilm_l6_v2",), paper=False,
          description="BERTScore F1 with all-MiniLM-L6-v2 layer 6 (offline variant)"),
    _info("rouge_l", "text:rouge_l", "text", "higher",
          description="ROUGE-L F (beta 1.2) on whitespace tokens, mean over clips"),
    _info("distinct", "text:distinct", "text", "higher",
          description="Distinct-1 and Distinct-2 over all generated texts (corpus level)"),
    _info("utmosv2", "audio:utmosv2", "audio", "higher", assets=("utmosv2",),
          description="UTMOSv2 predicted MOS of generated speech, 5 folds averaged"),
    _info("dnsmos", "audio:dnsmos", "audio", "higher", assets=("dnsmos",), paper=False,
          description="DNSMOS P.835 SIG/BAK/OVRL of generated speech (offline companion)"),
    _info("lse", "sync:lse", "audio video", "lower", assets=("syncnet",),
          directions=(("c", "higher"), ("c_listener_speaking", "higher")),
          description="LSE-D (lower is better) and LSE-C (higher) with SyncNet, vshift 15"),
    _info("fd", "face:fd", "face", "lower",
          description="Frechet distance of generated vs real listener face features"),
    _info("fvd", "video:fvd", "video", "lower", assets=("i3d_fvd",),
          description="Frechet video distance with the I3D torchscript"),
    _info("l2l", "face:l2l_suite", "face", "lower",
          directions=tuple((k, "closer_to_real") for k in (
              "variance", "variance_pose", "sid", "sid_pose")),
          description="Learning2Listen suite: FD, P-FD, Variance, SID, rPCC, L2"),
    _info("react", "face:react_suite", "face", "lower",
          directions=tuple((k, "higher") for k in ("frcorr", "frdiv", "frvar", "frdvs")),
          description="REACT suite: FRCorr, FRDist, FRDiv, FRVar, FRDvs, FRSyn"),
)
METRICS: dict[str, MetricInfo] = {m.name: m for m in _DECLARED}

#: Named selections for ``--suite``; ``table2`` is OmniResponse Table 2 plus the offline
#: companions, so an offline machine still reports something for every modality.
SUITES: dict[str, tuple[str, ...]] = {
    "table2": ("meteor", "bertscore_f1", "bertscore_minilm", "rouge_l", "distinct", "utmosv2",
               "dnsmos", "lse", "fd", "fvd"),
    "text": ("meteor", "bertscore_f1", "bertscore_minilm", "rouge_l", "distinct"),
    "offline": ("meteor", "bertscore_minilm", "rouge_l", "distinct", "dnsmos", "fd"),
    "l2l": ("l2l",),
    "react": ("react",),
    "all": tuple(METRICS),
}


def metric_names(metrics: Sequence[str] | None = None, suite: str | None = None) -> list[str]:
    """The metric names a ``--metrics``/``--suite`` choice selects (default: suite table2)."""
    if metrics and suite:
        raise UsageError("give --metrics or --suite, not both")
    if suite is not None and suite not in SUITES:
        close = difflib.get_close_matches(suite, SUITES, n=1)
        raise UsageError(f"unknown suite {suite!r}; known: {', '.join(SUITES)}"
                         + (f" (did you mean {close[0]!r}?)" if close else ""))
    names = list(metrics) if metrics else list(SUITES[suite or "table2"])
    for name in names:
        if name not in METRICS:
            close = difflib.get_close_matches(name, METRICS, n=1)
            raise UsageError(f"unknown metric {name!r}; known: {', '.join(METRICS)}"
                             + (f" (did you mean {close[0]!r}?)" if close else ""))
    return names


def _entry(value: Any) -> Any:
    """A float, None for NaN/inf (JSON has neither), or a skip/failure dict as it is."""
    if isinstance(value, dict):
        return value
    value = float(value)
    return value if math.isfinite(value) else None


def result_keys(name: str, value: float | dict[str, Any]) -> dict[str, Any]:
    """results.json entries for one metric's value (dicts fan out to ``{name}_{key}``; a key
    may itself hold ``{"skipped": reason}``)."""
    if isinstance(value, dict) and not ({"skipped", "failed"} & set(value)):
        return {f"{name}_{key}": _entry(v) for key, v in value.items()}
    return {name: _entry(value)}


def compute(names: Sequence[str], clips: Sequence[ScoredClip], ctx: MetricContext,
            outputs: frozenset[str] | None = None, strict: bool = False
            ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Compute ``names`` over ``clips``.

    Args:
        outputs: what the model generates; a metric needing something else is skipped.
        strict: raise UsageError instead of recording a skip.

    Returns:
        ``(values, details)``: results.json metric entries, and per metric its version, seconds
        and (when skipped) the reason.
    """
    values: dict[str, Any] = {}
    details: dict[str, dict[str, Any]] = {}
    for name in names:
        info = METRICS[name]
        started = time.perf_counter()
        try:
            lacking = sorted(info.needs - outputs) if outputs is not None else []
            if lacking:
                raise MetricSkipped(f"the model does not generate {', '.join(lacking)}")
            fn = import_target(info.fn)
            value = fn(clips, ctx)  # type: ignore[operator]
        except MetricSkipped as e:
            if strict:
                raise UsageError(f"metric {name} skipped (--strict): {e.reason}") from e
            log.warning("metric %s skipped: %s", name, e.reason)
            value = e.as_dict()
        except ResponseNetError as e:  # e.g. a generated video that does not decode
            if strict:
                raise UsageError(f"metric {name} failed (--strict): {e}") from e
            log.warning("metric %s failed: %s", name, e)
            value = {"failed": str(e)}
        entries = result_keys(name, value)
        values.update(entries)
        details[name] = {"version": info.version, "paper": info.paper,
                         "seconds": round(time.perf_counter() - started, 3),
                         "directions": {k: info.direction_of(k) for k in entries},
                         **({"notes": ctx.notes[name]} if name in ctx.notes else {})}
    return values, details
