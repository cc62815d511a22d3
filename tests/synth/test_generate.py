"""`responsenet synth` end to end: files, truth consistency, determinism, faces, voices, manifest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from responsenet.cli import app
from responsenet.manifest import load_manifest
from responsenet.synth.generate import SynthSpec, conversation_id, synthesize
from responsenet.synth.truth import read_truth, truth_problems
from responsenet.wavio import read_wav

pytest.importorskip("cv2", reason="the synth extra (opencv) renders faces")
pytest.importorskip("mediapipe", reason="the synth extra (MediaPipe) places the faces")
pytest.importorskip("skimage", reason="the synth extra (scikit-image) holds the astronaut")
for tool in ("ffmpeg", "ffprobe", "espeak-ng"):
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} not on PATH (make system-deps)", allow_module_level=True)

from responsenet.media import probe
from responsenet.synth.audio import frame_envelope, mean_pitch_hz
from responsenet.synth.render import panel_rects
from responsenet.testing.video import decode_rgb, faces_per_panel, jaw_open_series

SPEC = SynthSpec(n=2, seed=11, duration=10.0, size=(480, 270), cut=False)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    synthesize(out, SPEC, progress=False)
    return out


def truths(folder: Path, spec: SynthSpec = SPEC) -> list[dict]:
    return [read_truth(folder / f"{conversation_id(spec.seed, i)}.truth.json")
            for i in range(spec.n)]


def test_files_and_truth_are_consistent(corpus):
    for truth in truths(corpus):
        assert truth_problems(truth) == []
        assert truth["n_frames"] == 250 and truth["size"] == [480, 270]
        info = probe(corpus / f"{truth['id']}.mp4")
        assert info.video_codec == "h264" and info.has_audio and abs(info.fps - 25) < 1e-6
        assert len(decode_rgb(corpus / f"{truth['id']}.mp4", SPEC.size)) == truth["n_frames"]
        roles = sorted(p["role"] for p in truth["participants"])
        assert roles == ["listener", "speaker"]
        for person, panel in zip(truth["participants"], ("left", "right")):
            assert person["panel"] == panel
            audio, rate = read_wav(corpus / person["audio"])
            assert rate == 16000 and len(audio) == 160000
            assert len(person["head_pose"]["yaw"]) == 250
            # The clean voice is silent outside the recorded speech spans.
            inside = np.zeros(len(audio), dtype=bool)
            for start, end in person["speech"]:
                inside[int(start * rate):int(np.ceil(end * rate))] = True
            assert np.abs(audio[~inside]).max(initial=0.0) < 1e-3
            assert np.sqrt(np.mean(audio[inside] ** 2)) > 0.01


def test_conversation_has_backchannel_overlap_and_interruption(corpus):
    for truth in truths(corpus):
        kinds = {kind for p in truth["participants"] for _, _, kind in p["turns"]}
        assert {"turn", "backchannel", "interruption"} <= kinds, kinds
        a, b = (p["speech"] for p in truth["participants"])
        overlap = sum(max(0.0, min(x1, y1) - max(x0, y0)) for x0, x1 in a for y0, y1 in b)
        assert overlap > 0.1


def test_same_seed_gives_the_same_truth_bytes(corpus, tmp_path):
    again = SynthSpec(n=1, seed=SPEC.seed, duration=SPEC.duration, size=SPEC.size)
    synthesize(tmp_path, again, progress=False)
    name = f"{conversation_id(SPEC.seed, 0)}.truth.json"
    assert (tmp_path / name).read_bytes() == (corpus / name).read_bytes()
    other = SynthSpec(n=1, seed=SPEC.seed + 1, duration=SPEC.duration, size=SPEC.size)
    synthesize(tmp_path / "other", other, progress=False)
    words = [w["text"] for p in truths(tmp_path / "other", other)[0]["participants"]
             for w in p["words"]]
    assert words != [w["text"] for p in truths(corpus)[0]["participants"] for w in p["words"]]


def test_existing_conversations_are_kept(corpus):
    mp4 = corpus / f"{conversation_id(SPEC.seed, 0)}.mp4"
    before = mp4.stat().st_mtime_ns
    synthesize(corpus, SPEC, progress=False)
    assert mp4.stat().st_mtime_ns == before


def test_mediapipe_finds_one_face_per_panel_and_jaw_follows_speech(corpus):
    truth = truths(corpus)[0]
    frames = decode_rgb(corpus / f"{truth['id']}.mp4", SPEC.size)
    rects = panel_rects("lr", SPEC.size)
    found = faces_per_panel(frames[::2], rects)
    for panel, per_frame in found.items():
        share = np.mean([len(faces) == 1 for faces in per_frame])
        assert share >= 0.95, f"{panel}: one face in only {share:.0%} of frames"
    for person in truth["participants"]:
        audio, rate = read_wav(corpus / person["audio"])
        envelope = frame_envelope(audio, 25, rate)
        jaw = jaw_open_series(frames, rects[person["panel"]], 25)
        r = np.corrcoef(envelope, jaw)[0, 1]
        assert r > 0.5, f"{person['panel']}: jawOpen vs speech envelope r = {r:.2f}"


def test_the_two_voices_differ_in_pitch(corpus):
    for truth in truths(corpus):
        pitches = [mean_pitch_hz(read_wav(corpus / p["audio"])[0]) for p in truth["participants"]]
        assert max(pitches) / min(pitches) > 1.15, pitches
        assert len({p["voice"] for p in truth["participants"]}) == 2


def test_participants_recombine_into_disjoint_pairs():
    from responsenet.synth.participants import make_pairs, participant_pool

    pool = participant_pool(["astronaut", "photo-b.png"])
    pairs = make_pairs(np.random.default_rng(3), pool)
    ids = [p.id for pair in pairs for p in pair]
    assert len(ids) == len(set(ids)) == len(pool)  # everyone in exactly one pair
    assert all(a.voice != b.voice for a, b in pairs)
    assert sum(a.face != b.face for a, b in pairs) >= len(pairs) - 1  # mixed faces when possible


def test_manifest_lists_every_conversation_with_roles_and_participants(corpus):
    entries = load_manifest(corpus / "manifest.yaml")
    assert [e.id for e in entries] == [conversation_id(SPEC.seed, i) for i in range(SPEC.n)]
    for entry, truth in zip(entries, truths(corpus)):
        assert Path(entry.path) == (corpus / f"{truth['id']}.mp4").resolve()
        people = {p["panel"]: p for p in truth["participants"]}
        assert entry.roles == {k: v["role"] for k, v in people.items()}
        assert entry.participants == {k: v["participant_id"] for k, v in people.items()}


def test_noise_keeps_the_mixture_unclipped_and_cut_is_recorded(tmp_path):
    spec = SynthSpec(n=1, seed=5, duration=8.0, size=(320, 180), snr_db=0.0, cut=True)
    synthesize(tmp_path, spec, progress=False)
    truth = read_truth(tmp_path / f"{conversation_id(5, 0)}.truth.json")
    assert truth["noise_snr_db"] == 0.0 and len(truth["cuts"]) == 1
    assert 0.3 * 8 < truth["cuts"][0] < 0.7 * 8
    voices = [read_wav(tmp_path / p["audio"])[0] for p in truth["participants"]]
    assert max(np.abs(v).max() for v in voices) <= 0.98 + 1e-4


def test_synth_section_in_a_manifest_generates_on_first_use(tmp_path):
    manifest = tmp_path / "demo.yaml"
    manifest.write_text(yaml.safe_dump({"synth": {
        "folder": "data", "n": 1, "seed": 3, "duration": 8, "size": "320x180"}}))
    entries = load_manifest(manifest)
    assert [e.id for e in entries] == ["synth-s3-000"]
    assert Path(entries[0].path).is_file()
    manifest.write_text(yaml.safe_dump({"synth": {"folder": "data", "colour": "red"}}))
    with pytest.raises(Exception, match="colour"):
        load_manifest(manifest)


def test_cli_writes_a_corpus_and_refuses_bad_options(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["synth", "--out", str(tmp_path), "--n", "1", "--seed", "9",
                                 "--duration", "8", "--size", "320x180", "--layout", "tb", "-q"])
    assert result.exit_code == 0, result.output
    truth = json.loads((tmp_path / "synth-s9-000.truth.json").read_text())
    assert [p["panel"] for p in truth["participants"]] == ["top", "bottom"]
    assert (tmp_path / "synth-s9-000.top.wav").is_file()
    for bad in (["--size", "320by180"], ["--duration", "3"], ["--layout", "diagonal"],
                ["--n", "0"]):
        result = runner.invoke(app, ["synth", "--out", str(tmp_path / "x"), *bad])
        assert result.exit_code == 2, (bad, result.output)
