"""The segment stage on generated videos whose cut times, frame rates and streams are known."""

from __future__ import annotations

import json
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from responsenet.build import cuts
from responsenet.build.cuts import frame_distances
from responsenet.build.stages import segment
from responsenet.build.stages.base import StageContext, StageResult
from responsenet.build.stages.segment import SegmentConfig, SegmentStage
from responsenet.errors import StageFailure
from responsenet.manifest import SourceEntry
from responsenet.testing.media import (
    make_shots_video,
    make_vfr_video,
    make_video,
    shot_frames,
    truncate,
)

FPS = 25
THREE_SHOTS = (("testsrc2", 3.0), ("smptebars", 2.5), ("rgbtestsrc", 3.0))


def run_segment(media: Path, out: Path, *, source_id: str = "src", range_applied=None,
                **overrides) -> dict:
    """Run SegmentStage on ``media`` as the download stage would hand it over."""
    source_keys = {k: overrides.pop(k) for k in ("start", "end") if k in overrides}
    out.mkdir(parents=True)
    ctx = StageContext(
        item_id=source_id, source=SourceEntry(id=source_id, path=str(media), **source_keys),
        config=SegmentConfig(**overrides), out_dir=out,
        inputs={"download": StageResult(dir=media.parent, fingerprint="x",
                                        meta={"file": media.name, "range_applied": range_applied})})
    return SegmentStage().run(ctx)


def stream_facts(path: Path) -> dict:
    """ffprobe's decoded frame count and rates of the first video stream."""
    proc = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
                           "-show_entries", ("stream=nb_read_frames,r_frame_rate,avg_frame_rate,"
                           "codec_name,pix_fmt,start_time,duration"), "-show_entries", "format=nb_streams",
                           "-of", "json", str(path)], capture_output=True, text=True, check=True)
    data = json.loads(proc.stdout)
    return {**data["streams"][0], "nb_streams": data["format"]["nb_streams"]}


def read_wav(path: Path) -> tuple[np.ndarray, tuple[int, int, int]]:
    """int16 samples and (channels, sample width in bytes, rate)."""
    with wave.open(str(path)) as f:
        params = (f.getnchannels(), f.getsampwidth(), f.getframerate())
        return np.frombuffer(f.readframes(f.getnframes()), "<i2"), params


def thumbnails(path: Path) -> np.ndarray:
    """uint8 [T, 36, 64, 3] frames of a video, decoded by ffmpeg."""
    proc = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-vf", "scale=64:36:flags=area",
                           "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True,
                          check=True)
    return np.frombuffer(proc.stdout, np.uint8).reshape(-1, 36, 64, 3)


def grey_frames(path: Path, *input_args: str, vf: str = "null") -> np.ndarray:
    """uint8 [T, H, W] full-size grey frames of a 160x90 video, decoded by ffmpeg."""
    proc = subprocess.run(["ffmpeg", "-v", "error", *input_args, "-i", str(path), "-vf", vf,
                           "-f", "rawvideo", "-pix_fmt", "gray", "-"], capture_output=True,
                          check=True)
    return np.frombuffer(proc.stdout, np.uint8).reshape(-1, 90, 160)


def assert_clips_hold_their_frames(media: Path, meta: dict, out: Path, *input_args: str) -> None:
    """Frame k of each clip is frame start_frame + k of the CFR stream (built here independently):
    it matches that frame better than the stream's frames just before and after it."""
    stream = grey_frames(media, *input_args, vf=f"fps={FPS}:start_time=0").astype(np.int16)
    assert len(stream) == meta["n_frames"]
    for clip in meta["clips"]:
        got = grey_frames(out / clip["video"]).astype(np.int16)
        first, n = clip["start_frame"], clip["n_frames"]
        assert len(got) == n, clip["clip_id"]
        errors = [np.abs(got - stream[first + shift : first + shift + n]).mean(axis=(1, 2))
                  for shift in (-1, 0, 1) if 0 <= first + shift and first + shift + n <= len(stream)]
        best = np.argmin(errors, axis=0)
        assert (best == (1 if first > 0 else 0)).all(), (clip["clip_id"], np.flatnonzero(best))


def failure(media: Path, out: Path, **kwargs) -> StageFailure:
    with pytest.raises(StageFailure) as info:
        run_segment(media, out, **kwargs)
    return info.value


@pytest.fixture(scope="module")
def three_shots(tmp_path_factory):
    """(meta, out_dir) for 3 shots of 3 s, 2.5 s (62 frames), 3 s; middle shot silent."""
    folder = tmp_path_factory.mktemp("three")
    media = make_shots_video(folder / "shots.mp4", THREE_SHOTS, fps=FPS, tone_hz=[440, 0, 880])
    return run_segment(media, folder / "out"), folder / "out"


def test_cuts_found_within_one_frame(three_shots):
    meta, _ = three_shots
    truth = np.cumsum(shot_frames(THREE_SHOTS, FPS))[:-1]  # [75, 137]
    assert len(meta["cut_frames"]) == len(truth)
    assert np.abs(np.array(meta["cut_frames"]) - truth).max() <= 1
    np.testing.assert_allclose(meta["cuts"], truth / FPS, atol=1 / FPS + 1e-9)


def test_clips_have_stable_ids_and_exact_lengths(three_shots):
    meta, out = three_shots
    assert [c["clip_id"] for c in meta["clips"]] == ["src_000", "src_001", "src_002"]
    assert [c["n_frames"] for c in meta["clips"]] == shot_frames(THREE_SHOTS, FPS)
    for clip in meta["clips"]:
        facts = stream_facts(out / clip["video"])
        assert int(facts["nb_read_frames"]) == clip["n_frames"]
        assert facts["r_frame_rate"] == facts["avg_frame_rate"] == "25/1"
        assert float(facts["start_time"]) == 0.0
        assert float(facts["duration"]) == pytest.approx(clip["n_frames"] / FPS)
        assert (facts["codec_name"], facts["pix_fmt"], facts["nb_streams"]) == ("h264", "yuv420p", 1)
        samples, params = read_wav(out / clip["audio"])
        assert params == (1, 2, 16000)
        assert len(samples) == clip["n_frames"] * 640
        assert clip["duration"] == pytest.approx(clip["n_frames"] / FPS)
    assert meta["dropped"] == []
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["distances.npy"] + [c[k] for c in meta["clips"] for k in ("video", "audio")])


def test_clip_frames_belong_to_one_shot(three_shots):
    # One frame too many or too few at either end would show a cut inside a clip.
    meta, out = three_shots
    for clip in meta["clips"]:
        assert frame_distances(thumbnails(out / clip["video"])).max() < 0.1, clip["clip_id"]


def test_audio_stays_aligned_with_video(three_shots):
    meta, _ = three_shots
    quality = [c["quality"] for c in meta["clips"]]
    assert [q["silent_fraction"] for q in quality] == [0.0, 1.0, 0.0]
    assert quality[0]["rms_dbfs"] == pytest.approx(-24.1, abs=1.0)  # sine at 1/8 full scale
    assert quality[1]["rms_dbfs"] < -60
    assert all(q["black_fraction"] == 0.0 and q["mean_luma"] > 30 for q in quality)
    assert quality[0]["source_fps"] == 25 and quality[0]["source_variable_fps"] is False
    assert (quality[0]["source_width"], quality[0]["source_height"]) == (160, 90)


def test_short_middle_shot_is_dropped(tmp_path):
    shots = (("testsrc2", 3.0), ("smptebars", 1.0), ("rgbtestsrc", 3.0))
    meta = run_segment(make_shots_video(tmp_path / "s.mp4", shots, fps=FPS), tmp_path / "out",
                       min_clip_seconds=2.0)
    assert [c["clip_id"] for c in meta["clips"]] == ["src_000", "src_001"]
    assert [c["index"] for c in meta["clips"]] == [0, 1]
    assert [(c["start"], c["end"]) for c in meta["clips"]] == [(0.0, 3.0), (4.0, 7.0)]
    assert meta["dropped"] == [{"start": 3.0, "end": 4.0, "start_frame": 75, "n_frames": 25,
                                "reason": "too_short"}]


def test_clips_around_dropped_and_split_shots_hold_exactly_their_frames(tmp_path):
    # Moving pattern (every frame differs) on both sides of a dropped 1 s shot; both long shots
    # are split in two, so clips start right after a dropped span and inside a shot.
    shots = (("testsrc2", 3.0), ("smptebars", 1.0), ("testsrc2", 3.0))
    media = make_shots_video(tmp_path / "s.mp4", shots, fps=FPS)
    meta = run_segment(media, tmp_path / "out", min_clip_seconds=1.2, max_clip_seconds=2.4)
    assert [(c["start_frame"], c["n_frames"]) for c in meta["clips"]] == [
        (0, 38), (38, 37), (100, 38), (138, 37)]
    assert [(d["start_frame"], d["n_frames"]) for d in meta["dropped"]] == [(75, 25)]
    assert_clips_hold_their_frames(media, meta, tmp_path / "out")


def test_clips_of_a_manifest_range_hold_exactly_their_frames(tmp_path):
    media = make_video(tmp_path / "v.mp4", duration=6.0, size=(160, 90))
    meta = run_segment(media, tmp_path / "out", start=0.52, end=5.0, min_clip_seconds=1.0,
                       max_clip_seconds=2.0)
    assert [c["n_frames"] for c in meta["clips"]] == [38, 37, 37]
    assert_clips_hold_their_frames(media, meta, tmp_path / "out", "-ss", "0.520000", "-t",
                                   "4.480000")


def test_wrong_frame_count_in_a_written_clip_is_ffmpeg_failed(tmp_path, monkeypatch):
    monkeypatch.setattr(segment, "_frame_count", lambda path: 7)
    err = failure(make_video(tmp_path / "v.mp4", duration=3.0, size=(160, 90)), tmp_path / "out",
                  source_id="odd")
    assert err.reason == "ffmpeg_failed"
    assert "odd_000" in err.message and "expected 75 frames" in err.message


@pytest.mark.parametrize(("spans", "runs", "ends"), [
    ([(0, 75)], [(0, 75)], [75]),
    ([(0, 75), (75, 137), (150, 200)], [(0, 137), (150, 200)], [75, 137, 187]),
    ([(10, 20), (30, 40)], [(10, 20), (30, 40)], [10, 20]),
])
def test_kept_spans_packed_for_one_encode(spans, runs, ends):
    # Pure math of the single encode (responsenet.build.cuts): runs to select, file boundaries.
    assert cuts.merge_adjacent(spans) == runs
    assert cuts.packed_ends(spans) == ends


def test_30_fps_source_becomes_25_fps(tmp_path):
    meta = run_segment(make_video(tmp_path / "v.mp4", duration=3.0, fps=30, size=(160, 90)),
                       tmp_path / "out")
    (clip,) = meta["clips"]
    assert meta["source_probe"]["fps"] == 30 and clip["quality"]["source_fps"] == 30
    assert abs(clip["n_frames"] - 75) <= 1
    facts = stream_facts(tmp_path / "out" / clip["video"])
    assert int(facts["nb_read_frames"]) == clip["n_frames"]
    assert facts["avg_frame_rate"] == "25/1"


def test_vfr_source_becomes_cfr_with_its_duration(tmp_path):
    media = make_vfr_video(tmp_path / "vfr.mp4", duration=4.0, fps=30)
    meta = run_segment(media, tmp_path / "out")
    assert meta["source_probe"]["variable_fps"] is True
    assert meta["cuts"] == [] and len(meta["clips"]) == 1
    (clip,) = meta["clips"]
    assert clip["quality"]["source_variable_fps"] is True
    assert abs(clip["duration"] - 4.0) <= 1 / FPS + 1e-9
    facts = stream_facts(tmp_path / "out" / clip["video"])
    assert facts["r_frame_rate"] == facts["avg_frame_rate"] == "25/1"
    assert int(facts["nb_read_frames"]) == clip["n_frames"]


def test_manifest_range_is_applied(tmp_path):
    media = make_shots_video(tmp_path / "s.mp4", THREE_SHOTS, fps=FPS)
    meta = run_segment(media, tmp_path / "out", start=0.4, end=8.0)
    assert_trimmed_0_4_to_8(meta)


def test_range_applied_by_download_is_not_applied_again(tmp_path):
    # The download already cut 0.4 s .. 8.0 s of the three-shot video: 65, 62, 63 frames.
    pre_cut = (("testsrc2", 2.6), ("smptebars", 2.48), ("rgbtestsrc", 2.52))
    media = make_shots_video(tmp_path / "s.mp4", pre_cut, fps=FPS)
    meta = run_segment(media, tmp_path / "out", start=0.4, end=8.0, range_applied=[0.4, 8.0])
    assert_trimmed_0_4_to_8(meta)


def assert_trimmed_0_4_to_8(meta: dict) -> None:
    assert meta["n_frames"] == 190 and meta["range"] == [0.4, 8.0]
    np.testing.assert_allclose(meta["cuts"], [3.0, 5.48], atol=1 / FPS + 1e-9)
    assert [c["n_frames"] for c in meta["clips"]] == [65, 62, 63]
    assert meta["clips"][0]["start"] == 0.4 and meta["clips"][-1]["end"] == 8.0


def test_long_shot_split_into_near_equal_pieces(tmp_path):
    meta = run_segment(make_video(tmp_path / "v.mp4", duration=5.0, size=(160, 90)),
                       tmp_path / "out", min_clip_seconds=1.0, max_clip_seconds=2.0)
    assert [c["n_frames"] for c in meta["clips"]] == [42, 42, 41]
    assert [c["clip_id"] for c in meta["clips"]] == ["src_000", "src_001", "src_002"]
    assert [c["start_frame"] for c in meta["clips"]] == [0, 42, 84]


def test_only_shot_too_short(tmp_path):
    err = failure(make_video(tmp_path / "v.mp4", duration=1.6, size=(160, 90)), tmp_path / "out",
                  source_id="tiny")
    assert err.reason == "too_short"
    assert "tiny" in err.message and "1.60 s" in err.message and "min_clip_seconds=2.0" in err.message


def test_audio_only_is_no_video(tmp_path):
    media = make_video(tmp_path / "a.m4a", duration=3.0, video=False)
    assert failure(media, tmp_path / "out").reason == "no_video"


def test_video_only_is_no_audio(tmp_path):
    media = make_video(tmp_path / "v.mp4", duration=3.0, size=(160, 90), audio=False)
    err = failure(media, tmp_path / "out", source_id="mute")
    assert err.reason == "no_audio" and "mute" in err.message


def test_truncated_mp4_is_corrupt(tmp_path):
    media = truncate(make_video(tmp_path / "v.mp4", duration=3.0, size=(160, 90)),
                     tmp_path / "t.mp4", keep_fraction=0.5)
    assert failure(media, tmp_path / "out").reason == "corrupt_media"


def test_file_that_stops_decoding_midway_is_corrupt(tmp_path):
    # Matroska records the duration in its header, so the probe succeeds on the truncated
    # file and the damage only shows while decoding.
    media = truncate(make_video(tmp_path / "v.mkv", duration=6.0, size=(160, 90)),
                     tmp_path / "t.mkv", keep_fraction=0.5)
    err = failure(media, tmp_path / "out", source_id="half")
    assert err.reason == "corrupt_media" and "half" in err.message


def test_range_outside_media(tmp_path):
    media = make_video(tmp_path / "v.mp4", duration=3.0, size=(160, 90))
    assert failure(media, tmp_path / "out", start=10.0).reason == "bad_range"


def test_config_rejects_max_below_twice_min():
    with pytest.raises(ValidationError, match="at least twice"):
        SegmentConfig(min_clip_seconds=2.0, max_clip_seconds=3.0)
    with pytest.raises(ValidationError):
        SegmentConfig(unknown_key=1)
    assert SegmentConfig(min_clip_seconds=2.0, max_clip_seconds=4.0).max_frames == 100


def test_cut_in_one_panel_of_real_split_screen(shared_dir, tmp_path):
    # Left panel: one real talking head throughout; right panel: another person for 4 s, then a
    # third (a camera cut inside one panel only, at frame 100).
    heads = shared_dir / "realmedia" / "talking_head"
    inputs = ["sadtalker_WDA_AlexandriaOcasioCortez_000.mp4", "videoretalking_face_3.mp4",
              "videoretalking_face_5.mp4"]
    args = [a for name in inputs for a in ("-i", str(heads / name))]
    graph = ("[0:v]fps=25,scale=128:128,trim=end_frame=200,setpts=PTS-STARTPTS[l];"
             "[1:v]fps=25,scale=128:128,trim=end_frame=100,setpts=PTS-STARTPTS[r1];"
             "[2:v]fps=25,scale=128:128,trim=end_frame=100,setpts=PTS-STARTPTS[r2];"
             "[r1][r2]concat=n=2:v=1:a=0[r];[l][r]hstack[v]")
    media = tmp_path / "split.mp4"
    subprocess.run(["ffmpeg", "-v", "error", *args, "-filter_complex", graph, "-map", "[v]",
                    "-map", "0:a", "-t", "8", "-c:v", "libx264", "-preset", "ultrafast",
                    "-pix_fmt", "yuv420p", "-c:a", "aac", str(media)], check=True)
    meta = run_segment(media, tmp_path / "out")
    assert len(meta["cut_frames"]) == 1 and abs(meta["cut_frames"][0] - 100) <= 1
    assert [c["n_frames"] for c in meta["clips"]] == [100, 100]
    distances = np.load(tmp_path / "out" / "distances.npy")
    inside = np.delete(distances, meta["cut_frames"])
    assert distances[meta["cut_frames"][0]] > 2 * SegmentConfig().cut_threshold > 4 * inside.max()


# --- reencode: when_cut (a source that gives one clip keeps no clip video) ----------------------
def _decoded_clip(out: Path, clip: dict) -> np.ndarray:
    from responsenet.media import decode_frames

    return np.stack(list(decode_frames(**segment.clip_decode(out, clip))))


@pytest.mark.parametrize("case", ["vfr", "range", "rotated_30fps"])
def test_a_single_clip_decoded_from_its_source_holds_the_frames_segment_would_encode(
        tmp_path, case):
    """The source through the clip's ``decode`` recipe gives exactly the frames that 'always'
    encodes: compared with a lossless (crf 0) encode of the same clip."""
    if case == "vfr":
        media, kwargs = make_vfr_video(tmp_path / "s.mp4", duration=4.0, fps=30), {}
    elif case == "range":
        media, kwargs = make_video(tmp_path / "s.mp4", duration=6.0, size=(160, 90)), {
            "start": 0.52, "end": 5.0}
    else:  # stored sideways at 30 fps with a display matrix that turns it upright
        good = make_video(tmp_path / "good.mp4", duration=3.0, size=(160, 90), fps=30)
        sideways, media, kwargs = tmp_path / "sideways.mp4", tmp_path / "s.mp4", {}
        subprocess.run(["ffmpeg", "-v", "error", "-i", str(good), "-vf", "transpose=1",
                        "-c:a", "copy", str(sideways)], check=True)
        subprocess.run(["ffmpeg", "-v", "error", "-i", str(sideways), "-c", "copy",
                        "-metadata:s:v:0", "rotate=90", str(media)], check=True)
    lean = run_segment(media, tmp_path / "lean", reencode="when_cut", **kwargs)
    exact = run_segment(media, tmp_path / "exact", crf=0, **kwargs)
    (clip,) = lean["clips"]
    assert clip["video"] is None and list((tmp_path / "lean").glob("*.mp4")) == []
    assert {k: v for k, v in clip.items() if k not in ("video", "decode")} == \
        {k: v for k, v in exact["clips"][0].items() if k != "video"}
    frames = _decoded_clip(tmp_path / "lean", clip)
    reference = _decoded_clip(tmp_path / "exact", exact["clips"][0])
    assert frames.shape == reference.shape and len(frames) == clip["n_frames"]
    assert tuple(clip["decode"]["size"]) == (frames.shape[2], frames.shape[1])
    np.testing.assert_array_equal(frames, reference)


def test_when_cut_still_encodes_each_clip_of_a_source_with_cuts(tmp_path):
    media = make_shots_video(tmp_path / "shots.mp4", THREE_SHOTS, fps=FPS)
    meta = run_segment(media, tmp_path / "out", reencode="when_cut")
    assert len(meta["clips"]) == 3
    assert all(c["video"] == f"{c['clip_id']}.mp4" and "decode" not in c for c in meta["clips"])
    assert [int(stream_facts(tmp_path / "out" / c["video"])["nb_read_frames"])
            for c in meta["clips"]] == [c["n_frames"] for c in meta["clips"]] == [75, 62, 75]
