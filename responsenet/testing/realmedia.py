"""Dyadic test cases composed from real talking-head clips, with the composition as ground truth.

``../shared/realmedia`` (see its SOURCES.md) holds real single-person clips and speech files with
known text, but no split-screen conversation. :func:`compose_dyadic` builds one: two clips side by
side (``lr``) or stacked (``tb``); each panel plays its clip (video and audio) during that
participant's turns and shows a **frozen frame** otherwise (the last frame played; frame 0 before
its first turn). A clip resumes where it paused, so its speech content advances from turn to
turn; a clip shorter than the time it must play **loops** from its start. The two voices are
mixed into one track. ``{case_id}.truth.json`` has the format of ``responsenet synth``'s truth
(see :mod:`responsenet.synth.truth`) with ``"source": "realmedia"``.

Besides the synth keys, a realmedia truth has per participant ``text`` (the transcript of a
``speech_over`` file, else null), ``text_span`` (``[start, end]`` s where that text is spoken, else
null) and ``audio`` (``{case_id}.{panel}.wav``: that participant's clean 16 kHz voice; the two add
up to the mixed track); ``words`` is empty and ``head_pose`` null (unknown for real media), and
``box`` is the MediaPipe face box on frame 0 (the panel rect when none is found). During a
``speech_over`` turn the clip's video keeps playing, so lips do not match that speech.

Default schedule (:data:`DEFAULT_TURNS`, seconds on the 40 ms frame grid; P0 is the speaker)::

    0.0-0.4 silence | P0 0.4-3.6 | P1 backchannel 1.6-2.12 | P1 3.2-6.0 (overlap 3.2-3.6)
    6.0-6.6 silence | P0 6.6-9.0 | 9.0-9.4 silence (TAIL_S)
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

import responsenet
from responsenet.errors import AssetMissing
from responsenet.media import probe
from responsenet.testing import _compose as C

#: (participant, start, end) in seconds on the output timeline.
DEFAULT_TURNS: list[tuple[int, float, float]] = [
    (0, 0.4, 3.6), (1, 1.6, 2.12), (1, 3.2, 6.0), (0, 6.6, 9.0)]
#: Silence after the last turn, in seconds.
TAIL_S = 0.4
#: Sample rate of the mixed AAC track and the per-panel WAVs, in Hz.
SAMPLE_RATE = 16000
DEFAULT_SIZE = {"lr": (1024, 512), "tb": (512, 1024)}

_TH = "talking_head"
#: case id -> (layout, clip of participant 0, clip of participant 1, speech laid over P0 or None)
STANDARD_CASES: dict[str, tuple[str, str, str, str | None]] = {
    "rm_lr_sadtalker": ("lr", f"{_TH}/sadtalker_WDA_AlexandriaOcasioCortez_000.mp4",
                        f"{_TH}/sadtalker_WDA_KatieHill_000.mp4", None),
    "rm_tb_videoretalking": ("tb", f"{_TH}/videoretalking_face_2.mp4",
                             f"{_TH}/videoretalking_face_3.mp4", None),
    "rm_lr_speech": ("lr", f"{_TH}/videoretalking_face_1.mp4", f"{_TH}/videoretalking_face_5.mp4",
                     "speech/jfk_16k_mono.wav"),
}


def realmedia_dir() -> Path | None:
    """The real-media folder: ``$RESPONSENET_REALMEDIA`` if set, else ``<repo>/../shared/realmedia``.

    Returns None when the chosen folder does not exist.
    """
    env = os.environ.get("RESPONSENET_REALMEDIA")
    root = Path(responsenet.__file__).resolve().parents[1]
    folder = Path(env) if env else root.parent / "shared" / "realmedia"
    return folder if folder.is_dir() else None


def require_realmedia() -> Path:
    """:func:`realmedia_dir` for tests: skip the calling test with the reason when it is absent."""
    folder = realmedia_dir()
    if folder is None:
        import pytest

        where = os.environ.get("RESPONSENET_REALMEDIA") or "<repo>/../shared/realmedia"
        pytest.skip(f"real media not found at {where}; set RESPONSENET_REALMEDIA or put "
                    "shared/realmedia beside the repository")
    return folder


def panel_rects(layout: str, size: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """``[x, y, w, h]`` in canvas pixels of panel 0 (left/top) and panel 1 (right/bottom)."""
    from responsenet.facetrack import split_rects

    return list(split_rects(layout, *size).values())


def known_text(speech: Path) -> str | None:
    """The transcript beside a speech file: ``jfk_16k_mono.wav`` -> ``jfk_16k_mono.txt``, then
    ``jfk_16k.txt``, then ``jfk.txt``; None when there is none."""
    parts = speech.stem.split("_")
    for n in range(len(parts), 0, -1):
        candidate = speech.with_name("_".join(parts[:n]) + ".txt")
        if candidate.is_file():
            return candidate.read_text(encoding="utf-8").strip()
    return None


def compose_dyadic(out_dir: str | Path, case_id: str, first: str | Path, second: str | Path, *,
                   layout: str = "lr", turns: list[tuple[int, float, float]] | None = None,
                   speech_over: dict[int, str | Path] | None = None,
                   size: tuple[int, int] | None = None, fps: int = 25) -> Path:
    """Write ``out_dir/{case_id}.mp4``, its ``.truth.json`` and one clean ``.{panel}.wav`` each.

    Args:
        out_dir: output folder (created when missing).
        case_id: file stem and truth ``id``.
        first, second: talking-head clips (video + audio) of participant 0 and 1.
        layout: ``"lr"`` (panel 0 left) or ``"tb"`` (panel 0 top).
        turns: ``(participant, start, end)`` seconds, snapped to the frame grid; default
            :data:`DEFAULT_TURNS`. The video lasts until the last turn's end plus :data:`TAIL_S`.
        speech_over: participant -> speech file whose audio replaces that participant's audio
            during its first turn; the turn then lasts as long as the file and later turns move
            (:func:`_compose.stretch_turn`). Its transcript (:func:`known_text`) goes in ``text``.
        size: canvas ``(width, height)`` in pixels, multiples of 4; default 1024x512 (lr) or
            512x1024 (tb). Each clip keeps its aspect and is padded to its panel.
        fps: frame rate of the constant-rate output.

    Returns:
        The mp4 path: H.264 yuv420p at ``fps``, AAC mono 16 kHz. Raises FileNotFoundError for
        a missing input, ValueError for bad turns/layout/size, StageFailure if ffmpeg fails.
    """
    size = _check_layout(layout, size)
    clips = [_existing(first, "first"), _existing(second, "second")]
    over = {int(k): _existing(v, f"speech_over[{k}]") for k, v in (speech_over or {}).items()}
    if not set(over) <= {0, 1}:
        raise ValueError(f"speech_over keys must be participant 0 or 1, got {sorted(over)}")
    frame_turns = C.snap_turns(turns if turns is not None else DEFAULT_TURNS, fps)
    speech = {i: C.normalize(C.read_audio(p, SAMPLE_RATE), SAMPLE_RATE) for i, p in over.items()}
    frame_turns = _lay_speech(frame_turns, speech, fps)
    n_frames = max(end for _, _, end in frame_turns) + round(TAIL_S * fps)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tracks = []
    for i, clip in enumerate(clips):
        source = C.normalize(C.read_audio(clip, SAMPLE_RATE), SAMPLE_RATE)
        tracks.append(C.voice_track(source, _spans(frame_turns, i), speech.get(i), n_frames, fps,
                                    SAMPLE_RATE))
    mp4 = _render(out_dir, case_id, clips, tracks, frame_turns, layout, size, n_frames, fps)
    truth = _truth(case_id, layout, size, fps, n_frames, clips, over, frame_turns,
                   _face_boxes_first_frame(mp4, layout, size))
    tmp = out_dir / f".{case_id}.truth.json.tmp"
    tmp.write_text(json.dumps(truth, sort_keys=True, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out_dir / f"{case_id}.truth.json")
    return mp4


def _check_layout(layout: str, size: tuple[int, int] | None) -> tuple[int, int]:
    """The canvas size for ``layout``; ValueError for an unknown layout or an odd size."""
    if layout not in C.PANELS:
        raise ValueError(f"layout must be 'lr' or 'tb', got {layout!r}")
    size = tuple(size or DEFAULT_SIZE[layout])
    if len(size) != 2 or any(v <= 0 or v % 4 for v in size):
        raise ValueError(f"size must be (width, height), positive multiples of 4 pixels, "
                         f"got {size}")
    return size


def _lay_speech(turns: list[C.FrameTurn], speech: dict[int, np.ndarray],
                fps: int) -> list[C.FrameTurn]:
    """Stretch each speech_over participant's first turn to its speech's length in frames."""
    for who, samples in speech.items():
        index = next((j for j, t in enumerate(turns) if t[0] == who), None)
        if index is None:
            raise ValueError(f"speech_over[{who}] given but participant {who} has no turn")
        length = max(round(len(samples) / SAMPLE_RATE * fps), 1)
        turns = C.stretch_turn(turns, index, length, fps)
    return turns


def _existing(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: expected a media file, {path} does not exist")
    return path


def _spans(turns: list[C.FrameTurn], who: int) -> list[tuple[int, int]]:
    return [(a, b) for w, a, b in turns if w == who]


def _render(out_dir: Path, case_id: str, clips: list[Path], tracks: list[np.ndarray],
            turns: list[C.FrameTurn], layout: str, size: tuple[int, int], n_frames: int,
            fps: int) -> Path:
    """Encode the video and the mix; write the clean per-panel WAVs. Returns the mp4 path."""
    rects = panel_rects(layout, size)
    graphs, loops = [], []
    for i, clip in enumerate(clips):
        segments = C.panel_segments(_spans(turns, i), n_frames)
        graphs.append(C.panel_graph(i, segments, rects[i][2:], fps))
        loops.append(C.loops_needed(segments, probe(clip).duration, fps))
    stack = "hstack" if layout == "lr" else "vstack"
    graph = ";".join(graphs) + f";[p0][p1]{stack}=inputs=2,trim=end_frame={n_frames}[v]"
    gain = min(1.0, 0.95 / max(float(np.abs(tracks[0] + tracks[1]).max()), 1e-9))
    tracks = [track * gain for track in tracks]  # the clean tracks add up to the mix
    mp4, partial = out_dir / f"{case_id}.mp4", out_dir / f".{case_id}.partial.mp4"
    with tempfile.TemporaryDirectory(prefix="rn-compose-") as tmp:
        wav = Path(tmp) / "mix.wav"
        C.write_wav(wav, tracks[0] + tracks[1], SAMPLE_RATE)
        C.encode(partial, clips, loops, graph, wav, n_frames=n_frames, fps=fps,
                 sample_rate=SAMPLE_RATE)
    os.replace(partial, mp4)
    for panel, track in zip(C.PANELS[layout], tracks):
        C.write_wav(out_dir / f"{case_id}.{panel}.wav", track, SAMPLE_RATE)
    return mp4


def _truth(case_id: str, layout: str, size: tuple[int, int], fps: int, n_frames: int,
           clips: list[Path], over: dict[int, Path], turns: list[C.FrameTurn],
           boxes: list[list[int]]) -> dict[str, Any]:
    spans = [[[round(a / fps, 6), round(b / fps, 6)] for a, b in _spans(turns, i)] for i in (0, 1)]
    talk = [sum(b - a for a, b in s) for s in spans]
    speaker = 0 if talk[0] >= talk[1] else 1
    people = []
    for i, (panel, clip) in enumerate(zip(C.PANELS[layout], clips)):
        voice = over.get(i)
        people.append({
            "panel": panel, "face": clip.stem, "voice": (voice or clip).stem,
            "participant_id": f"rm-{clip.stem}", "role": "speaker" if i == speaker else "listener",
            "words": [], "text": known_text(voice) if voice else None,
            "text_span": spans[i][0] if voice else None, "speech": spans[i],
            "head_pose": None, "box": boxes[i], "audio": f"{case_id}.{panel}.wav"})
    return {"id": case_id, "fps": fps, "duration": round(n_frames / fps, 6), "n_frames": n_frames,
            "layout": layout, "size": list(size), "participants": people, "cuts": [],
            "noise_snr_db": None, "source": "realmedia"}


def panel_face_boxes(landmarker, frame_rgb: np.ndarray,
                     rects: list[tuple[int, int, int, int]]) -> list[list[list[int]]]:
    """Faces found in each panel of a uint8 [H, W, 3] RGB frame: per panel, ``[x, y, w, h]``
    landmark bounding boxes in canvas pixels."""
    import mediapipe as mp

    found = []
    for x0, y0, w, h in rects:
        crop = np.ascontiguousarray(frame_rgb[y0:y0 + h, x0:x0 + w])
        result = landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=crop))
        boxes = []
        for marks in result.face_landmarks:
            xs = np.clip([m.x * w for m in marks], 0, w)
            ys = np.clip([m.y * h for m in marks], 0, h)
            boxes.append([int(x0 + xs.min()), int(y0 + ys.min()),
                          round(xs.max() - xs.min()), round(ys.max() - ys.min())])
        found.append(boxes)
    return found


def _face_boxes_first_frame(mp4: Path, layout: str, size: tuple[int, int]) -> list[list[int]]:
    """Each panel's face box on frame 0, or the panel rect where MediaPipe or a face is missing."""
    import cv2

    rects = panel_rects(layout, size)
    capture = cv2.VideoCapture(str(mp4))
    ok, bgr = capture.read()
    capture.release()
    if not ok:
        return [list(r) for r in rects]
    try:
        from responsenet.synth.faces import face_landmarker

        with face_landmarker(2) as landmarker:
            found = panel_face_boxes(landmarker, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), rects)
    except (ImportError, AssetMissing):
        return [list(r) for r in rects]
    return [boxes[0] if boxes else list(rect) for boxes, rect in zip(found, rects)]


def standard_cases(out_dir: str | Path, *, panel_size: int = 512) -> list[Path]:
    """Compose the :data:`STANDARD_CASES` into ``out_dir`` (once: up-to-date files are kept).

    Args:
        out_dir: output folder.
        panel_size: side of each square panel in pixels (lr canvas 2p x p, tb canvas p x 2p).

    Returns:
        The mp4 paths, in :data:`STANDARD_CASES` order. Raises FileNotFoundError when the real
        media folder is absent (tests call :func:`require_realmedia` first).
    """
    root = realmedia_dir()
    if root is None:
        raise FileNotFoundError("real media not found: set RESPONSENET_REALMEDIA or put "
                                "shared/realmedia beside the repository")
    out_dir, made = Path(out_dir), []
    for case_id, (layout, first, second, speech) in STANDARD_CASES.items():
        size = (2 * panel_size, panel_size) if layout == "lr" else (panel_size, 2 * panel_size)
        mp4, truth = out_dir / f"{case_id}.mp4", out_dir / f"{case_id}.truth.json"
        if not (mp4.is_file() and truth.is_file()
                and json.loads(truth.read_text(encoding="utf-8")).get("size") == list(size)):
            compose_dyadic(out_dir, case_id, root / first, root / second, layout=layout,
                           speech_over={0: root / speech} if speech else None, size=size)
        made.append(mp4)
    return made
