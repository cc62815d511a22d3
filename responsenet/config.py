"""Pipeline configuration: one pydantic section per stage, merged CLI > YAML > defaults.

Each stage declares its own config model next to its code (``Stage.Config``); this module puts
the sections together, reads YAML files and ``--set stage.key=value`` overrides, and reports
mistakes with the path of the offending key.
"""

from __future__ import annotations

import difflib
import functools
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from responsenet.build.stages import available_stages, stages
from responsenet.errors import UsageError


@functools.cache
def pipeline_model() -> type[BaseModel]:
    """The pydantic model of a whole pipeline config, one field per available stage."""
    fields: dict[str, Any] = {}
    for name in available_stages():
        section = stages.get(name).Config
        fields[name] = (section, section())
    return create_model("PipelineConfig", __config__=ConfigDict(extra="forbid"), **fields)


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Return ``base`` updated by ``update``; nested dicts merge, everything else replaces."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(text: str) -> dict[str, Any]:
    """Turn ``"download.min_height=720"`` into ``{"download": {"min_height": 720}}``.

    The value is read as YAML, so numbers, booleans, ``null`` and lists keep their types.
    """
    key, sep, raw = text.partition("=")
    parts = key.strip().split(".")
    if not sep or len(parts) < 2 or not all(parts):
        raise UsageError(f"--set expects stage.key=value, got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise UsageError(f"--set {text!r}: value is not valid YAML: {e}") from e
    for part in reversed(parts):
        value = {part: value}
    return value


def _check_sections(data: dict[str, Any], origin: str) -> None:
    known = available_stages()
    for section in data:
        if section in known:
            continue
        if stages.is_planned(section):
            raise UsageError(f"{origin}: section {section!r} configures a stage that is "
                             "not available yet")
        close = difflib.get_close_matches(section, known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UsageError(f"{origin}: unknown config section {section!r}.{hint} "
                         f"Known sections: {', '.join(known)}")


def read_yaml_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise UsageError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping of stage sections")
    _check_sections(data, str(path))
    return data


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> BaseModel:
    """Resolve the pipeline config: defaults, then the YAML file, then each ``--set``."""
    data = read_yaml_config(path) if path else {}
    for text in overrides:
        update = parse_override(text)
        _check_sections(update, f"--set {text}")
        data = deep_merge(data, update)
    try:
        return pipeline_model().model_validate(data)
    except ValidationError as e:
        where = str(path) if path else "config"
        problems = [f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()]
        raise UsageError(f"{where}: invalid config:\n  " + "\n  ".join(problems)) from e
