"""The benchmark's metrics: pure functions in submodules, declared once here.

    from responsenet.eval.metrics import METRICS, SUITES, compute
    results = compute(["meteor", "fd"], clips, MetricContext(seed=0))

A metric returning a dict (a suite, or a metric with companions such as LSE-D/LSE-C) is stored
under ``{name}_{key}``; a metric that cannot run is stored as ``{"skipped": reason, "wanted": file}``.
"""

from __future__ import annotations

from responsenet.eval.metrics.base import (
    MetricContext,
    MetricInfo,
    MetricSkipped,
    ScoredClip,
    require,
)
from responsenet.eval.metrics.registry import (
    METRICS,
    SUITES,
    compute,
    metric_names,
    result_keys,
)

__all__ = ["METRICS", "SUITES", "MetricContext", "MetricInfo", "MetricSkipped", "ScoredClip",
           "compute", "metric_names", "require", "result_keys"]
