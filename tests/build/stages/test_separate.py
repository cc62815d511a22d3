"""Stage separate (avgate) through the runner, against synthetic and real-media truth."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("cv2", reason="the synth extra (opencv) is needed")
pytest.importorskip("mediapipe", reason="MediaPipe gives the mouth activity")
pytest.importorskip("onnxruntime", reason="Silero VAD runs on onnxruntime (extra 'asr')")
for _tool in ("ffmpeg", "ffprobe", "espeak-ng"):
    if shutil.which(_tool) is None:
        pytest.skip(f"{_tool} not on PATH (make system-deps)", allow_module_level=True)

from responsenet.build.pipeline import build
from responsenet.build.workspace import Workspace
from responsenet.errors import StageFailure
from responsenet.separation.assign import frame_loudness, si_sdr
from responsenet.synth.generate import SynthSpec, synthesize
from responsenet.synth.truth import read_truth
from responsenet.testing import realmedia as rm
from responsenet.wavio import read_wav

STAGES = "download,segment,crop,face,separate"
FAST = ["crop.size=256", "crop.preset=ultrafast", "crop.detect_every=2"]


def routed_share(gains: np.ndarray, references: list[np.ndarray]) -> float:
    """Share of each voice's energy (where only it sounds) whose frame routes it to its own
    channel (gain of its track above the other's)."""
    n_frames = gains.shape[1]
    energy = [10 ** (frame_loudness(r, n_frames, 25, 16000) / 10) for r in references]
    sounding = [e > 1e-6 for e in energy]
    right = total = 0.0
    for k in (0, 1):
        alone = sounding[k] & ~sounding[1 - k]
        right += float(np.sum(energy[k][alone] * (gains[k][alone] > gains[1 - k][alone])))
        total += float(energy[k][alone].sum())
    return right / total


def run(manifest: Path, out: Path):
    report = build(manifest, out, STAGES, overrides=FAST, progress=False)
    return report, Workspace(out)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("separate-synth")
    manifest = synthesize(root / "src", SynthSpec(n=3, seed=4, duration=10.0, size=(480, 270)),
                          progress=False)
    report, ws = run(manifest, root / "out")
    return root / "src", report, ws


def test_synthetic_voices_land_in_their_own_face_tracks(synthetic):
    src, report, ws = synthetic
    assert report.stages["separate"].done == 3 and not report.failures
    shares, gains_db = [], []
    for i in range(3):
        clip_id = f"synth-s4-{i:03d}_000"
        truth = read_truth(src / f"synth-s4-{i:03d}.truth.json")
        meta = ws.read_result("clip", clip_id, "separate")["meta"]
        folder = ws.output_dir("clip", clip_id, "separate")
        references = [read_wav(src / p["audio"])[0] for p in truth["participants"]]
        shares.append(routed_share(np.load(folder / "gains.npy"), references))
        mixture = read_wav(ws.output_dir("source", f"synth-s4-{i:03d}", "segment")
                           / f"{clip_id}.wav")[0]
        both = (np.abs(references[0]) > 0) & (np.abs(references[1]) > 0)
        for track, reference in zip(meta["tracks"], references):
            assert track["track"] in ("left", "right")
            channel = read_wav(folder / track["audio"])[0]
            keep = ~both  # where the voices do not overlap
            gains_db.append(si_sdr(channel[keep], reference[keep])
                            - si_sdr(mixture[keep], reference[keep]))
            vad = np.load(folder / track["vad"])
            assert vad.shape == (truth["n_frames"],) and vad.any()
        assert not meta["assignment"]["low_confidence"]
    print(f"routed share {np.round(shares, 4)}, SI-SDR improvement dB {np.round(gains_db, 1)}")
    assert np.mean(shares) >= 0.98 and min(shares) >= 0.9
    assert np.median(gains_db) >= 10 and min(gains_db) > 3


def test_silent_mixture_fails_with_no_speech(tmp_path):
    from responsenet.build.stages.base import StageContext
    from responsenet.build.stages.separate import SeparateConfig, separate_clip
    from responsenet.manifest import SourceEntry

    ctx = StageContext(item_id="c_000", source=SourceEntry(id="c", path="x.mp4"),
                       config=SeparateConfig(), out_dir=tmp_path)
    with pytest.raises(StageFailure) as caught:
        separate_clip(ctx, SeparateConfig(), np.zeros(32000, np.float32), 16000, 25.0, 50,
                      ["left", "right"], [np.zeros(50, np.float32)] * 2)
    assert caught.value.reason == "no_speech"


def test_mossformer2_without_weights_names_the_asset(synthetic, tmp_path, monkeypatch):
    pytest.importorskip("torch", reason="mossformer2 needs torch")
    src, _, _ = synthetic
    monkeypatch.setenv("RESPONSENET_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    manifest = src / "manifest.yaml"
    report = build(manifest, tmp_path / "out", STAGES,
                   overrides=[*FAST, "separate.backend=mossformer2"], progress=False)
    failures = [f for f in report.failures if f["stage"] == "separate"]
    assert len(failures) == 3
    assert {f["reason"] for f in failures} == {"weights_missing"}
    assert "mossformer2" in failures[0]["message"]


def test_real_talking_heads_each_voice_in_its_own_track(tmp_path):
    rm.require_realmedia()
    rm.standard_cases(tmp_path / "cases", panel_size=320)
    case = "rm_lr_sadtalker"
    truth = read_truth(tmp_path / "cases" / f"{case}.truth.json")
    manifest = tmp_path / "m.yaml"
    manifest.write_text(yaml.safe_dump([{"id": case, "path": str(tmp_path / "cases" /
                                                                  f"{case}.mp4")}]))
    report, ws = run(manifest, tmp_path / "out")
    assert report.stages["separate"].done == 1, report.failures
    folder = ws.output_dir("clip", f"{case}_000", "separate")
    references = [read_wav(tmp_path / "cases" / p["audio"])[0] for p in truth["participants"]]
    share = routed_share(np.load(folder / "gains.npy"), references)
    print(f"real media routed share {share:.3f}")
    assert share >= 0.95
