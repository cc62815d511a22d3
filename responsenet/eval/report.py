"""Human-readable reports of a scored run: results.md (laid out like OmniResponse Table 2) and
per_clip.csv (one row per clip: status, failure reason, timing)."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from responsenet.errors import UsageError

#: Table 2 columns: (results.json key, header, better direction arrow).
TABLE2 = (("meteor", "METEOR", "↑"), ("bertscore_f1", "BERTScore F1", "↑"),
          ("rouge_l", "ROUGE-L", "↑"), ("distinct_2", "Distinct-2", "↑"),
          ("utmosv2", "UTMOSv2", "↑"), ("lse_d", "LSE-D", "↓"), ("fd", "FD", "↓"),
          ("fvd", "FVD", "↓"))
#: Offline companions shown in a second table when present.
COMPANIONS = (("bertscore_minilm", "BERTScore F1 (MiniLM)", "↑"),
              ("dnsmos_ovrl", "DNSMOS OVRL", "↑"), ("distinct_1", "Distinct-1", "↑"),
              ("lse_c", "LSE-C", "↑"), ("lse_d_listener_speaking", "LSE-D (speaking)", "↓"))
_PUBLISHED = Path(__file__).with_name("published")


def published_rows(name: str) -> list[dict[str, Any]]:
    """Rows of a published results table: a bundled name or a JSON file of
    ``[{"method": ..., "metric_key": value, ...}, ...]``."""
    path = Path(name) if name.endswith(".json") else _PUBLISHED / f"{name}.json"
    if not path.is_file():
        bundled = sorted(p.stem for p in _PUBLISHED.glob("*.json"))
        raise UsageError(f"--compare {name}: no table {path}; bundled tables: "
                         f"{', '.join(bundled) or 'none'}; or pass a JSON file of rows "
                         '[{"method": "...", "meteor": 0.1, ...}]')
    rows = json.loads(path.read_text())
    return rows["rows"] if isinstance(rows, dict) else rows


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return "skipped" if "skipped" in value else "failed"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _table(columns: Sequence[tuple[str, str, str]], rows: list[tuple[str, dict[str, Any]]]
           ) -> list[str]:
    lines = ["| Method | " + " | ".join(f"{h} {a}" for _, h, a in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for method, values in rows:
        lines.append(f"| {method} | " + " | ".join(_cell(values.get(k)) for k, _, _ in columns)
                     + " |")
    return lines


def render_results_md(results: dict[str, Any], compare: str | None = None) -> str:
    """The Markdown report of ``results`` (results.json's dict)."""
    metrics, model, data = results["metrics"], results["model"], results["data"]
    label = model["spec"] + (" (offline)" if results["mode"] == "offline" else "")
    rows = [(f"{r.get('method')} (published)", r) for r in
            (published_rows(compare) if compare else [])]
    rows.append((label + " (this run)", metrics))
    lines = [f"# {model['spec']} on {data['root']} ({data['split']}, {data['n_scored']}/"
             f"{data['n_clips']} clips, {results['mode']})", "",
             *_table(TABLE2, rows), ""]
    present = [c for c in COMPANIONS if c[0] in metrics]
    if present:
        lines += ["Offline companions and extras (not the paper's metrics):", "",
                  *_table(present, [(label, metrics)]), ""]
    others = {k: v for k, v in metrics.items()
              if k not in {c[0] for c in (*TABLE2, *COMPANIONS)} and not isinstance(v, dict)}
    if others:
        lines += ["| metric | value |", "|---|---|",
                  *[f"| {k} | {_cell(v)} |" for k, v in sorted(others.items())], ""]
    skipped = {k: v for k, v in metrics.items() if isinstance(v, dict)}
    if skipped:
        lines += ["Not computed:", ""] + [
            f"- `{k}`: " + (f"skipped, {v['skipped']}" if "skipped" in v else
                            f"failed, {v.get('failed')}") for k, v in sorted(skipped.items())]
        lines.append("")
    t = results["timing"]
    lines += ["Timing: " + ", ".join(f"{k} {_cell(t.get(k))}" for k in (
        "first_output_ms", "step_p50_ms", "step_p95_ms", "real_time_factor",
        "frames_per_second", "overhead_mean_ms")) + f" (device {results['device']})", ""]
    if results.get("failures"):
        lines += [f"Failed clips: {len(results['failures'])} (see per_clip.csv)", ""]
    return "\n".join(lines)


def write_results_md(path: Path, results: dict[str, Any], compare: str | None = None) -> None:
    path.write_text(render_results_md(results, compare))


PER_CLIP_FIELDS = ("clip_id", "status", "reason", "n_frames", "steps", "model_seconds",
                   "first_output_ms", "error")


def write_per_clip(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, PER_CLIP_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
