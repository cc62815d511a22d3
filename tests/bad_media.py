"""A corpus of bad (and awkward but good) inputs, made from one synthetic conversation.

Every maker writes one small file with ffmpeg (argument lists, never a shell string) or plain
bytes, and :data:`CASES` says what the build must do with it: the stage and reason code it
fails with, or ``None`` when the item must reach the corpus. Used by tests/test_bad_inputs.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from responsenet.media import run_ffmpeg
from responsenet.testing.media import make_shots_video, make_video

#: x264/AAC settings of every derived file: fast, and small enough for a 2-core machine.
VIDEO = ["-c:v", "libx264", "-preset", "ultrafast", "-crf", "20", "-pix_fmt", "yuv420p"]
AUDIO = ["-c:a", "aac", "-b:a", "64k"]
#: Seconds of the conversation most derived files keep (both people speak in them).
KEEP = 2.0


@dataclass(frozen=True)
class Case:
    """One input: how to make it from the good conversation, and what the build must say.

    Attributes:
        make: ``make(good_mp4, out_path)`` writes the input.
        stage: the stage that must fail it; None when it must reach the corpus.
        reason: the reason code of that failure.
        message: a phrase the failure message must contain (case-insensitive).
        suffix: file name extension of the input.
        file: the input's file name when it is not ``{id}{suffix}``.
        slow: too slow for the default suite (``-m slow``).
    """

    make: Callable[[Path, Path], object]
    stage: str | None = None
    reason: str | None = None
    message: str = ""
    suffix: str = ".mp4"
    file: str | None = None
    slow: bool = False


def _ffmpeg(args: list[str], out: Path) -> Path:
    run_ffmpeg([*args, str(out)], what=f"make bad input {out.name}")
    return out


def _derive(good: Path, out: Path, *, vf: str | None = None, start: float = 0.0,
            duration: float = KEEP, extra: list[str] = ()) -> Path:
    """The first ``duration`` seconds after ``start`` of ``good``, video filtered by ``vf``."""
    args = ["-ss", f"{start}", "-t", f"{duration}", "-i", str(good)]
    return _ffmpeg([*args, *(["-vf", vf] if vf else []), *VIDEO, *AUDIO, *extra], out)


def truncated(good: Path, out: Path) -> Path:
    """The first 30% of the bytes of a fast-start mp4: the index survives, the media does not."""
    out.write_bytes(good.read_bytes()[: int(good.stat().st_size * 0.3)])
    return out


def truncated_index(good: Path, out: Path) -> Path:
    """The first 60% of the bytes of an mp4 whose index (moov) is at the end: unreadable."""
    whole = _derive(good, out.with_name(out.stem + "-whole.mp4"))
    out.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.6)])
    whole.unlink()
    return out


def corrupt(good: Path, out: Path) -> Path:
    """Random bytes over the middle 40-60% of the file; the index stays readable."""
    data = bytearray(good.read_bytes())
    start, end = int(len(data) * 0.4), int(len(data) * 0.6)
    data[start:end] = np.random.default_rng(7).integers(0, 256, end - start, np.uint8).tobytes()
    out.write_bytes(bytes(data))
    return out


def empty(good: Path, out: Path) -> Path:
    out.write_bytes(b"")
    return out


def not_media(good: Path, out: Path) -> Path:
    out.write_text("this is a text file, not a video\n")
    return out


def audio_only(good: Path, out: Path) -> Path:
    return _ffmpeg(["-t", f"{KEEP}", "-i", str(good), "-vn", *AUDIO], out)


def video_only(good: Path, out: Path) -> Path:
    return _ffmpeg(["-t", f"{KEEP}", "-i", str(good), "-an", *VIDEO], out)


def too_short_for_download(good: Path, out: Path) -> Path:
    """0.5 s: below download.min_duration (1 s)."""
    return _derive(good, out, duration=0.5)


def too_short_shots(good: Path, out: Path) -> Path:
    """1.6 s of two 0.8 s shots joined by a hard cut: no shot reaches min_clip_seconds."""
    return make_shots_video(out, (("testsrc2", 0.8), ("smptebars", 0.8)), size=(160, 90))


def variable_fps(good: Path, out: Path) -> Path:
    """Frames kept irregularly with their own timestamps (every frame, then every 3rd, then
    every 2nd): a genuinely variable frame rate, which segment turns into 25 fps CFR."""
    keep = "lt(t\\,0.6)+gte(t\\,0.6)*lt(t\\,1.3)*not(mod(n\\,3))+gte(t\\,1.3)*not(mod(n\\,2))"
    return _derive(good, out, vf=f"select='{keep}'", extra=["-fps_mode", "vfr"])


def rotated(good: Path, out: Path) -> Path:
    """Stored sideways (as phones record) with a display matrix that turns it upright (90°)."""
    sideways = _derive(good, out.with_name(out.stem + "-sideways.mp4"), vf="transpose=1")
    _ffmpeg(["-i", str(sideways), "-c", "copy", "-metadata:s:v:0", "rotate=90"], out)
    sideways.unlink()
    return out


def one_face(good: Path, out: Path) -> Path:
    """The right panel painted over: a split screen with one empty panel."""
    return _derive(good, out, vf="drawbox=x=iw/2:y=0:w=iw/2:h=ih:color=0x1e1e1e:t=fill")


def three_faces(good: Path, out: Path) -> Path:
    """The left person shrunk and shown twice side by side, the right person as is."""
    graph = ("[0:v]split=2[a][b];"
             "[a]crop=iw/2:ih:0:0,scale=iw/2:ih/2,split=2[l1][l2];"
             "[l1][l2]hstack,pad=iw:ih*2:0:ih/2:color=0x141414[left];"
             "[b]crop=iw/2:ih:iw/2:0[right];[left][right]hstack,format=yuv420p[v]")
    return _ffmpeg(["-t", f"{KEEP}", "-i", str(good), "-filter_complex", graph,
                    "-map", "[v]", "-map", "0:a", *VIDEO, *AUDIO], out)


def _replace_audio(good: Path, out: Path, source: str) -> Path:
    return _ffmpeg(["-t", f"{KEEP}", "-i", str(good), "-f", "lavfi", "-t", f"{KEEP}",
                    "-i", source, "-map", "0:v", "-map", "1:a", *VIDEO, *AUDIO, "-shortest"],
                   out)


def silent_audio(good: Path, out: Path) -> Path:
    return _replace_audio(good, out, "anullsrc=sample_rate=44100:channel_layout=stereo")


def noise_audio(good: Path, out: Path) -> Path:
    return _replace_audio(good, out, "anoisesrc=color=white:amplitude=0.3:sample_rate=44100")


def high_resolution(good: Path, out: Path) -> Path:
    """1.2 s of the conversation (while both speak) scaled up to 3840x2160."""
    return _derive(good, out, vf="scale=3840:2160:flags=bicubic", start=0.9, duration=1.2)


def plain_pattern(good: Path, out: Path) -> Path:
    """A moving test pattern with a tone: valid media without any face."""
    return make_video(out, duration=KEEP, size=(320, 180))


#: Every input of the corpus by manifest id. ``None`` stage: it must reach the corpus.
CASES: dict[str, Case] = {
    "truncated": Case(truncated, "segment", "corrupt_media", "decoded only"),
    "truncated-index": Case(truncated_index, "download", "corrupt_media", "not readable media"),
    "corrupt": Case(corrupt, "segment", "corrupt_media", "could not decode"),
    "empty": Case(empty, "download", "corrupt_media", "is empty (0 bytes)"),
    "not-media": Case(not_media, "download", "corrupt_media", "not readable media"),
    "audio-only": Case(audio_only, "download", "no_video", "no video stream", suffix=".m4a"),
    "video-only": Case(video_only, "download", "no_audio", "no audio stream"),
    "short-file": Case(too_short_for_download, "download", "too_short", "lasts 0.5"),
    "short-shots": Case(too_short_shots, "segment", "too_short", "min_clip_seconds"),
    "no-face": Case(plain_pattern, "crop", "no_face", "no face"),
    "one-face": Case(one_face, "crop", "one_face", "only one face"),
    "three-faces": Case(three_faces, "crop", "too_many_faces", "faces in a typical"),
    "silent-audio": Case(silent_audio, "separate", "no_speech", "the audio is silent"),
    "noise-audio": Case(noise_audio, "separate", "no_speech", "sound, but not speech"),
    "vfr": Case(variable_fps),
    "rotated": Case(rotated, file="entrevista ñ 01 (girada).mp4"),  # spaces, non-ASCII
    "high-res": Case(high_resolution, slow=True),
}


def make_inputs(good: Path, folder: Path, names: list[str]) -> dict[str, Path]:
    """Write the inputs ``names`` (keys of :data:`CASES`) into ``folder``; return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in names:
        path = folder / (CASES[name].file or f"{name}{CASES[name].suffix}")
        CASES[name].make(good, path)
        paths[name] = path
    return paths
