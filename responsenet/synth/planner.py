"""The sample-exact layout behind ``script.plan_conversation`` (the rules are documented there).

Every time here is an integer sample offset into tracks of ``n_samples``; ``script`` converts to
seconds once. Track 0 is the speaker, track 1 the listener.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from responsenet.synth.voices import Voice, synthesize_words

GAP_S = (0.03, 0.09)  # between the words of one turn
PAUSE_S = (0.3, 1.0)  # between turns
OVERLAP_S = 0.3  # both voices at once when a turn starts early
INTERRUPT_LEAD_S = (0.2, 0.4)  # the interrupter starts this long before the cut word ends
MIN_SILENCE_S = 0.1  # between two turns of the same track
SPEAKER_TURN_WORDS = 9  # a speaker turn in free alternation takes lines until it has this many


@dataclass(frozen=True)
class Slot:
    """One word's audio placed at ``offset`` (samples) in a track."""

    text: str
    offset: int
    audio: np.ndarray

    @property
    def end(self) -> int:
        return self.offset + len(self.audio)

    def shifted(self, by: int) -> Slot:
        return Slot(self.text, self.offset + by, self.audio)


class Planner:
    """Lays out one conversation: call ``run`` once, then read ``slots`` and ``turns``.

    Args:
        rng: the only source of randomness.
        voices: (speaker, listener).
        pools: line pools ``{"speaker", "listener", "backchannel", "opener": tuple[str, ...]}``.
        n_samples: length of the conversation.
        sample_rate: in Hz.
    """

    def __init__(self, rng: np.random.Generator, voices: tuple[Voice, Voice],
                 pools: dict[str, tuple[str, ...]], n_samples: int, sample_rate: int):
        self.rng, self.voices, self.n, self.sr = rng, voices, n_samples, sample_rate
        self.slots: tuple[list[Slot], list[Slot]] = ([], [])
        self.turns: tuple[list[tuple[int, int, str]], list[tuple[int, int, str]]] = ([], [])
        self.queues = {kind: [pool[i] for i in rng.permutation(len(pool))]
                       for kind, pool in pools.items()}
        self._prefetch()

    def _prefetch(self) -> None:
        """Synthesize the lines this conversation will most likely use, in parallel."""
        seconds = self.n / self.sr
        speaker = self.queues["speaker"][: int(seconds / 3) + 4]
        listener = self.queues["listener"][: int(seconds / 4) + 4] + self.queues["backchannel"] \
            + self.queues["opener"]
        self.word_samples = []  # mean word length of each voice, to skip lines that cannot fit
        for track, lines in ((0, speaker), (1, listener)):
            audio = synthesize_words(self.voices[track], " ".join(lines).split(), self.sr)
            self.word_samples.append(float(np.mean([len(a) for a in audio])))

    # --- small helpers ---------------------------------------------------------------------
    def samples(self, seconds: float) -> int:
        return round(seconds * self.sr)

    def draw(self, low_high: tuple[float, float]) -> int:
        """A random duration in samples, uniform in ``low_high`` seconds."""
        return self.samples(self.rng.uniform(*low_high))

    def free(self, track: int) -> int:
        """First sample where ``track`` may start a new turn."""
        slots = self.slots[track]
        return slots[-1].end + self.samples(MIN_SILENCE_S) if slots else 0

    def length(self, track: int, text: str) -> int:
        """Samples ``text`` takes with every gap at its maximum."""
        audio = synthesize_words(self.voices[track], text.split(), self.sr)
        return sum(len(a) for a in audio) + self.samples(GAP_S[1]) * (len(audio) - 1)

    def line(self, kind: str, track: int, max_samples: int | None = None, min_words: int = 1,
             fallback: bool = True) -> str | None:
        """The next line of a pool (its queue rotates) with at least ``min_words`` words that
        fits in ``max_samples``; when none fits, the one with the fewest words, or None when
        not ``fallback``."""
        queue = self.queues[kind]
        wordy = [t for t in queue if len(t.split()) >= min_words] or queue
        text = wordy[0]
        if max_samples is not None:
            most_words = max_samples / (0.8 * self.word_samples[track])  # longer ones won't fit
            text = next((t for t in wordy if len(t.split()) <= most_words and
                         self.length(track, t) <= max_samples), None)
            if text is None and not fallback:
                return None
            text = text or min(wordy, key=lambda t: len(t.split()))
        queue.remove(text)
        queue.append(text)
        return text

    def layout(self, track: int, text: str, start: int) -> list[Slot]:
        """The words of ``text`` one after another from ``start``, with random short gaps."""
        words = text.split()
        audio = synthesize_words(self.voices[track], words, self.sr)
        slots, offset = [], start
        for word, clip in zip(words, audio):
            slots.append(Slot(word, offset, clip))
            offset += len(clip) + self.draw(GAP_S)
        return slots

    def place(self, track: int, slots: list[Slot], kind: str) -> list[Slot]:
        """Keep the slots that end inside the conversation; record them and their turn."""
        kept = [s for s in slots if s.end <= self.n]
        if kept:
            self.slots[track].extend(kept)
            self.turns[track].append((kept[0].offset, kept[-1].end, kind))
        return kept

    # --- the conversation ------------------------------------------------------------------
    def run(self, interruption: bool) -> None:
        """A speaker turn with a backchannel, a reply that starts before it ends, then (when
        asked) a speaker turn the listener interrupts, then free alternation to the end."""
        budget = max(self.n * 2 // 5, self.samples(3.2))
        text = self.line("speaker", 0, budget, min_words=8, fallback=False) or \
            self.line("speaker", 0, budget, min_words=6)
        first = self.speaker_turn(self.draw((0.1, 0.4)), text, need_backchannel=True)
        reply_budget = (first[-1].end - first[0].offset) // 2
        reply = self.overlapping_turn(1, first, self.line("listener", 1, reply_budget))
        cursor = reply[-1].end
        if interruption:
            cursor = self.interrupted_turn(cursor)
        self.alternate(cursor)

    def speaker_turn(self, start: int, text: str, need_backchannel: bool) -> list[Slot]:
        """Place a speaker turn and, when one fits, a listener backchannel inside it (when not
        ``need_backchannel``, half of the time). A needed backchannel may add a second line."""
        slots = self.layout(0, text, start)
        wanted = need_backchannel or self.rng.random() < 0.5
        backchannel = self.backchannel_inside(slots) if wanted else None
        if backchannel is None and need_backchannel:
            slots += self.layout(0, self.line("speaker", 0), slots[-1].end + self.draw(GAP_S))
            backchannel = self.backchannel_inside(slots)
        placed = self.place(0, slots, "turn")
        if placed and backchannel and backchannel[-1].end < placed[-1].offset:
            self.place(1, backchannel, "backchannel")
        return placed

    def backchannel_inside(self, turn: list[Slot]) -> list[Slot] | None:
        """Listener slots starting just after word i of ``turn`` and ending before word j >= i+2,
        with enough of the turn left after them for a reply to overlap; None when none fits."""
        tail = self.samples(OVERLAP_S + 0.2)
        for text in list(self.queues["backchannel"]):
            delay = self.draw((0.05, 0.2))
            starts = [s.end + delay for s in turn[:-3] if s.end + delay >= self.free(1)]
            for start in self.rng.permutation(starts) if starts else []:
                slots = self.layout(1, text, int(start))
                after = slots[-1].end + self.samples(0.02)
                later = [s for s in turn if s.offset >= after]
                if later and _sounding_after(turn, after + self.samples(MIN_SILENCE_S)) >= tail:
                    self.queues["backchannel"].remove(text)
                    self.queues["backchannel"].append(text)
                    return slots
        return None

    def overlapping_turn(self, track: int, other: list[Slot], text: str) -> list[Slot]:
        """Place a turn of ``text`` that starts before ``other`` (the other track's turn) ends,
        early enough that both voices sound together for ``OVERLAP_S``."""
        slots = self.layout(track, text, 0)
        earliest = max(self.free(track), other[0].end)
        start = max(other[-1].end - self.draw((0.35, 0.7)), earliest)
        step, target = self.samples(0.01), self.samples(OVERLAP_S)
        while start - step >= earliest and \
                _overlap(other, [s.shifted(start) for s in slots]) < target:
            start -= step
        return self.place(track, [s.shifted(start) for s in slots], "turn")

    def interrupted_turn(self, cursor: int) -> int:
        """After a pause, a speaker turn that the listener cuts into during word k (k >= 1, two
        or more words left); the speaker finishes word k and stops. Returns the new cursor."""
        text = self.line("opener", 1) + " " + self.line("listener", 1, self.samples(1.0))
        reply = self.layout(1, text, 0)
        room = self.n - cursor - self.samples(1.5) - len(reply[0].audio)
        pause = max(self.samples(PAUSE_S[0]), min(self.draw(PAUSE_S), room))
        slots = self.layout(0, self.line("speaker", 0, min_words=8), cursor + pause)
        wanted = self.draw(INTERRUPT_LEAD_S)
        leads = [min(wanted, len(s.audio) - self.samples(0.05)) for s in slots]
        cuts = [k for k in range(1, len(slots) - 2) if leads[k] >= self.samples(
            INTERRUPT_LEAD_S[0]) and slots[k].end - leads[k] + len(reply[0].audio) <= self.n]
        if not cuts:  # pragma: no cover - the budgets above leave room for a cut
            return self.place(0, slots, "turn")[-1].end
        k = cuts[-1]  # as late as possible: the speaker holds the floor longer
        self.place(0, slots[: k + 1], "turn")
        return self.place(1, [s.shifted(slots[k].end - leads[k]) for s in reply],
                          "interruption")[-1].end

    def alternate(self, cursor: int) -> None:
        """Alternating turns to the end, the speaker's first: the speaker's are long (lines until
        it has ``SPEAKER_TURN_WORDS`` words) and follow a pause; the listener's are at most half
        as long as the turn before and follow a pause or, one time in four, overlap it."""
        speaking = True
        while True:
            placed = self.free_speaker_turn(cursor) if speaking else self.listener_turn(cursor)
            if not placed:
                return
            cursor, speaking = placed[-1].end, not speaking

    def free_speaker_turn(self, cursor: int) -> list[Slot]:
        start = cursor + self.draw(PAUSE_S)
        text = self.line("speaker", 0)
        while len(text.split()) < SPEAKER_TURN_WORDS:
            text += " " + self.line("speaker", 0)
        return self.speaker_turn(start, text, need_backchannel=False) if start < self.n else []

    def listener_turn(self, cursor: int) -> list[Slot]:
        overlap = self.rng.random() < 0.25
        last = self.turns[0][-1]
        text = self.line("listener", 1, (last[1] - last[0]) // 2)
        other = [s for s in self.slots[0] if s.offset >= last[0]]
        if overlap and len(other) >= 3:
            return self.overlapping_turn(1, other, text)
        start = max(cursor + self.draw(PAUSE_S), self.free(1))
        return self.place(1, self.layout(1, text, start), "turn") if start < self.n else []


def _overlap(a: list[Slot], b: list[Slot]) -> int:
    """Samples during which a slot of ``a`` and a slot of ``b`` both sound."""
    return sum(max(0, min(x.end, y.end) - max(x.offset, y.offset)) for x in a for y in b)


def _sounding_after(turn: list[Slot], start: int) -> int:
    """Samples of ``turn``'s words after ``start``."""
    return sum(max(0, s.end - max(s.offset, start)) for s in turn)
