"""Synthetic participants: (face, voice) pairs with stable ids, and who talks with whom.

Every participant is one face photo with one TTS voice. Participants are paired once, and a pair
keeps talking together: conversation ``i`` of a corpus uses pair ``i mod n_pairs``. The
participant graph is therefore a set of disjoint edges, so a corpus of ``n`` conversations can
always be split without any participant in two splits (a pair's conversations stay together).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from responsenet.synth.voices import VOICES, Voice


@dataclass(frozen=True)
class Participant:
    """One synthetic person. ``face`` is a face spec (``astronaut`` or an image path)."""

    id: str
    face: str
    voice: Voice

    @property
    def face_name(self) -> str:
        return face_name(self.face)


def face_name(spec: str) -> str:
    """A short safe name for a face spec: ``astronaut`` or the image's file stem."""
    stem = Path(spec).stem if spec != "astronaut" else spec
    return re.sub(r"[^A-Za-z0-9]+", "-", stem).strip("-").lower() or "face"


def participant_pool(faces: list[str], voices: tuple[Voice, ...] = VOICES) -> list[Participant]:
    """Every (face, voice) combination, with ids ``{face}-{voice}``."""
    return [Participant(f"{face_name(face)}-{voice.name}", face, voice)
            for face in faces for voice in voices]


def _contrast(a: Participant, b: Participant) -> tuple[int, int, int]:
    """Sort key: prefer another face, another gender, then a distant pitch."""
    return (a.face_name == b.face_name, a.voice.gender == b.voice.gender,
            -abs(a.voice.pitch - b.voice.pitch))


def make_pairs(rng: np.random.Generator, pool: list[Participant]) -> list[tuple[Participant,
                                                                               Participant]]:
    """Pair participants so that each person is in exactly one pair, partners as different as
    possible (face, then voice gender, then pitch). Deterministic for a given ``rng`` state."""
    order = [pool[i] for i in rng.permutation(len(pool))]
    pairs = []
    while len(order) >= 2:
        first = order.pop(0)
        partner = min((p for p in order if p.voice != first.voice), key=lambda p: _contrast(
            first, p), default=None)
        if partner is None:
            break
        order.remove(partner)
        pairs.append((first, partner))
    return pairs
