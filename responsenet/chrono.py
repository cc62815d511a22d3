"""Chrono-Text: one text token per video frame, its inverse, turns, roles and LLM prompts.

A track's Chrono-Text stream (OmniResponse's Chrono-Text Markup) has exactly one token per video
frame: the word that starts in that frame, ``[LASTING]`` while a word is still sounding, and
``[PAUSE]`` when the track is silent. Frame ``i`` covers ``[i / fps, (i + 1) / fps)``; all times
are seconds from the clip's first frame. Every edge-case rule is listed in docs/chrono.md.

Pure functions: no files, no logging, no models.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

#: Token of a frame where the word started earlier is still sounding.
LASTING = "[LASTING]"
#: Token of a frame where the track is silent.
PAUSE = "[PAUSE]"
SPECIAL_TOKENS: frozenset[str] = frozenset({LASTING, PAUSE})
#: Prefix that keeps a word whose text equals a special token apart from the token itself.
ESCAPE = "\\"
#: Tolerance (in frames) when a time is mapped to a frame, so that ``i / fps`` lands on frame i.
FRAME_EPS = 1e-6

Punctuation = Literal["keep", "strip"]
_ESCAPED = re.compile(r"(\\*)(" + "|".join(re.escape(t) for t in sorted(SPECIAL_TOKENS)) + r")")


@dataclass(frozen=True)
class Word:
    """One spoken word. ``start``/``end`` in seconds (clip time); ``prob`` 0..1 or None."""

    text: str
    start: float
    end: float
    prob: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Word:
        """Build a word from ``{text, start, end, prob?}``.

        Raises:
            ValueError: a field is missing, text is not a string, or a time is not finite.
        """
        try:
            text, start, end = data["text"], float(data["start"]), float(data["end"])
            prob = None if data.get("prob") is None else float(data["prob"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"expected a word {{text, start, end, prob}}, got {data!r}") from e
        if not isinstance(text, str):
            raise ValueError(f"word text must be a string, got {text!r}")
        if not (math.isfinite(start) and math.isfinite(end)):
            raise ValueError(f"word {text!r}: start and end must be finite, got {start}, {end}")
        return cls(text, start, end, prob)


@dataclass(frozen=True)
class Placement:
    """Where ``encode`` put one word: its token and frames.

    Attributes:
        word: the input word.
        text: its normalised text (``normalize_text``); the onset token is ``escape(text)``.
        natural_frame: the frame holding ``word.start`` (0 for a word that began before the clip).
        frame: the onset frame it got (differs from ``natural_frame`` only when onsets packed).
        end_frame: first frame after its run (its last ``[LASTING]`` is ``end_frame - 1``).
    """

    word: Word
    text: str
    natural_frame: int
    frame: int
    end_frame: int

    @property
    def token(self) -> str:
        return escape(self.text)

    @property
    def shift(self) -> int:
        """Frames the onset moved: > 0 pushed later, < 0 pulled earlier at the clip end."""
        return self.frame - self.natural_frame


def is_special(token: str) -> bool:
    """True for ``[LASTING]`` and ``[PAUSE]`` (an escaped word such as ``\\[PAUSE]`` is not)."""
    return token in SPECIAL_TOKENS


def escape(text: str) -> str:
    """The token of a word: ``text``, with one ``\\`` added when it reads as a special token."""
    return ESCAPE + text if _ESCAPED.fullmatch(text) else text


def unescape(token: str) -> str:
    """Inverse of ``escape`` for a word token."""
    match = _ESCAPED.fullmatch(token)
    return token[1:] if match and match.group(1) else token


def normalize_text(text: str, punctuation: Punctuation = "keep") -> str:
    """Whitespace stripped and inner runs collapsed to one space; ``strip`` also removes
    punctuation (Unicode category P*) at both ends. An empty result means "no word"."""
    text = " ".join(text.split())
    if punctuation == "strip":
        start, end = 0, len(text)
        while start < end and unicodedata.category(text[start]).startswith("P"):
            start += 1
        while end > start and unicodedata.category(text[end - 1]).startswith("P"):
            end -= 1
        text = text[start:end].strip()
    elif punctuation != "keep":
        raise ValueError(f"punctuation must be 'keep' or 'strip', got {punctuation!r}")
    return text


def frame_of(time: float, fps: float) -> int:
    """The frame whose span ``[i / fps, (i + 1) / fps)`` holds ``time`` (seconds)."""
    return math.floor(time * fps + FRAME_EPS)


def _end_frame(time: float, fps: float) -> int:
    """First frame that starts at or after ``time``: frames before it overlap ``[.., time)``."""
    return math.ceil(time * fps - FRAME_EPS)


def place(words: Sequence[Word], n_frames: int, fps: float = 25.0, *,
          punctuation: Punctuation = "keep") -> list[Placement]:
    """Decide each word's onset frame and run; the rules behind ``encode``.

    Words are normalised (``normalize_text``; empty ones dropped), ordered by start (ties keep
    input order), and dropped when they lie wholly outside the clip. Onset frame ``j`` is
    ``min(max_{i<=j}(natural_i + j - i), n_frames - n + j)`` for the n kept words: the first free
    frame at or after its own, pulled back only where the clip's last frames run out.

    Raises:
        ValueError: ``fps <= 0``, ``n_frames < 0``, a time is not finite, or more words fall
            inside the clip than it has frames.
    """
    if fps <= 0 or n_frames < 0:
        raise ValueError(f"need fps > 0 and n_frames >= 0, got fps={fps}, n_frames={n_frames}")
    kept = []
    for index, word in enumerate(words):
        if not (math.isfinite(word.start) and math.isfinite(word.end)):
            raise ValueError(f"word {word.text!r}: times must be finite, got "
                             f"{word.start}, {word.end}")
        text = normalize_text(word.text, punctuation)
        natural = max(frame_of(word.start, fps), 0)
        end = min(_end_frame(max(word.end, word.start), fps), n_frames)
        if text and natural < n_frames and end > 0:
            kept.append((word.start, index, natural, end, text, word))
    kept.sort(key=lambda item: item[:2])
    if len(kept) > n_frames:
        raise ValueError(f"{len(kept)} words start inside a clip of {n_frames} frames; "
                         "Chrono-Text gives each word its own onset frame")
    frames: list[int] = []
    for _, _, natural, *_rest in kept:
        frames.append(max(natural, frames[-1] + 1) if frames else natural)
    for j in range(len(kept) - 1, -1, -1):  # pull back a tail that ran past the last frame
        limit = n_frames - 1 if j == len(kept) - 1 else frames[j + 1] - 1
        frames[j] = min(frames[j], limit)
    placements, reach = [], 0
    for j, (_, _, natural, end, text, word) in enumerate(kept):
        reach = max(reach, end)
        stop = frames[j + 1] if j + 1 < len(kept) else n_frames
        placements.append(Placement(word, text, natural, frames[j],
                                    min(max(frames[j] + 1, reach), stop)))
    return placements


def encode(words: Sequence[Word], n_frames: int, fps: float = 25.0, *,
           punctuation: Punctuation = "keep") -> list[str]:
    """Chrono-Text stream of one track.

    Args:
        words: the track's words, seconds in clip time, in any order.
        n_frames: T, the clip's frame count.
        fps: frames per second.
        punctuation: ``keep`` punctuation attached to words, or ``strip`` it.

    Returns:
        str [T]: a word token at each onset frame, ``[LASTING]`` while any word started so far
        is still sounding (up to the next onset), ``[PAUSE]`` elsewhere.
    """
    tokens = [PAUSE] * n_frames
    for p in place(words, n_frames, fps, punctuation=punctuation):
        tokens[p.frame] = p.token
        tokens[p.frame + 1 : p.end_frame] = [LASTING] * (p.end_frame - p.frame - 1)
    return tokens


def decode(tokens: Sequence[str], fps: float = 25.0) -> list[Word]:
    """Words of a Chrono-Text stream: each word token starts a word at its frame, which lasts
    through the ``[LASTING]`` tokens after it. A ``[LASTING]`` with no word before it (stream
    start, after ``[PAUSE]``) counts as silence. Times are frame edges; ``prob`` is None.

    Raises:
        ValueError: ``fps <= 0``, or a token is not a string or is empty/whitespace.
    """
    if fps <= 0:
        raise ValueError(f"need fps > 0, got {fps}")
    words: list[Word] = []
    current: tuple[str, int] | None = None
    for index, token in enumerate([*tokens, PAUSE]):
        if not isinstance(token, str) or not token.strip():
            raise ValueError(f"frame {index}: expected a word, {LASTING} or {PAUSE}, "
                             f"got {token!r}")
        if token == LASTING and current is not None:
            continue
        if current is not None:
            words.append(Word(current[0], current[1] / fps, index / fps))
            current = None
        if not is_special(token):
            current = (unescape(token), index)
    return words


def plain_text(tokens: Sequence[str]) -> str:
    """The words of a stream joined by spaces (no special tokens), e.g. for text metrics."""
    return " ".join(word.text for word in decode(tokens))


def clip_words(words: Sequence[Word], n_frames: int, fps: float = 25.0, *,
               punctuation: Punctuation = "keep") -> list[Word]:
    """The words ``encode`` keeps, as words: normalised texts, times clamped to the clip
    ``[0, n_frames / fps]``, ordered by start (ties keep input order)."""
    duration = n_frames / fps
    return [Word(p.text, max(p.word.start, 0.0), min(max(p.word.end, p.word.start), duration),
                 p.word.prob)
            for p in place(words, n_frames, fps, punctuation=punctuation)]


# --- dialogue: turns, history, roles, prompts ------------------------------------------------

#: System message of ``build_prompt`` (our own wording of the OmniResponse set-up).
DEFAULT_SYSTEM = (
    "You are the listener in a live face-to-face conversation between two people. Text reaches "
    "you as Chrono-Text: one token per video frame, where a word appears in the frame in which "
    f"it starts, {LASTING} marks frames in which that word is still being spoken, and {PAUSE} "
    "marks frames of silence. Earlier turns of the conversation are given as messages: the "
    "speaker's as user messages, yours as assistant messages. The last message holds both "
    "streams of the current moment. Continue your own stream one token per frame in the same "
    f"format: mostly {PAUSE} while you listen, brief backchannels where a listener would give "
    "them, and your own words when it is your turn to talk."
)
#: Chat role of each participant role in ``build_prompt``.
CHAT_ROLES = {"speaker": "user", "listener": "assistant"}


@dataclass(frozen=True)
class Turn:
    """A stretch of one participant's speech (the shard's ``turns``/``history`` struct).

    Attributes:
        role: ``speaker``/``listener``, or the track name when roles are not known.
        start: first word's start, s.
        end: latest word end in the turn, s.
        text: the turn's words joined by single spaces.
        track: the track it came from (None when unknown).
    """

    role: str
    start: float
    end: float
    text: str
    track: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.track is None:
            del data["track"]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Turn:
        return cls(data["role"], float(data["start"]), float(data["end"]), data["text"],
                   data.get("track"))

    def shifted(self, offset_s: float) -> Turn:
        """The same turn with ``offset_s`` added to its times (e.g. source time -> clip time)."""
        return Turn(self.role, self.start + offset_s, self.end + offset_s, self.text, self.track)


def turns(tracks: Mapping[str, Sequence[Word]], merge_gap_s: float = 0.5, *,
          roles: Mapping[str, str] | None = None) -> list[Turn]:
    """Who speaks when: each track's words merged into turns, all turns ordered by start.

    Within a track (words ordered by start), a word joins the current turn when the silence
    since the turn's latest end is shorter than ``merge_gap_s``; otherwise it opens a new turn.
    A word with empty text (e.g. a speech interval without a transcript) extends a turn but adds
    no text.

    Args:
        tracks: track name -> its words (seconds).
        merge_gap_s: longest silence inside one turn, s (a gap of exactly this splits).
        roles: track -> role label for ``Turn.role``; None labels turns with the track name.

    Returns:
        Turns ordered by (start, end, role, track).
    """
    if merge_gap_s < 0:
        raise ValueError(f"merge_gap_s must be >= 0, got {merge_gap_s}")
    out = []
    for track, words in tracks.items():
        if roles is not None and track not in roles:
            raise ValueError(f"no role for track {track!r}; roles name {sorted(roles)}")
        label = roles[track] if roles is not None else track
        current: list[Any] | None = None  # [start, end, texts]
        for word in sorted(words, key=lambda w: (w.start, w.end)):
            end = max(word.end, word.start)
            if current is not None and word.start - current[1] < merge_gap_s:
                current[1] = max(current[1], end)
            else:
                if current is not None:
                    out.append(Turn(label, current[0], current[1], " ".join(current[2]), track))
                current = [word.start, end, []]
            if text := normalize_text(word.text):
                current[2].append(text)
        if current is not None:
            out.append(Turn(label, current[0], current[1], " ".join(current[2]), track))
    return sorted(out, key=lambda t: (t.start, t.end, t.role, t.track or ""))


def history(all_turns: Sequence[Turn], before_s: float, *,
            max_turns: int | None = None) -> list[Turn]:
    """The conversation before ``before_s``: turns that have ended by then, ordered by start.

    A turn still going on at ``before_s`` is not history (its words so far belong in the
    dynamic text of ``build_prompt``). ``max_turns`` keeps only the most recent ones.
    """
    done = sorted((t for t in all_turns if t.end <= before_s), key=lambda t: (t.start, t.end))
    if max_turns is not None:
        done = done[-max_turns:] if max_turns > 0 else []
    return done


def assign_roles(speech_seconds: Mapping[str, float],
                 manifest_roles: Mapping[str, str] | None
                 ) -> tuple[dict[str, str], Literal["manifest", "rule"]]:
    """Speaker and listener of a two-track clip.

    Manifest hints (panel -> role; panel names equal track names) win; a hint for one track
    settles the other. Without hints, the track with less speech is the listener; on a tie the
    track whose name sorts first is the speaker.

    Args:
        speech_seconds: track -> seconds of speech in the clip (exactly two tracks).
        manifest_roles: the manifest's ``roles`` (may be None or empty).

    Returns:
        ``({track: "speaker" | "listener"}, "manifest" | "rule")``.

    Raises:
        ValueError: not exactly two tracks; hints that name none of the tracks, or give both
            tracks the same role, or use a role other than speaker/listener.
    """
    tracks = sorted(speech_seconds)
    if len(tracks) != 2:
        raise ValueError(f"roles need exactly two tracks, got {tracks}")
    if manifest_roles:
        hints = {t: r for t, r in manifest_roles.items() if t in speech_seconds}
        bad = sorted(set(hints.values()) - set(CHAT_ROLES))
        if not hints or bad:
            raise ValueError(f"manifest roles {dict(manifest_roles)} must give 'speaker' or "
                             f"'listener' to the clip's tracks {tracks}")
        if len(hints) == 2 and hints[tracks[0]] == hints[tracks[1]]:
            raise ValueError(f"manifest roles give both tracks the role {hints[tracks[0]]!r}; "
                             "one must be the speaker and the other the listener")
        known, role = next(iter(hints.items()))
        other = next(t for t in tracks if t != known)
        return {known: role, other: _other_role(role)}, "manifest"
    first, second = tracks
    speaker = second if speech_seconds[second] > speech_seconds[first] else first
    return {t: "speaker" if t == speaker else "listener" for t in tracks}, "rule"


def _other_role(role: str) -> str:
    return "listener" if role == "speaker" else "speaker"


def build_prompt(history_turns: Sequence[Turn], speaker_text_so_far: str | Sequence[str],
                 listener_text_so_far: str | Sequence[str], *,
                 system: str = DEFAULT_SYSTEM) -> list[dict[str, str]]:
    """Chat messages for an LLM, as OmniResponse builds its input.

    The system message; each history turn as a ``user`` (speaker) or ``assistant``
    (listener) message; then one ``user`` message with the dynamic texts, the two Chrono-Text
    streams up to now. Consecutive messages of the same chat role are merged (texts joined by a
    blank line), so after the system message the roles alternate.

    Args:
        history_turns: earlier turns with roles ``speaker``/``listener`` (``history``).
        speaker_text_so_far: the speaker's stream so far: tokens, or a string of them.
        listener_text_so_far: the listener's stream so far, likewise.
        system: the system message.

    Returns:
        ``[{"role": "system" | "user" | "assistant", "content": str}, ...]``.

    Raises:
        ValueError: a history turn's role is not ``speaker`` or ``listener``.
    """
    messages = [{"role": "system", "content": system}]
    for turn in history_turns:
        if turn.role not in CHAT_ROLES:
            raise ValueError(f"history turn at {turn.start:.2f} s has role {turn.role!r}; "
                             "expected 'speaker' or 'listener' (label turns with roles=...)")
        _append(messages, CHAT_ROLES[turn.role], turn.text)
    dynamic = (f"Speaker, Chrono-Text so far:\n{_stream_text(speaker_text_so_far)}\n"
               f"Listener (you), Chrono-Text so far:\n{_stream_text(listener_text_so_far)}")
    _append(messages, "user", dynamic)
    return messages


def _stream_text(stream: str | Sequence[str]) -> str:
    return stream if isinstance(stream, str) else " ".join(stream)


def _append(messages: list[dict[str, str]], role: str, content: str) -> None:
    if messages[-1]["role"] == role:
        messages[-1] = {"role": role, "content": f"{messages[-1]['content']}\n\n{content}"}
    else:
        messages.append({"role": role, "content": content})
