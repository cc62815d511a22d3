"""Source manifests: parse YAML, JSONL or CSV rows, validate them with file:line errors.

A manifest row is one *source*: a URL (anything yt-dlp or plain HTTP can fetch) or a local path,
with an optional time range and what is known about the conversation. Ids become folder names,
so they must be safe file names; a missing id is derived from the URL or path, stably.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from responsenet.errors import UsageError

Layout = Literal["lr", "rl", "tb", "bt", "pip", "auto"]
Panel = Literal["left", "right", "top", "bottom", "main", "inset"]
Role = Literal["speaker", "listener"]

SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
FIELDS = ("id", "url", "path", "start", "end", "layout", "roles", "participants", "topic",
          "language", "license")


class SourceEntry(BaseModel):
    """One manifest row. Times are seconds into the source; ``path`` is absolute once parsed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    url: str | None = None
    path: str | None = None
    start: float | None = None
    end: float | None = None
    layout: Layout = "auto"
    roles: dict[Panel, Role] | None = None
    participants: dict[Panel, str] | None = None
    topic: str | None = None
    language: str | None = None
    license: str | None = None

    @field_validator("start", "end", mode="before")
    @classmethod
    def _parse_time(cls, value: Any) -> Any:
        return parse_time(value) if isinstance(value, str) else value

    @field_validator("roles", "participants", mode="before")
    @classmethod
    def _parse_mapping(cls, value: Any) -> Any:
        return parse_mapping(value) if isinstance(value, str) else value

    @property
    def location(self) -> str:
        return self.url or self.path or ""


class ManifestError(UsageError):
    """A manifest failed validation; ``problems`` holds one ``file:line: message`` per problem."""

    def __init__(self, problems: list[str]):
        super().__init__("invalid manifest:\n" + "\n".join(f"  {p}" for p in problems))
        self.problems = problems


def parse_time(value: str) -> float:
    """Parse ``"83.5"``, ``"1:23.5"`` or ``"0:01:23.5"`` into seconds."""
    parts = value.strip().split(":")
    if not 1 <= len(parts) <= 3 or not all(re.fullmatch(r"\d+(\.\d*)?", p) for p in parts):
        raise ValueError(f"expected seconds or [HH:]MM:SS(.fff), got {value!r}")
    seconds = 0.0
    for part in parts:
        seconds = seconds * 60 + float(part)
    return seconds


def parse_mapping(value: str) -> dict[str, str]:
    """Parse ``"left=speaker;right=listener"`` (``,`` / ``:`` also accepted) into a dict."""
    out = {}
    for pair in re.split(r"[;,]", value):
        if pair.strip():
            match = re.fullmatch(r"\s*([^=:]+?)\s*[=:]\s*(.+?)\s*", pair)
            if match is None:
                raise ValueError(f"expected panel=value pairs, got {value!r}")
            out[match.group(1)] = match.group(2)
    return out


def derive_id(row: dict[str, Any]) -> str:
    """A stable id for a row without one: ``src-`` + a short hash of its URL or path."""
    location = str(row.get("url") or row.get("path") or "")
    return "src-" + hashlib.sha1(location.encode()).hexdigest()[:10]


def id_problem(source_id: Any) -> str | None:
    """Why ``source_id`` is not a safe file name, or None when it is."""
    if not isinstance(source_id, str) or not source_id:
        return "id is empty; give each source a non-empty id"
    if any(ord(c) < 32 or ord(c) == 127 for c in source_id):
        return f"id {source_id!r} contains control characters"
    if not SAFE_ID.match(source_id) or ".." in source_id:
        return (f"id {source_id!r} is not a safe file name: use 1-128 letters, digits, '.', '_' "
                "and '-', starting with a letter or digit (no '/', '..' or spaces)")
    return None


def read_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """Read raw rows with the line each starts on, by file extension (.yaml/.yml, .jsonl, .csv)."""
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return _read_yaml(path)
    if suffix in (".jsonl", ".ndjson"):
        return _read_jsonl(path)
    if suffix == ".csv":
        return _read_csv(path)
    raise ManifestError([f"{path}: unknown manifest format {suffix!r}; use .yaml, .jsonl or .csv"])


def _read_yaml(path: Path) -> list[tuple[int, dict[str, Any]]]:
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", -1) + 1
        raise ManifestError([f"{path}:{line}: not valid YAML: {e}"]) from e
    if isinstance(data, dict):
        unknown = set(data) - {"sources", "synth", "name", "description"}
        if unknown or len({"sources", "synth"} & set(data)) != 1:
            raise ManifestError([f"{path}:1: expected a list of sources, or a mapping with a "
                                 f"'sources' list or a 'synth' section; found keys "
                                 f"{sorted(data)}"])
        if "synth" in data:
            line = next(k.start_mark.line for k, _ in node.value if k.value == "synth") + 1
            return _synth_rows(path, line, data["synth"])
        node = next(v for k, v in node.value if k.value == "sources")
        data = data["sources"]
    if data is None:
        return []
    if not isinstance(data, list):
        raise ManifestError([f"{path}:1: expected a list of sources, got {type(data).__name__}"])
    return [(item.start_mark.line + 1, row) for item, row in zip(node.value, data)]


def _synth_rows(path: Path, line: int, section: Any) -> list[tuple[int, dict[str, Any]]]:
    """Rows of a synthetic corpus described by a ``synth:`` section, generated when missing.

    The section takes ``folder`` (relative to the manifest) and the options of
    ``responsenet synth`` (``n``, ``seed``, ``layout``, ``duration``, ``size`` as "WxH", ``faces``,
    ``cut``, ``snr_db``, ``interruption``).
    """
    from responsenet.synth.generate import SynthSpec, synthesize

    if not isinstance(section, dict) or "folder" not in section:
        raise ManifestError([f"{path}:{line}: 'synth' needs a mapping with at least 'folder'"])
    options = dict(section)
    folder = (path.parent / str(options.pop("folder"))).resolve()
    if isinstance(options.get("size"), str):
        width, _, height = options["size"].lower().partition("x")
        options["size"] = (int(width), int(height))
    if "faces" in options:
        options["faces"] = tuple(options["faces"])
    try:
        spec = SynthSpec(**options)
    except TypeError as e:
        raise ManifestError([f"{path}:{line}: bad 'synth' option: {e}"]) from e
    generated = synthesize(folder, spec)
    rows = yaml.safe_load(generated.read_text(encoding="utf-8"))["sources"]
    return [(line, {**row, "path": str(folder / row["path"])}) for row in rows]


def _read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    rows, problems = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            rows.append((number, json.loads(line)))
        except json.JSONDecodeError as e:
            problems.append(f"{path}:{number}: not valid JSON: {e.msg}")
    if problems:
        raise ManifestError(problems)
    return rows


def _read_csv(path: Path) -> list[tuple[int, dict[str, Any]]]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = []
        for row in reader:
            cleaned = {k: v for k, v in row.items() if v not in ("", None)}
            if None in cleaned:
                raise ManifestError([f"{path}:{reader.line_num}: more values than header columns"])
            rows.append((reader.line_num, cleaned))
    return rows


def _check_row(row: Any, where: str, base: Path) -> tuple[SourceEntry | None, list[str]]:
    if not isinstance(row, dict):
        return None, [f"{where}: expected a mapping of fields, got {type(row).__name__}"]
    problems = [f"{where}: unknown field {k!r} (known: {', '.join(FIELDS)})"
                for k in row if k not in FIELDS]
    row = {k: v for k, v in row.items() if k in FIELDS}
    row.setdefault("id", derive_id(row))
    if isinstance(row["id"], (int, float)):
        row["id"] = str(row["id"])
    if (why := id_problem(row["id"])) is not None:
        problems.append(f"{where}: {why}")
    if bool(row.get("url")) == bool(row.get("path")):
        problems.append(f"{where}: give exactly one of 'url' or 'path'")
    if row.get("path") and not problems:
        row["path"] = str((base / str(row["path"])).expanduser().resolve())
    if problems:
        return None, problems
    try:
        entry = SourceEntry(**row)
    except ValidationError as e:
        return None, [f"{where}: {'.'.join(map(str, err['loc']))}: {err['msg']}"
                      for err in e.errors()]
    if entry.start is not None and entry.end is not None and entry.end <= entry.start:
        return None, [f"{where}: end ({entry.end}) must be after start ({entry.start})"]
    return entry, []


def load_manifest(path: str | Path) -> list[SourceEntry]:
    """Parse and validate a manifest; raise :class:`ManifestError` listing every problem.

    Relative ``path`` fields are resolved against the manifest's folder.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError([f"{path}: manifest not found"])
    entries, problems, first_line = [], [], {}
    for line, row in read_rows(path):
        entry, row_problems = _check_row(row, f"{path}:{line}", path.parent)
        problems += row_problems
        if entry is None:
            continue
        if entry.id in first_line:
            problems.append(f"{path}:{line}: duplicate id {entry.id!r} "
                            f"(first used on line {first_line[entry.id]})")
            continue
        first_line[entry.id] = line
        entries.append(entry)
    if problems:
        raise ManifestError(problems)
    if not entries:
        raise ManifestError([f"{path}: the manifest lists no sources"])
    return entries
