"""Real-media dyadic cases: the composed video, audio and faces agree with their truth.json."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from responsenet.media import probe, require_tool
from responsenet.synth.faces import face_landmarker
from responsenet.testing import _compose as C
from responsenet.testing import realmedia as rm

PANEL = 320  # pixels per square panel in these tests (lr 640x320, tb 320x640): keeps them fast
HOP_S = 0.04  # audio energy frame, seconds
FACE_CASES = ("rm_lr_sadtalker", "rm_tb_videoretalking", "rm_lr_speech")


# ---- pure planning: no media needed ---------------------------------------------------------

def _spans(turns, who):
    return [(a, b) for w, a, b in turns if w == who]


def test_default_schedule_has_overlap_backchannel_and_gap():
    turns = C.snap_turns(rm.DEFAULT_TURNS, 25)
    p0, p1 = _spans(turns, 0), _spans(turns, 1)
    overlap = max(min(b0, b1) - max(a0, a1) for a0, b0 in p0 for a1, b1 in p1) / 25
    assert overlap >= 0.3
    backchannels = [(a, b) for a, b in p1 if any(a0 < a and b < b0 for a0, b0 in p0)]
    assert [(b - a) / 25 for a, b in backchannels] == [pytest.approx(0.52)]
    edges = sorted(turns, key=lambda t: t[1])
    gaps = [(nxt[1] - max(t[2] for t in edges[:i + 1])) / 25 for i, nxt in enumerate(edges[1:])]
    assert max(gaps) >= 0.4
    assert sum(b - a for a, b in p0) > sum(b - a for a, b in p1)


def test_panel_segments_play_resume_and_freeze():
    segments = C.panel_segments([(10, 20), (30, 35)], 40)
    assert segments == [("hold", 0, 10), ("play", 0, 10), ("hold", 9, 10), ("play", 10, 5),
                        ("hold", 14, 5)]
    assert sum(n for _, _, n in segments) == 40
    assert C.panel_segments([], 7) == [("hold", 0, 7)]


def test_stretch_turn_moves_later_turns_and_keeps_backchannel():
    turns = [(0, 10, 90), (1, 40, 53), (1, 80, 150), (0, 165, 225)]
    out = C.stretch_turn(turns, 0, 275, 25)
    assert out == [(0, 10, 285), (1, 40, 53), (1, 275, 345), (0, 360, 420)]


@pytest.mark.parametrize("turns, message", [
    ([(2, 0.0, 1.0)], "participant must be 0 or 1"),
    ([(0, 1.0, 1.0)], "expected 0 <= start < end"),
    ([(0, 0.0, 2.0), (0, 1.0, 3.0)], "participant 0 has overlapping turns"),
])
def test_snap_turns_rejects_bad_turns(turns, message):
    with pytest.raises(ValueError, match=message):
        C.snap_turns(turns, 25)


def test_known_text_strips_suffixes(tmp_path):
    (tmp_path / "jfk.txt").write_text("Ask not.\n", encoding="utf-8")
    assert rm.known_text(tmp_path / "jfk_16k_mono.wav") == "Ask not."
    assert rm.known_text(tmp_path / "other.wav") is None


def test_require_realmedia_skips_with_reason(monkeypatch, tmp_path):
    monkeypatch.setenv("RESPONSENET_REALMEDIA", str(tmp_path / "missing"))
    assert rm.realmedia_dir() is None
    with pytest.raises(pytest.skip.Exception, match="real media not found"):
        rm.require_realmedia()


@pytest.mark.parametrize("kwargs, message", [
    ({"layout": "pip"}, "layout must be 'lr' or 'tb'"),
    ({"size": (642, 320)}, "multiples of 4"),
])
def test_compose_rejects_bad_layout_and_size(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        rm.compose_dyadic(tmp_path, "bad", tmp_path / "a.mp4", tmp_path / "b.mp4", **kwargs)


def test_compose_names_a_missing_clip(tmp_path):
    with pytest.raises(FileNotFoundError, match="second: expected a media file"):
        rm.compose_dyadic(tmp_path, "bad", __file__, tmp_path / "missing.mp4")


# ---- composed cases -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    rm.require_realmedia()
    out = tmp_path_factory.mktemp("realmedia")
    paths = rm.standard_cases(out, panel_size=PANEL)
    return {p.stem: (p, json.loads(p.with_suffix(".truth.json").read_text())) for p in paths}


@pytest.fixture(scope="module")
def gray(cases):
    """case id -> uint8 [T, H, W] grey frames of the composed video."""
    cv2 = pytest.importorskip("cv2")
    frames = {}
    for case_id, (mp4, _) in cases.items():
        capture, grey = cv2.VideoCapture(str(mp4)), []
        ok, bgr = capture.read()
        while ok:
            grey.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
            ok, bgr = capture.read()
        capture.release()
        frames[case_id] = np.stack(grey)
    return frames


def _count_frames(mp4) -> int:
    out = subprocess.run([require_tool("ffprobe"), "-v", "error", "-count_frames", "-select_streams",
                          "v:0", "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0",
                          str(mp4)], capture_output=True, text=True, check=True).stdout
    return int(out.strip())


def test_standard_cases_are_made_once(cases):
    mp4 = next(iter(cases.values()))[0]
    before = mp4.stat().st_mtime_ns
    assert rm.standard_cases(mp4.parent, panel_size=PANEL) == [p for p, _ in cases.values()]
    assert mp4.stat().st_mtime_ns == before


@pytest.mark.parametrize("case_id", list(rm.STANDARD_CASES))
def test_frames_duration_and_streams_match_truth(cases, case_id):
    mp4, truth = cases[case_id]
    info = probe(mp4)
    assert _count_frames(mp4) == round(truth["duration"] * 25) == truth["n_frames"]
    assert info.duration == pytest.approx(truth["duration"], abs=0.05)
    assert (info.fps, info.variable_fps, info.video_codec) == (25.0, False, "h264")
    assert (info.width, info.height) == tuple(truth["size"])
    assert (info.sample_rate, info.channels) == (rm.SAMPLE_RATE, 1)


@pytest.mark.parametrize("case_id", list(rm.STANDARD_CASES))
def test_truth_format(cases, case_id):
    mp4, truth = cases[case_id]
    text = mp4.with_suffix(".truth.json").read_text()
    assert text == json.dumps(truth, sort_keys=True, indent=2) + "\n"
    assert (truth["source"], truth["cuts"], truth["noise_snr_db"]) == ("realmedia", [], None)
    rects = rm.panel_rects(truth["layout"], truth["size"])
    for person, (x0, y0, w, h) in zip(truth["participants"], rects):
        assert person["participant_id"] == f"rm-{person['face']}"
        assert person["words"] == [] and person["head_pose"] is None
        x, y, bw, bh = person["box"]
        assert x0 <= x and y0 <= y and x + bw <= x0 + w and y + bh <= y0 + h
        assert (mp4.parent / person["audio"]).is_file()
        assert all(0 <= a < b <= truth["duration"] for a, b in person["speech"])


@pytest.mark.parametrize("case_id", list(rm.STANDARD_CASES))
def test_speaker_speaks_longer(cases, case_id):
    people = cases[case_id][1]["participants"]
    talk = {p["role"]: sum(b - a for a, b in p["speech"]) for p in people}
    assert sorted(talk) == ["listener", "speaker"] and talk["speaker"] > talk["listener"]


def test_speech_over_text_is_known(cases):
    truth = cases["rm_lr_speech"][1]
    jfk = (rm.realmedia_dir() / "speech" / "jfk.txt").read_text(encoding="utf-8").strip()
    first = truth["participants"][0]
    assert (first["text"], first["voice"]) == (jfk, "jfk_16k_mono")
    start, end = first["text_span"]
    assert first["speech"][0] == [start, end] and end - start == pytest.approx(11.0, abs=0.04)
    assert truth["participants"][1]["text"] is None


def _dbfs_per_hop(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    hop = int(HOP_S * sample_rate)
    frames = samples[: len(samples) // hop * hop].reshape(-1, hop).astype(np.float64)
    return 10 * np.log10((frames ** 2).mean(axis=1) + 1e-12)


def _silent_gaps(truth) -> list[tuple[float, float]]:
    spans = sorted(s for p in truth["participants"] for s in p["speech"])
    gaps, covered = [], 0.0
    for a, b in [*spans, (truth["duration"], truth["duration"])]:
        if a - covered >= 0.4 - 1e-9:
            gaps.append((covered, a))
        covered = max(covered, b)
    return gaps


@pytest.mark.parametrize("case_id", list(rm.STANDARD_CASES))
def test_audio_energy_follows_speech_spans(cases, case_id):
    mp4, truth = cases[case_id]
    db = _dbfs_per_hop(C.read_audio(mp4, rm.SAMPLE_RATE), rm.SAMPLE_RATE)
    def inner(a, b):
        return db[int(np.ceil(a / HOP_S)) + 1: int(b / HOP_S) - 1]
    for person in truth["participants"]:
        for a, b in person["speech"]:
            span = inner(a, b)
            assert (span > -45).mean() >= 0.5, f"{person['panel']} {a}-{b} s: {span.round()}"
            assert 10 * np.log10(np.mean(10 ** (span / 10))) > -35
    gaps = _silent_gaps(truth)
    assert gaps, "the schedule needs at least one 0.4 s stretch where nobody speaks"
    for a, b in gaps:
        assert inner(a, b).max() < -60, f"gap {a}-{b} s is not silent"


def _exclusive_stretch(truth, who: int) -> tuple[int, int]:
    """Longest frame range where participant ``who`` speaks and the other is silent."""
    fps, people = truth["fps"], truth["participants"]
    talking = np.zeros((2, truth["n_frames"]), bool)
    for i, person in enumerate(people):
        for a, b in person["speech"]:
            talking[i, round(a * fps): round(b * fps)] = True
    only = talking[who] & ~talking[1 - who]
    edges = np.flatnonzero(np.diff(np.r_[0, only.astype(int), 0]))
    return max(zip(edges[::2], edges[1::2]), key=lambda r: r[1] - r[0])


@pytest.mark.parametrize("case_id", list(rm.STANDARD_CASES))
def test_silent_panel_is_frozen_while_speaker_moves(cases, gray, case_id):
    truth = cases[case_id][1]
    rects = rm.panel_rects(truth["layout"], truth["size"])
    for who in (0, 1):
        start, end = _exclusive_stretch(truth, who)
        clip = gray[case_id][start + 1: end - 1].astype(np.int16)
        change = []
        for x, y, w, h in rects:
            panel = clip[:, y:y + h, x:x + w]
            change.append(np.abs(np.diff(panel, axis=0)).mean(axis=(1, 2)))
        speaking, frozen = change[who], change[1 - who]
        # H.264 refines a just-frozen panel for a few frames (mean change <= ~0.3 grey levels),
        # then it stays within ~0.01 of itself; a talking head changes by 0.3 to 8 per frame.
        assert np.median(frozen) < 0.05 and frozen.max() < 0.5, \
            f"{case_id}: frozen panel {1 - who} changes: {frozen.round(3)}"
        assert speaking.mean() > max(0.2, 10 * np.median(frozen)), \
            f"{case_id}: speaking panel {who} barely changes: {speaking.mean()}"


@pytest.mark.parametrize("case_id", FACE_CASES)
def test_one_face_per_panel(cases, case_id):
    cv2 = pytest.importorskip("cv2")
    pytest.importorskip("mediapipe")
    mp4, truth = cases[case_id]
    rects = rm.panel_rects(truth["layout"], truth["size"])
    hits, sampled = np.zeros(2), 0
    capture = cv2.VideoCapture(str(mp4))
    with face_landmarker(2) as landmarker:
        for index in range(truth["n_frames"]):
            ok, bgr = capture.read()
            if not ok or index % 5:
                continue
            found = rm.panel_face_boxes(landmarker, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), rects)
            hits += [len(boxes) == 1 for boxes in found]
            sampled += 1
    capture.release()
    assert sampled == len(range(0, truth["n_frames"], 5))
    assert (hits / sampled >= 0.95).all(), f"{case_id}: one-face rate per panel {hits / sampled}"


@pytest.mark.parametrize("case_id", list(rm.STANDARD_CASES))
def test_clean_voices_add_up_to_the_mix(cases, case_id):
    mp4, truth = cases[case_id]
    voices = [C.read_audio(mp4.parent / p["audio"], rm.SAMPLE_RATE) for p in truth["participants"]]
    assert all(len(v) == round(truth["duration"] * rm.SAMPLE_RATE) for v in voices)
    mix = C.read_audio(mp4, rm.SAMPLE_RATE)[: len(voices[0])]
    residual = mix - (voices[0] + voices[1])[: len(mix)]
    snr_db = 10 * np.log10(np.sum(mix ** 2) / np.sum(residual ** 2))
    assert snr_db > 10, f"{case_id}: mix differs from the sum of the clean voices ({snr_db:.1f} dB)"
