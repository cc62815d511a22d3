"""Stage 7, chrono: Chrono-Text files, turns and roles from hand-made segment/separate/transcribe
results, its failure reasons, and a round trip on the exact word times of a synthetic conversation.

The input stages are not run: each test writes their outputs to the documented contract
(docs/stages/chrono.md "Inputs") and runs :class:`ChronoStage` directly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from responsenet.build.stages.base import StageContext, StageResult
from responsenet.build.stages.chrono import ChronoConfig, ChronoStage
from responsenet.build.tasks import Task, execute_task
from responsenet.chrono import LASTING, PAUSE, decode, frame_of
from responsenet.errors import StageFailure
from responsenet.manifest import SourceEntry

FPS, N_FRAMES, CLIP = 25.0, 50, "src_000"
L, P = LASTING, PAUSE
WORDS = {
    "left": [{"text": "I", "start": 0.0, "end": 0.1, "prob": 0.9},
             {"text": "fixed", "start": 0.12, "end": 0.4, "prob": 0.8},
             {"text": "it.", "start": 0.4, "end": 0.52, "prob": 0.95},
             {"text": "Today", "start": 1.2, "end": 1.5, "prob": 0.7}],
    "right": [{"text": "oh", "start": 0.6, "end": 0.7, "prob": 0.6}],
}


def make_inputs(root: Path, words=None, speech=None, vad=None, n_frames=N_FRAMES):
    """segment/separate/transcribe results for clip ``src_000`` with two tracks."""
    words = WORDS if words is None else words
    speech = {"left": 1.1, "right": 0.1} if speech is None else speech
    dirs = {name: root / name for name in ("segment", "separate", "transcribe")}
    for folder in dirs.values():
        folder.mkdir(parents=True, exist_ok=True)
    separated, transcribed = [], []
    for track, track_words in words.items():
        entry = {"track": track, "audio": f"{track}.wav", "vad": f"{track}.vad.npy",
                 "speech_seconds": speech.get(track)}
        mask = (vad or {}).get(track, np.zeros(n_frames, bool))
        np.save(dirs["separate"] / f"{track}.vad.npy", mask)
        separated.append(entry)
        (dirs["transcribe"] / f"{track}.words.json").write_text(json.dumps(track_words))
        transcribed.append({"track": track, "words": f"{track}.words.json"})
    clip = {"clip_id": CLIP, "index": 0, "start": 3.0, "end": 3.0 + n_frames / FPS,
            "n_frames": n_frames}
    return {"segment": StageResult(dirs["segment"], {"fps": FPS, "clips": [clip]}, "fp-seg"),
            "separate": StageResult(dirs["separate"], {"tracks": separated}, "fp-sep"),
            "transcribe": StageResult(dirs["transcribe"], {"language": "en",
                                                           "tracks": transcribed}, "fp-tr")}


def run_stage(tmp_path: Path, inputs, roles=None, **config):
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    ctx = StageContext(item_id=CLIP, source=SourceEntry(id="src", path="/dev/null", roles=roles),
                       config=ChronoConfig(**config), out_dir=out, inputs=inputs)
    return ChronoStage().run(ctx), out


def test_writes_streams_turns_and_meta(tmp_path):
    meta, out = run_stage(tmp_path, make_inputs(tmp_path))
    assert meta == {
        "fps": FPS, "n_frames": N_FRAMES, "clip_start_s": 3.0,
        "roles": {"left": "speaker", "right": "listener"}, "roles_source": "rule",
        "turns": "turns.json", "n_turns": 3,
        "tracks": [
            {"track": "left", "chrono": "left.chrono.json", "role": "speaker", "n_words": 4,
             "speech_seconds": 1.1, "shifted_onsets": 0, "max_shift_frames": 0},
            {"track": "right", "chrono": "right.chrono.json", "role": "listener", "n_words": 1,
             "speech_seconds": 0.1, "shifted_onsets": 0, "max_shift_frames": 0}]}
    left = json.loads((out / "left.chrono.json").read_text())
    assert left == (["I", L, L, "fixed", L, L, L, L, L, L, "it.", L, L] + [P] * 17
                    + ["Today", L, L, L, L, L, L, L] + [P] * 12)
    right = json.loads((out / "right.chrono.json").read_text())
    assert right == [P] * 15 + ["oh", L, L] + [P] * 32
    assert json.loads((out / "turns.json").read_text()) == [
        {"role": "speaker", "track": "left", "start": 0.0, "end": 0.52, "text": "I fixed it."},
        {"role": "listener", "track": "right", "start": 0.6, "end": 0.7, "text": "oh"},
        {"role": "speaker", "track": "left", "start": 1.2, "end": 1.5, "text": "Today"}]


def test_manifest_roles_win_and_config_applies(tmp_path):
    meta, out = run_stage(tmp_path, make_inputs(tmp_path), roles={"right": "speaker"},
                          punctuation="strip", turn_merge_gap_s=1.0)
    assert meta["roles"] == {"left": "listener", "right": "speaker"}
    assert meta["roles_source"] == "manifest"
    turns = json.loads((out / "turns.json").read_text())
    assert [(t["role"], t["text"]) for t in turns] == [("listener", "I fixed it Today"),
                                                      ("speaker", "oh")]


def test_speech_seconds_fall_back_to_the_vad_mask(tmp_path):
    vad = {"left": np.arange(N_FRAMES) < 5, "right": np.arange(N_FRAMES) < 10}
    meta, _ = run_stage(tmp_path, make_inputs(tmp_path, speech={}, vad=vad))
    assert [t["speech_seconds"] for t in meta["tracks"]] == [0.2, 0.4]
    assert meta["roles"] == {"left": "listener", "right": "speaker"}


def test_packed_onsets_are_counted(tmp_path):
    words = {"left": [{"text": w, "start": 0.41 + i * 0.005, "end": 0.42 + i * 0.005}
                      for i, w in enumerate("abc")], "right": []}
    meta, out = run_stage(tmp_path, make_inputs(tmp_path, words=words))
    assert meta["tracks"][0]["shifted_onsets"] == 2 and meta["tracks"][0]["max_shift_frames"] == 2
    assert json.loads((out / "left.chrono.json").read_text())[10:14] == ["a", "b", "c", P]


# --- failures --------------------------------------------------------------------------------

def failure(tmp_path, inputs, fragment, roles=None) -> str:
    """The stage's failure reason; its message instead when that lacks ``fragment`` or the
    clip id (so that a failed comparison shows it)."""
    with pytest.raises(StageFailure) as info:
        run_stage(tmp_path, inputs, roles=roles)
    message = info.value.message
    return info.value.reason if fragment in message and CLIP in message else message


def test_missing_or_garbled_words(tmp_path):
    inputs = make_inputs(tmp_path)
    (inputs["transcribe"].dir / "left.words.json").unlink()
    assert failure(tmp_path, inputs, "cannot read words") == "bad_input"
    (inputs["transcribe"].dir / "left.words.json").write_text("{not json")
    assert failure(tmp_path, inputs, "--force transcribe") == "bad_input"
    (inputs["transcribe"].dir / "left.words.json").write_text('[{"text": "a", "start": 1}]')
    assert failure(tmp_path, inputs, "expected a word") == "bad_input"
    (inputs["transcribe"].dir / "left.words.json").write_text('{"text": "a"}')
    assert failure(tmp_path, inputs, "expected a JSON list") == "bad_input"


def test_bad_segment_or_track_lists(tmp_path):
    inputs = make_inputs(tmp_path)
    segment = inputs["segment"]
    inputs["segment"] = StageResult(segment.dir, {"fps": FPS, "clips": []}, "fp")
    assert failure(tmp_path, inputs, "no clip entry") == "bad_input"
    inputs = make_inputs(tmp_path)
    tracks = inputs["transcribe"].meta["tracks"]
    inputs["transcribe"] = StageResult(inputs["transcribe"].dir, {"tracks": tracks[:1]}, "fp")
    assert failure(tmp_path, inputs, "a clip needs exactly two") == "bad_input"
    renamed = [tracks[0], {**tracks[1], "track": "top"}]
    inputs["transcribe"] = StageResult(inputs["transcribe"].dir, {"tracks": renamed}, "fp")
    assert failure(tmp_path, inputs, "separate has tracks ['left', 'right']") == "bad_input"
    inputs["separate"] = StageResult(inputs["separate"].dir, {}, "fp")
    assert failure(tmp_path, inputs, "the separate result has no list of tracks") == "bad_input"


def test_bad_vad_mask_when_it_is_needed(tmp_path):
    inputs = make_inputs(tmp_path, speech={}, vad={"left": np.zeros(7, bool)})
    assert failure(tmp_path, inputs, "has shape (7,), expected (50,)") == "bad_input"
    (inputs["separate"].dir / "left.vad.npy").write_text("garbage")
    assert failure(tmp_path, inputs, "cannot be read") == "bad_input"


def test_conflicting_manifest_roles(tmp_path):
    assert failure(tmp_path, make_inputs(tmp_path), "both tracks",
                   roles={"left": "speaker", "right": "speaker"}) == "bad_roles"


def test_more_words_than_frames(tmp_path):
    words = {"left": [{"text": "w", "start": i * 0.01, "end": i * 0.01 + 0.01}
                      for i in range(6)], "right": []}
    assert failure(tmp_path, make_inputs(tmp_path, words=words, n_frames=4),
                   "6 words start inside a clip of 4 frames") == "bad_input"


def test_runner_records_the_failure_reason(tmp_path):
    inputs = make_inputs(tmp_path)
    (inputs["transcribe"].dir / "right.words.json").unlink()
    task = Task(ChronoStage, "clip", CLIP, SourceEntry(id="src", path="/dev/null"), {}, inputs,
                "chrono-fp", tmp_path / "build")
    outcome = execute_task(task)
    assert outcome.status == "failed" and outcome.reason == "bad_input"
    assert "right.words.json" in outcome.message


# --- a synthetic conversation with exact word times -------------------------------------------

@pytest.fixture(scope="module")
def truth(tmp_path_factory) -> dict:
    from responsenet.synth.generate import SynthSpec, synthesize

    out = tmp_path_factory.mktemp("synth")
    synthesize(out, SynthSpec(n=1, duration=8, size=(320, 180)), progress=False)
    return json.loads(next(out.glob("*.truth.json")).read_text())


def test_synthetic_words_round_trip_and_roles_by_rule(tmp_path, truth):
    fps, n_frames = float(truth["fps"]), int(truth["n_frames"])
    people = {p["panel"]: p for p in truth["participants"]}
    frames = np.arange(n_frames) / fps
    vad = {panel: np.any([(a <= frames) & (frames < b) for a, b in p["speech"]], axis=0)
           for panel, p in people.items()}
    inputs = make_inputs(tmp_path, words={k: p["words"] for k, p in people.items()},
                         speech={}, vad=vad, n_frames=n_frames)
    inputs["segment"].meta.update(fps=fps)
    meta, out = run_stage(tmp_path, inputs)
    assert meta["roles_source"] == "rule"
    assert meta["roles"] == {panel: p["role"] for panel, p in people.items()}
    for entry in meta["tracks"]:
        true_words = people[entry["track"]]["words"]
        decoded = decode(json.loads((out / entry["chrono"]).read_text()), fps)
        assert [w.text for w in decoded] == [w["text"] for w in true_words]
        shifts = []
        for true, got in zip(true_words, decoded, strict=True):
            shift = round(got.start * fps) - frame_of(true["start"], fps)
            shifts.append(shift)
            assert (shift - 1) / fps < got.start - true["start"] <= shift / fps
        assert sum(s != 0 for s in shifts) == entry["shifted_onsets"]
        assert max(map(abs, shifts), default=0) == entry["max_shift_frames"] <= 1
    turns = json.loads((out / "turns.json").read_text())
    assert [t["start"] for t in turns] == sorted(t["start"] for t in turns)
    spoken = " ".join(t["text"] for t in turns if t["role"] == "speaker").split()
    speaker = next(p for p in people.values() if p["role"] == "speaker")
    assert spoken == [w["text"] for w in speaker["words"]]
