"""Source manifests: parse YAML, JSONL or CSV rows, validate them with file:line errors.

A manifest row is one *source*: a URL (anything yt-dlp or plain HTTP can fetch) or a local path,
with an optional time range and what is known about the conversation. Ids become folder names,
so they must be safe file names; a missing id is derived from the URL or path, stably.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import unicodedata
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from responsenet.errors import UsageError

Layout = Literal["lr", "rl", "tb", "bt", "pip", "auto"]
Panel = Literal["left", "right", "top", "bottom", "main", "inset"]
Role = Literal["speaker", "listener"]

#: One path component: ASCII letters, digits, '.', '_' and '-', starting with a letter or digit.
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
#: Longest source id: clip ids append ``_NNN`` and must stay file names.
MAX_SOURCE_ID = 128


def is_safe_name(text: object) -> bool:
    """True when ``text`` can be a file or folder name under an output root: 1-255 ASCII
    letters, digits, '.', '_' and '-', starting with a letter or digit, no '..'. Source ids,
    clip ids, split names and stage names must be; every output path built from them relies
    on it (the build, validate, export and eval's run folder all check with this)."""
    return isinstance(text, str) and bool(SAFE_NAME.match(text)) and ".." not in text
FIELDS = ("id", "url", "path", "start", "end", "layout", "roles", "participants", "topic",
          "language", "license")
#: Fields whose value must be text (numbers are taken as text for ``id`` only).
TEXT_FIELDS = ("url", "path", "topic", "language", "license")


class SourceEntry(BaseModel):
    """One manifest row. Times are seconds into the source; ``path`` is absolute once parsed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    url: str | None = None
    path: str | None = None
    start: float | None = Field(None, ge=0, allow_inf_nan=False)
    end: float | None = Field(None, gt=0, allow_inf_nan=False)
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
    """Why ``source_id`` is not a safe file name, or None when it is.

    Ids become folder and file names on every system a corpus is copied to, so they are
    restricted to ASCII letters, digits, ``.``, ``_`` and ``-``: non-ASCII letters are refused
    (file systems store them in different Unicode normal forms, so the same id could name two
    folders), and so are path separators, ``..``, spaces and control characters.
    """
    if not isinstance(source_id, str):
        return f"id must be text, got {type(source_id).__name__} {source_id!r}; quote it"
    if not source_id:
        return "id is empty; give each source a non-empty id"
    if any(ord(c) < 32 or ord(c) == 127 for c in source_id):
        return f"id {source_id!r} contains control characters; use printable ASCII"
    if not source_id.isascii():
        return (f"id {source_id!r} has non-ASCII characters; ids become folder names, so use "
                f"ASCII letters, digits, '.', '_' and '-' (e.g. {ascii_id(source_id)!r})")
    if not is_safe_name(source_id) or len(source_id) > MAX_SOURCE_ID:
        return (f"id {source_id!r} is not a safe file name: use 1-128 ASCII letters, digits, "
                "'.', '_' and '-', starting with a letter or digit (no '/', '..' or spaces)")
    return None


def ascii_id(text: str) -> str:
    """An ASCII spelling of ``text`` for an id: accents dropped, other characters -> ``-``."""
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^A-Za-z0-9._-]+", "-", plain).strip("-._") or "source"


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


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ManifestError([f"{path}:{line}: not UTF-8 text (byte {data[e.start]:#04x} at "
                             f"offset {e.start}); save the manifest as UTF-8"]) from e


def _yaml_problem(path: Path, text: str, error: yaml.YAMLError) -> str:
    """``file:line: not valid YAML: what`` for a PyYAML error, without its source excerpt."""
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    if mark is not None:
        line = mark.line + 1
    else:  # a reader error (a forbidden character) knows only its offset
        line = text[: getattr(error, "position", 0)].count("\n") + 1
    if isinstance(error, yaml.reader.ReaderError):
        char = error.character
        code = char if isinstance(char, int) else ord(char)
        what = f"character U+{code:04X} is not allowed in a YAML file; remove it"
    else:
        what = "; ".join(str(part) for part in (getattr(error, "context", None),
                                                getattr(error, "problem", None)) if part)
    return f"{path}:{line}: not valid YAML: {what or error}"


def _duplicate_keys(path: Path, rows: list[yaml.Node]) -> list[str]:
    """A field given twice in one row (YAML would silently keep the last value)."""
    problems = []
    for row in rows:
        if not isinstance(row, yaml.MappingNode):
            continue
        seen: set[str] = set()
        for key, _ in row.value:
            if key.value in seen:
                problems.append(f"{path}:{key.start_mark.line + 1}: field {key.value!r} is "
                                "given twice in one source; keep one")
            seen.add(key.value)
    return problems


def _read_yaml(path: Path) -> list[tuple[int, dict[str, Any]]]:
    text = _read_text(path)
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ManifestError([_yaml_problem(path, text, e)]) from e
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
    if problems := _duplicate_keys(path, node.value):
        raise ManifestError(problems)
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
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
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
    reader = csv.DictReader(io.StringIO(_read_text(path), newline=""))
    rows, problems = [], []
    for row in reader:
        cleaned = {k: v for k, v in row.items() if v not in ("", None)}
        if None in cleaned:
            problems.append(f"{path}:{reader.line_num}: more values than header columns")
        rows.append((reader.line_num, cleaned))
    if problems:
        raise ManifestError(problems)
    return rows


def _check_row(row: Any, where: str, base: Path) -> tuple[SourceEntry | None, list[str]]:
    if not isinstance(row, dict):
        return None, [f"{where}: expected a mapping of fields, got {type(row).__name__}"]
    problems = [f"{where}: unknown field {k!r} (known: {', '.join(FIELDS)})"
                for k in row if k not in FIELDS]
    row = {k: v for k, v in row.items() if k in FIELDS}
    row.setdefault("id", derive_id(row))
    if isinstance(row["id"], (int, float)) and not isinstance(row["id"], bool):
        row["id"] = str(row["id"])
    problems += [f"{where}: {k} must be text, got {type(row[k]).__name__} {row[k]!r}"
                 for k in TEXT_FIELDS if row.get(k) is not None and not isinstance(row[k], str)]
    if (why := id_problem(row["id"])) is not None:
        problems.append(f"{where}: {why}")
    if bool(row.get("url")) == bool(row.get("path")):
        given = " and ".join(k for k in ("url", "path") if row.get(k)) or "neither"
        problems.append(f"{where}: give exactly one of 'url' or 'path'")
        if given != "neither":
            problems[-1] += f" (found {given})"
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
