"""Bad inputs next to good ones in one `responsenet build --stage all`, and malformed manifests.

The media corpus (tests/bad_media.py) is made from one synthetic conversation: broken files,
missing streams, too-short media, wrong face counts, silent and noise-only sound, and awkward but
usable files (variable frame rate, a rotated phone video). One build runs them all with the
conversation itself; no item may crash the run, each bad item must be in the build report with
its exact stage, reason code and a message saying what was wrong, and the good items must reach
the corpus shards. Manifests with mistakes are refused before anything runs (exit 2, file:line).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from bad_media import CASES, make_inputs
from typer.testing import CliRunner

from responsenet.cli import app
from responsenet.manifest import ManifestError, load_manifest

pytest.importorskip("mediapipe", reason="crop and face need MediaPipe (extra 'face')")
pytest.importorskip("faster_whisper", reason="transcribe needs faster-whisper (extra 'asr')")
for _tool in ("ffmpeg", "ffprobe", "espeak-ng"):
    if shutil.which(_tool) is None:
        pytest.skip(f"{_tool} not on PATH (make system-deps)", allow_module_level=True)


CONFIG = Path(__file__).resolve().parents[1] / "pipelines" / "cpu-small.yaml"
#: Small crops and a greedy Whisper keep the build fast; 1 s clips let the 4K case stay short.
OVERRIDES = ("crop.size=192", "segment.min_clip_seconds=1", "transcribe.beam_size=1")
GOOD = "synth-s5-000"
runner = CliRunner()


@pytest.fixture(scope="module")
def conversation(tmp_path_factory) -> tuple[Path, dict]:
    """One 8 s synthetic conversation (480x270): its video and its manifest row."""
    from responsenet.synth.generate import SynthSpec, synthesize

    folder = tmp_path_factory.mktemp("bad-inputs-synth")
    manifest = synthesize(folder, SynthSpec(n=1, seed=5, duration=8, size=(480, 270)),
                          progress=False)
    (row,) = yaml.safe_load(manifest.read_text())["sources"]
    video = folder / row["path"]
    return video, {**row, "path": str(video)}


def build_with(conversation, folder: Path, names: list[str]) -> tuple[Path, dict]:
    """Make the inputs ``names``, build them with the conversation and a missing file in one
    ``build --stage all`` (2 workers); return the build folder and its report."""
    video, good_row = conversation
    paths = make_inputs(video, folder / "inputs", names)
    rows = [good_row, *({"id": n, "path": str(p)} for n, p in paths.items()),
            {"id": "missing", "path": str(folder / "inputs" / "missing.mp4")}]
    manifest = folder / "manifest.yaml"
    manifest.write_text(yaml.safe_dump(rows, allow_unicode=True), encoding="utf-8")
    out = folder / "corpus"
    args = ["build", "--manifest", str(manifest), "--out", str(out), "--stage", "all",
            "--config", str(CONFIG), "--workers", "2", "--quiet"]
    for override in OVERRIDES:
        args += ["--set", override]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "reports" / "build-latest.json").read_text())
    if any(f["reason"] == "weights_missing" for f in report["failures"]):
        pytest.skip(f"model weights missing: {report['failures']}")
    return out, report


def corpus_clips(out: Path) -> list[str]:
    from responsenet.shards import read_track_records

    records = [r for p in sorted((out / "shards").rglob("*.parquet"))
               for r in read_track_records(p)]
    assert all(len(r.blendshapes) == r.n_frames == len(r.chrono) for r in records)
    return sorted({r.clip_id for r in records})


def failure_of(report: dict, source_id: str) -> dict:
    """The one failure of a source or of its clips (``{source_id}_000``, ...)."""
    found = [f for f in report["failures"]
             if f["item"] == source_id or f["item"].startswith(f"{source_id}_")]
    assert len(found) == 1, (source_id, found)
    return found[0]


DEFAULT = [name for name, case in CASES.items() if not case.slow]


@pytest.fixture(scope="module")
def built(conversation, tmp_path_factory) -> tuple[Path, dict]:
    return build_with(conversation, tmp_path_factory.mktemp("bad-inputs"), DEFAULT)


@pytest.mark.parametrize("name", [n for n in DEFAULT if CASES[n].reason])
def test_bad_input_is_reported_with_its_reason(built, name):
    _, report = built
    case, failure = CASES[name], failure_of(report, name)
    assert (failure["stage"], failure["reason"]) == (case.stage, case.reason), failure
    assert case.message.lower() in failure["message"].lower(), failure["message"]
    assert failure["item"] in failure["message"]  # the message names the source or clip
    unit_failed = case.stage in ("download", "segment")
    assert report["items"][name] == ("failed" if unit_failed else "partial")


def test_missing_file_is_not_found(built):
    _, report = built
    failure = failure_of(report, "missing")
    assert (failure["stage"], failure["reason"]) == ("download", "not_found")
    assert "missing.mp4 does not exist" in failure["message"]


def test_nothing_crashed_and_every_failure_is_expected(built):
    _, report = built
    expected = {n: CASES[n].reason for n in DEFAULT if CASES[n].reason} | {"missing": "not_found"}
    by_source = {f["item"].rsplit("_", 1)[0] if f["stage"] not in ("download", "segment")
                 else f["item"]: f["reason"] for f in report["failures"]}
    assert by_source == expected
    assert "internal_error" not in report["failures_by_reason"]


def test_good_and_awkward_inputs_reach_the_corpus(built):
    from responsenet.validate import validate_root

    out, report = built
    usable = [GOOD, *(n for n in DEFAULT if CASES[n].reason is None)]
    assert {n: report["items"][n] for n in usable} == dict.fromkeys(usable, "ok")
    assert corpus_clips(out) == sorted(f"{n}_000" for n in usable)
    assert validate_root(out) == []
    card = json.loads((out / "dataset.json").read_text())
    assert {x["source_id"] for x in card["excluded"]} == set(report["items"]) - set(usable)


def _segment_meta(out: Path, source_id: str) -> dict:
    return json.loads((out / "work/sources" / source_id / "segment/_result.json").read_text())[
        "meta"]


def test_variable_frame_rate_becomes_constant(built):
    out, _ = built
    meta = _segment_meta(out, "vfr")
    assert meta["source_probe"]["variable_fps"] is True
    (clip,) = meta["clips"]
    assert clip["quality"]["source_variable_fps"] is True
    assert meta["fps"] == 25.0 and clip["n_frames"] == pytest.approx(50, abs=1)


def test_rotated_video_is_turned_upright(built):
    out, _ = built
    probe = _segment_meta(out, "rotated")["source_probe"]
    assert (probe["rotation"], probe["width"], probe["height"]) == (270, 480, 270)
    crop = json.loads((out / "work/clips/rotated_000/crop/_result.json").read_text())["meta"]
    assert crop["frame_size"] == [480, 270] and crop["layout"] == "lr"


@pytest.mark.slow
def test_high_resolution_source_reaches_the_corpus(conversation, tmp_path):
    out, report = build_with(conversation, tmp_path, ["high-res"])
    assert report["items"] == {GOOD: "ok", "high-res": "ok", "missing": "failed"}
    assert corpus_clips(out) == ["high-res_000", f"{GOOD}_000"]
    probe = _segment_meta(out, "high-res")["source_probe"]
    assert (probe["width"], probe["height"]) == (3840, 2160)


# --- manifests: refused up front, every problem with file:line, exit 2 ----------------------
BAD_MANIFESTS = {
    "syntax.yaml": ("- {id: a, path: a.mp4\n- id: b\n", [
        ":2: not valid YAML: while parsing a flow mapping; expected ',' or '}', but got ':'"]),
    "indent.yaml": ("- id: a\n  path: a.mp4\n   layout: lr\n", [
        ":3: not valid YAML: mapping values are not allowed here"]),
    "nul.yaml": ("- id: a\x00b\n  path: a.mp4\n", [
        ":1: not valid YAML: character U+0000 is not allowed in a YAML file; remove it"]),
    "types.yaml": (
        "- {id: a, path: a.mp4, start: abc}\n- {id: b, path: a.mp4, layout: 5}\n"
        "- {id: c, path: a.mp4, roles: [speaker]}\n- {id: d, path: [a.mp4]}\n- {id: e, url: 5}\n"
        "- {id: true, path: a.mp4}\n- {id: f, path: a.mp4, start: -1}\n"
        "- {id: g, path: a.mp4, end: .nan}\n- {id: h, path: a.mp4, topic: 12}\n"
        "- {id: i, path: a.mp4, roles: {left: talker}}\n", [
            ":1: start: Value error, expected seconds or [HH:]MM:SS(.fff), got 'abc'",
            ":2: layout: Input should be 'lr', 'rl', 'tb', 'bt', 'pip' or 'auto'",
            ":3: roles: Input should be a valid dictionary",
            ":4: path must be text, got list ['a.mp4']",
            ":5: url must be text, got int 5",
            ":6: id must be text, got bool True; quote it",
            ":7: start: Input should be greater than or equal to 0",
            ":8: end: Input should be a finite number",
            ":9: topic must be text, got int 12",
            ":10: roles.left: Input should be 'speaker' or 'listener'"]),
    "missing.yaml": ("- id: a\n- {id: b, url: 'http://h/v.mp4', path: a.mp4}\n", [
        ":1: give exactly one of 'url' or 'path'",
        ":2: give exactly one of 'url' or 'path' (found url and path)"]),
    "unknown.yaml": ("- id: a\n  path: a.mp4\n  speakers: 2\n", [
        ":1: unknown field 'speakers' (known: id, url, path, start, end, layout, roles, "
        "participants, topic, language, license)"]),
    "top.yaml": ("sources:\n  - {id: a, path: a.mp4}\nextra: 1\n", [
        ":1: expected a list of sources, or a mapping with a 'sources' list or a 'synth' "
        "section; found keys ['extra', 'sources']"]),
    "dup.yaml": ("- {id: a, path: a.mp4}\n- {id: b, path: a.mp4}\n- {id: a, path: b.mp4}\n", [
        ":3: duplicate id 'a' (first used on line 1)"]),
    "dupfield.yaml": ("- id: a\n  path: a.mp4\n  path: b.mp4\n", [
        ":3: field 'path' is given twice in one source; keep one"]),
    "ids.yaml": (
        '- {id: ../x, path: a.mp4}\n- {id: a/b, path: a.mp4}\n- {id: "a b", path: a.mp4}\n'
        '- {id: "a\\0b", path: a.mp4}\n- {id: .hidden, path: a.mp4}\n'
        "- {id: entrevista-ñ-01, path: a.mp4}\n", [
            *(f":{line}: id {bad!r} is not a safe file name: use 1-128 ASCII letters, digits, "
              "'.', '_' and '-', starting with a letter or digit (no '/', '..' or spaces)"
              for line, bad in ((1, "../x"), (2, "a/b"), (3, "a b"))),
            ":4: id 'a\\x00b' contains control characters; use printable ASCII",
            ":5: id '.hidden' is not a safe file name: use 1-128 ASCII letters, digits, '.', "
            "'_' and '-', starting with a letter or digit (no '/', '..' or spaces)",
            ":6: id 'entrevista-ñ-01' has non-ASCII characters; ids become folder names, so use "
            "ASCII letters, digits, '.', '_' and '-' (e.g. 'entrevista-n-01')"]),
    "ids.jsonl": ('{"id": "ok", "path": "a.mp4"}\n{"id": "c\\u0000d", "path": "a.mp4"}\n'
                  '{"id": "a", "path": "a.mp4"\n', [
                      ":3: not valid JSON: Expecting ',' delimiter"]),
    "ids.csv": ("id,path\nentrevista-ñ-01,a.mp4\nok,a.mp4,extra\nx,a.mp4,,\n", [
        ":3: more values than header columns", ":4: more values than header columns"]),
    "latin1.yaml": ("- id: café\n  path: a.mp4\n".encode("latin-1"), [
        ":1: not UTF-8 text (byte 0xe9 at offset 9); save the manifest as UTF-8"]),
}


@pytest.mark.parametrize("name", list(BAD_MANIFESTS))
def test_malformed_manifest_is_refused_with_file_and_line(tmp_path, name):
    text, expected = BAD_MANIFESTS[name]
    manifest = tmp_path / name
    manifest.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    with pytest.raises(ManifestError) as caught:
        load_manifest(manifest)
    assert caught.value.problems == [f"{manifest}{problem}" for problem in expected]

    out = tmp_path / "out"
    result = runner.invoke(app, ["build", "--manifest", str(manifest), "--out", str(out),
                                 "--stage", "all", "--config", str(CONFIG)])
    assert result.exit_code == 2, result.output
    flat = "".join(result.output.split())  # the console wraps long lines
    for problem in expected:
        assert "".join(f"{manifest}{problem}".split()) in flat, result.output
    assert not out.exists()


def test_non_ascii_and_unsafe_ids_in_json_lines(tmp_path):
    manifest = tmp_path / "m.jsonl"
    rows = [{"id": "c\u0000d", "path": "a.mp4"}, {"id": "entrevista-ñ-01", "url": "http://h/v"}]
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    with pytest.raises(ManifestError) as caught:
        load_manifest(manifest)
    assert [p.split(": ", 1)[0] for p in caught.value.problems] == [f"{manifest}:1",
                                                                    f"{manifest}:2"]
    assert "control characters" in caught.value.problems[0]
    assert "'entrevista-n-01'" in caught.value.problems[1]
