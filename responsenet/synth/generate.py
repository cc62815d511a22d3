"""Write synthetic dyadic conversations: video, clean voices, mixture, truth and a manifest.

Conversation ``i`` of a corpus with seed ``S`` is drawn from ``np.random.default_rng([S, i])``,
so it is the same whatever ``n`` is, and the same seed gives the same truth bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from rich.progress import Progress

from responsenet.errors import UsageError
from responsenet.synth.participants import Participant, make_pairs, participant_pool
from responsenet.synth.truth import truth_problems, write_truth

PANELS = {"lr": ("left", "right"), "tb": ("top", "bottom"), "pip": ("main", "inset")}
NOISY_PEAK = 0.98  # peak of a mixture after noise is added
TOPICS = ("travel", "cooking", "work", "sports", "music", "family", "weather", "books")


@dataclass(frozen=True)
class SynthSpec:
    """What to generate. ``size`` is the whole canvas (W, H) in pixels; ``duration`` seconds."""

    n: int = 4
    seed: int = 0
    layout: Literal["lr", "tb", "pip"] = "lr"
    duration: float = 12.0
    size: tuple[int, int] = (640, 360)
    faces: tuple[str, ...] = ("astronaut",)
    cut: bool = False
    snr_db: float | None = None
    interruption: bool = True
    fps: int = 25
    sample_rate: int = 16000

    def check(self) -> None:
        if self.n < 1:
            raise UsageError(f"--n must be at least 1, got {self.n}")
        if self.duration < 8:
            raise UsageError(f"--duration must be at least 8 seconds, got {self.duration}")
        width, height = self.size
        if width < 160 or height < 90 or width % 2 or height % 2:
            raise UsageError(f"--size must be even and at least 160x90, got {width}x{height}")
        if self.layout not in PANELS:
            raise UsageError(f"--layout must be one of lr, tb, pip; got {self.layout!r}")


def conversation_id(seed: int, index: int) -> str:
    return f"synth-s{seed}-{index:03d}"


def synthesize(out: str | Path, spec: SynthSpec, *, progress: bool = True) -> Path:
    """Write ``spec.n`` conversations into ``out`` and ``out/manifest.yaml``; return the manifest.

    Conversations whose files already exist are kept (the truth is deterministic).
    """
    spec.check()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pool = participant_pool(list(spec.faces))
    pairs = make_pairs(np.random.default_rng([spec.seed, 1_000_003]), pool)
    if not pairs:
        raise UsageError("need at least two distinct voices to pair participants")
    rows = []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("synth", total=spec.n)
        for index in range(spec.n):
            conv_id = conversation_id(spec.seed, index)
            truth = _ensure_conversation(out, conv_id, pairs[index % len(pairs)], index, spec)
            rows.append(_manifest_row(conv_id, truth))
            bar.advance(task)
    manifest = out / "manifest.yaml"
    manifest.write_text(yaml.safe_dump({"name": f"responsenet synth seed {spec.seed}",
                                        "sources": rows}, sort_keys=False))
    return manifest


def _manifest_row(conv_id: str, truth: dict[str, Any]) -> dict[str, Any]:
    people = truth["participants"]
    return {"id": conv_id, "path": f"{conv_id}.mp4", "layout": truth["layout"],
            "roles": {p["panel"]: p["role"] for p in people},
            "participants": {p["panel"]: p["participant_id"] for p in people},
            "topic": truth["topic"], "language": "en", "license": "generated (responsenet synth)"}


def _ensure_conversation(out: Path, conv_id: str, pair: tuple[Participant, Participant],
                         index: int, spec: SynthSpec) -> dict[str, Any]:
    from responsenet.synth.truth import read_truth

    panels = PANELS[spec.layout]
    wanted = [out / f"{conv_id}.mp4", out / f"{conv_id}.truth.json",
              *(out / f"{conv_id}.{panel}.wav" for panel in panels)]
    if all(p.exists() for p in wanted):
        return read_truth(out / f"{conv_id}.truth.json")
    return make_conversation(out, conv_id, pair, np.random.default_rng([spec.seed, index]), spec)


def make_conversation(out: Path, conv_id: str, pair: tuple[Participant, Participant],
                      rng: np.random.Generator, spec: SynthSpec) -> dict[str, Any]:
    """Plan, voice, animate, render and describe one conversation; return its truth."""
    from responsenet.synth.audio import add_noise, frame_envelope, mix
    from responsenet.synth.script import plan_conversation
    from responsenet.wavio import write_wav

    tracks = plan_conversation(rng, (pair[0].voice, pair[1].voice), spec.duration,
                               interruption=spec.interruption, sample_rate=spec.sample_rate)
    order = (0, 1) if rng.random() < 0.5 else (1, 0)  # which panel the speaker sits in
    people = [pair[i] for i in order]
    mixture, gain = mix([tracks[i].audio for i in order])
    voices = [tracks[i].audio * gain for i in order]
    if spec.snr_db is not None:
        mixture = add_noise(mixture, spec.snr_db, rng)
        peak = float(np.max(np.abs(mixture)))
        if peak > NOISY_PEAK:  # scale everything alike: the SNR stays exact, nothing clips
            mixture = mixture * (NOISY_PEAK / peak)
            voices = [v * (NOISY_PEAK / peak) for v in voices]
    n_frames = round(spec.duration * spec.fps)
    jaw = [frame_envelope(v, spec.fps, spec.sample_rate)[:n_frames] for v in voices]
    poses = [_head_motion(rng, tracks[i], n_frames, spec) for i in order]
    cuts = _cuts(rng, spec)
    panels = PANELS[spec.layout]
    for panel, voice in zip(panels, voices):
        write_wav(out / f"{conv_id}.{panel}.wav", voice.astype(np.float32), spec.sample_rate)
    boxes = _render(out / f"{conv_id}.mp4", people, jaw, poses, cuts, mixture, spec)
    truth = _truth(conv_id, spec, rng, panels, people, [tracks[i] for i in order], order, poses,
                   boxes, cuts)
    problems = truth_problems(truth)
    if problems:
        raise RuntimeError(f"synth produced inconsistent truth for {conv_id}: {problems}")
    write_truth(out / f"{conv_id}.truth.json", truth)
    return truth


def _head_motion(rng, track, n_frames: int, spec: SynthSpec) -> dict[str, np.ndarray]:
    from responsenet.synth.animate import plan_head_motion

    times = (np.arange(n_frames) + 0.5) / spec.fps
    speaking = np.zeros(n_frames, dtype=bool)
    for start, end in track.speech:
        speaking |= (times >= start) & (times < end)
    return plan_head_motion(rng, n_frames, spec.fps, speaking)


def _cuts(rng: np.random.Generator, spec: SynthSpec) -> list[float]:
    if not spec.cut:
        return []
    frame = round(rng.uniform(0.4, 0.6) * spec.duration * spec.fps)
    return [frame / spec.fps]


def _render(path: Path, people, jaw, poses, cuts, mixture, spec: SynthSpec):
    from responsenet.synth.faces import load_face
    from responsenet.synth.render import render_video

    photos = [load_face(p.face) for p in people]
    return render_video(path, photos, spec.layout, spec.size, spec.fps, jaw, poses, cuts,
                        mixture.astype(np.float32), spec.sample_rate)


def _truth(conv_id, spec, rng, panels, people, tracks, order, poses, boxes, cuts):
    participants = []
    for panel, person, track, source_index, pose in zip(panels, people, tracks, order, poses):
        participants.append({
            "panel": panel, "participant_id": person.id, "face": person.face_name,
            "voice": person.voice.name, "role": "speaker" if source_index == 0 else "listener",
            "words": [{"text": w.text, "start": w.start, "end": w.end} for w in track.words],
            "speech": [[a, b] for a, b in track.speech],
            "turns": [[a, b, kind] for a, b, kind in track.turns],
            "head_pose": {k: [float(v) for v in pose[k]] for k in ("yaw", "pitch", "roll")},
            "box": [int(v) for v in boxes[panel]], "audio": f"{conv_id}.{panel}.wav"})
    return {"id": conv_id, "fps": spec.fps, "duration": spec.duration,
            "n_frames": round(spec.duration * spec.fps), "layout": spec.layout,
            "size": list(spec.size), "seed": spec.seed, "sample_rate": spec.sample_rate,
            "topic": TOPICS[int(rng.integers(len(TOPICS)))], "participants": participants,
            "cuts": cuts, "noise_snr_db": spec.snr_db, "source": "synth"}
