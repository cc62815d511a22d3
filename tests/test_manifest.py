from __future__ import annotations

import json
from pathlib import Path

import pytest

from responsenet.manifest import ManifestError, derive_id, load_manifest, parse_time


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    return info.value.problems


def test_yaml_rows_parse_with_types_and_relative_paths(tmp_path):
    path = write(tmp_path, "m.yaml", """
- id: a
  url: https://example.org/v.mp4
  start: "0:01:02.5"
  end: 70
  layout: lr
  roles: {left: speaker, right: listener}
  participants: "left=alice;right=bob"
  topic: cooking
- id: b
  path: videos/b.mp4
""")
    a, b = load_manifest(path)
    assert a.start == 62.5 and a.end == 70.0 and a.layout == "lr"
    assert a.roles == {"left": "speaker", "right": "listener"}
    assert a.participants == {"left": "alice", "right": "bob"}
    assert b.path == str((tmp_path / "videos/b.mp4").resolve())
    assert b.layout == "auto" and b.url is None


def test_yaml_mapping_with_sources_key(tmp_path):
    path = write(tmp_path, "m.yml", "name: demo\nsources:\n  - {id: x, path: x.mp4}\n")
    assert [e.id for e in load_manifest(path)] == ["x"]


def test_jsonl_and_csv_give_the_same_entries(tmp_path):
    rows = [{"id": "a", "url": "http://h/a.mp4", "start": 1, "end": 2, "topic": "t"},
            {"id": "b", "path": "b.mp4", "roles": "left=speaker,right=listener"}]
    jsonl = write(tmp_path, "m.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n# c\n")
    csv = write(tmp_path, "m.csv", "id,url,path,start,end,topic,roles\n"
                "a,http://h/a.mp4,,1,2,t,\nb,,b.mp4,,,,left=speaker;right=listener\n")
    assert load_manifest(jsonl) == load_manifest(csv)


@pytest.mark.parametrize("bad_id, fragment", [
    ("../x", "not a safe file name"),
    ("/abs", "not a safe file name"),
    ("a/b", "not a safe file name"),
    ("", "id is empty"),
    ("tab\there", "control characters"),
    ("with space", "not a safe file name"),
    ("a..b", "not a safe file name"),
])
def test_unsafe_ids_are_reported_with_file_and_line(tmp_path, bad_id, fragment):
    path = write(tmp_path, "m.jsonl", json.dumps({"id": "ok", "path": "a"}) + "\n"
                 + json.dumps({"id": bad_id, "path": "b"}) + "\n")
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}:2: ") and fragment in problem


def test_every_problem_is_listed_with_its_line(tmp_path):
    path = write(tmp_path, "m.yaml", """
- id: a
  path: a.mp4
- id: a
  path: b.mp4
- id: c
  url: http://h/c.mp4
  start: 5
  end: 5
- id: d
  path: d.mp4
  colour: red
- id: e
- id: f
  path: f.mp4
  layout: diagonal
""")
    problems = problems_of(path)
    assert f"{path}:4: duplicate id 'a' (first used on line 2)" in problems
    assert f"{path}:6: end (5.0) must be after start (5.0)" in problems
    assert any(p.startswith(f"{path}:10: unknown field 'colour'") for p in problems)
    assert f"{path}:13: give exactly one of 'url' or 'path'" in problems
    assert any(p.startswith(f"{path}:14: layout") for p in problems)
    assert len(problems) == 5


def test_bad_syntax_empty_and_missing_files(tmp_path):
    assert problems_of(write(tmp_path, "m.yaml", "- id: [unclosed\n"))[0].startswith(
        f"{tmp_path / 'm.yaml'}:")
    assert "not valid JSON" in problems_of(write(tmp_path, "m.jsonl", "{nope\n"))[0]
    assert "lists no sources" in problems_of(write(tmp_path, "e.yaml", "[]\n"))[0]
    assert "manifest not found" in problems_of(tmp_path / "missing.yaml")[0]
    assert "unknown manifest format" in problems_of(write(tmp_path, "m.txt", "x"))[0]


def test_missing_id_is_derived_stably(tmp_path):
    path = write(tmp_path, "m.yaml", "- url: http://h/a.mp4\n")
    (entry,) = load_manifest(path)
    assert entry.id == derive_id({"url": "http://h/a.mp4"}) and entry.id.startswith("src-")
    assert load_manifest(path)[0].id == entry.id


@pytest.mark.parametrize("text, seconds", [("83.5", 83.5), ("1:23.5", 83.5), ("0:01:23.5", 83.5),
                                           ("2:00:00", 7200.0)])
def test_parse_time(text, seconds):
    assert parse_time(text) == seconds


@pytest.mark.parametrize("text", ["1:2:3:4", "abc", "-5", "1:-2"])
def test_parse_time_rejects(text):
    with pytest.raises(ValueError):
        parse_time(text)


def test_example_manifests_parse():
    examples = Path(__file__).resolve().parents[1] / "manifests" / "examples"
    for path in sorted(examples.iterdir()):
        entries = load_manifest(path)
        assert entries[0].id == "interview-01" and entries[-1].id == "local-01", path
        assert entries[-1].path == str((examples / "../videos/local-01.mp4").resolve())


def test_the_longest_source_id_still_gives_safe_clip_ids(tmp_path):
    """Source ids stop at 128 characters so that clip ids (``{id}_NNN``) stay file names for
    every check that shares ``is_safe_name`` (build, validate, export, eval run folders)."""
    from responsenet.build.workspace import safe_name_problem
    from responsenet.manifest import is_safe_name

    longest = "a" * 128
    (entry,) = load_manifest(write(tmp_path, "m.yaml", f"- {{id: {longest}, path: x.mp4}}\n"))
    assert entry.id == longest
    assert is_safe_name(f"{longest}_000") and safe_name_problem(f"{longest}_000") is None
    with pytest.raises(ManifestError, match="1-128 ASCII letters"):
        load_manifest(write(tmp_path, "n.yaml", f"- {{id: {longest}b, path: x.mp4}}\n"))
    assert not is_safe_name("a" * 256) and safe_name_problem("../x") is not None
