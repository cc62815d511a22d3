"""Scripted two-person conversations with exact word times.

Every word is synthesized on its own (``voices.synthesize_word``) and copied into its speaker's
track at a chosen sample offset, so each word's time is known to the sample and the track is
exactly silent (0.0) between words. Track 0 is the main speaker, track 1 the listener.

What every plan contains (for any seed and any duration >= 8 s):

- turns that alternate between the two tracks, with at least one pause of 0.3-1.0 s;
- a backchannel of the listener inside a speaker turn: it starts after one speaker word ends and
  ends before a later word of the same turn starts, while the speaker keeps talking;
- a turn that starts while the other's turn is still going, so that both voices sound at once
  for at least 0.3 s (word intervals);
- with ``interruption=True``, a speaker turn cut short: the listener starts talking during a word,
  the speaker finishes that word (0.2-0.4 s later) and drops the rest of the line;
- no word ends after ``duration``; the words of one track never overlap; the speaker's total word
  time exceeds the listener's (typically 1.5-3 times).

Words are the whitespace-separated tokens of the pool lines below ("mm-hm" is one word, "I see"
two). Turns are separated by pauses of 0.3-1.0 s, words within a turn by gaps of 30-90 ms.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from responsenet.errors import ResponseNetError
from responsenet.synth.planner import OVERLAP_S, PAUSE_S, Planner
from responsenet.synth.voices import Voice

MIN_DURATION_S = 8.0
MERGE_GAP_S = 0.25  # word intervals closer than this form one speech interval

SPEAKER_LINES = (
    "so I finally went to that new bakery on the corner",
    "the bread there is amazing but the line was really long",
    "we spent the whole weekend cleaning out the garage",
    "my sister is coming to visit us next month",
    "I have been trying to learn how to cook rice properly",
    "the train was late again this morning so I missed the meeting",
    "we are thinking about getting a dog for the kids",
    "last night I watched a documentary about deep sea fish",
    "the weather has been so strange this spring",
    "I started running in the park before work",
    "my neighbour plays the piano every evening after dinner",
    "we found a lovely little beach on our holiday",
    "honestly I think the old version of the app was better",
    "I keep forgetting to water the plants on the balcony",
    "the kids want pizza every single night this week",
    "my brother just moved to a tiny flat in the city",
    "I read a great book about the history of coffee",
    "our team finally finished the project on friday",
    "the garden is full of tomatoes and nobody wants them",
    "I think we should try the new place for lunch",
    "my phone stopped working right in the middle of the call",
    "we went hiking and got completely lost for an hour",
    "the concert was loud but the band was fantastic",
    "I bought a bike but I have not ridden it yet",
    "my grandmother still writes letters to all of us",
    "the market sells the best apples in the autumn",
    "we painted the kitchen a bright shade of yellow",
    "I tried to fix the sink and made it much worse",
    "the library has a free film night every thursday",
    "my cousin is getting married in a castle in june",
    "I sleep much better since I stopped drinking coffee at night",
    "the bus driver knew everybody on the bus by name",
    "we made soup from the vegetables in the fridge",
    "I signed up for a pottery class with my friend",
    "the cat keeps sleeping on my keyboard while I work",
    "our flight was cancelled so we took the train instead",
    "I finally cleaned my desk and found my old glasses",
    "my boss wants everyone back in the office on monday",
    "we are planning a small party for my father's birthday",
    "the snow was so deep that the school closed early",
    "we stayed home all weekend",
    "my new job starts on monday",
    "the soup was far too salty",
    "I finally fixed my old bike",
    "the dog ate my sandwich today",
    "our power went out last night",
    "I met your cousin at the shop",
    "we got tickets for the show",
)
LISTENER_LINES = (
    "oh that sounds lovely",
    "really I had no idea",
    "did you enjoy it",
    "that must have been hard",
    "what happened next",
    "I would love to try that",
    "how long did it take",
    "that is so funny",
    "oh no that is terrible",
    "we should go together sometime",
    "I have heard good things about it",
    "was it expensive",
    "that reminds me of my uncle",
    "good for you",
    "tell me more about it",
)
BACKCHANNELS = ("mm-hm", "yeah", "right", "okay", "I see", "uh-huh")
INTERRUPTION_OPENERS = ("sorry but", "wait", "hold on", "oh but", "sorry")


@dataclass(frozen=True)
class PlacedWord:
    """One word of a track; ``start`` and ``end`` in seconds, exact to the sample."""

    text: str
    start: float
    end: float


@dataclass
class VoiceTrack:
    """One participant's side of a conversation.

    Attributes:
        words: every word placed, in time order; words never overlap each other.
        speech: ``[(start, end), ...]`` seconds; the word intervals, merged where the silence
            between consecutive words is shorter than 0.25 s.
        audio: ``float32 [round(duration * sample_rate)]``; exactly 0.0 outside the words.
        turns: ``[(start, end, kind), ...]`` seconds, kind ``"turn"``, ``"backchannel"`` or
            ``"interruption"`` (a turn that cut the other's turn short).
    """

    words: list[PlacedWord]
    speech: list[tuple[float, float]]
    audio: np.ndarray
    turns: list[tuple[float, float, str]]


def plan_conversation(rng: np.random.Generator, voices: tuple[Voice, Voice], duration: float, *,
                      interruption: bool = False, sample_rate: int = 16000,
                      ) -> tuple[VoiceTrack, VoiceTrack]:
    """Script, voice and place a conversation between a speaker and a listener.

    Args:
        rng: the only source of randomness; the same state gives the same words, times and audio.
        voices: (speaker voice, listener voice).
        duration: length in seconds, at least 8; no word ends after it.
        interruption: also let the listener cut one of the speaker's turns short.
        sample_rate: of the track audio, in Hz.

    Returns:
        ``(speaker, listener)`` tracks; see the module docstring for what they always contain.

    Raises:
        ValueError: ``duration`` is below 8 s.
    """
    if not duration >= MIN_DURATION_S:
        raise ValueError(f"a synthetic conversation needs at least {MIN_DURATION_S:g} s to fit "
                         f"its turns, backchannel and overlap; got duration={duration}")
    pools = {"speaker": SPEAKER_LINES, "listener": LISTENER_LINES,
             "backchannel": BACKCHANNELS, "opener": INTERRUPTION_OPENERS}
    planner = Planner(rng, voices, pools, round(duration * sample_rate), sample_rate)
    planner.run(interruption)
    tracks = (_track(planner, 0), _track(planner, 1))
    problems = plan_problems(tracks, interruption)
    if problems:  # pragma: no cover - a bug in the planner, not a user error
        raise ResponseNetError(f"conversation plan misses {problems}; please report this with "
                               "the seed and duration")
    return tracks


def merge_speech(words: list[PlacedWord]) -> list[tuple[float, float]]:
    """Word intervals merged where consecutive words are less than 0.25 s apart (seconds)."""
    speech: list[tuple[float, float]] = []
    for word in words:
        if speech and word.start - speech[-1][1] < MERGE_GAP_S:
            speech[-1] = (speech[-1][0], max(speech[-1][1], word.end))
        else:
            speech.append((word.start, word.end))
    return speech


def overlap_seconds(a: list[PlacedWord], b: list[PlacedWord]) -> float:
    """Total time (seconds) during which a word of ``a`` and a word of ``b`` both sound."""
    return sum(max(0.0, min(x.end, y.end) - max(x.start, y.start)) for x in a for y in b)


def plan_problems(tracks: tuple[VoiceTrack, VoiceTrack], interruption: bool) -> list[str]:
    """The guarantees (module docstring) that ``tracks`` misses, as snake_case codes."""
    turns = sorted((t[0], t[1], t[2], i) for i, track in enumerate(tracks) for t in track.turns
                   if t[2] != "backchannel")
    pairs = list(pairwise(turns))
    problems = []
    if any(a[3] == b[3] for a, b in pairs):
        problems.append("turns_not_alternating")
    if not any(PAUSE_S[0] - 1e-9 <= b[0] - a[1] <= PAUSE_S[1] + 1e-9 for a, b in pairs):
        problems.append("no_pause")
    if not _has_backchannel(tracks):
        problems.append("no_backchannel")
    if not any(b[0] < a[1] and _overlap_between(tracks, b[0], a[1]) >= OVERLAP_S - 1e-9
               for a, b in pairs):
        problems.append("no_overlap")
    if interruption and not any(b[2] == "interruption" for b in turns):
        problems.append("no_interruption")
    return problems


def _overlap_between(tracks, start: float, end: float) -> float:
    words = [[w for w in t.words if w.end > start and w.start < end] for t in tracks]
    return overlap_seconds(*words)


def _has_backchannel(tracks: tuple[VoiceTrack, VoiceTrack]) -> bool:
    """Whether a listener backchannel lies between two words of one speaker turn while a
    speaker word sounds during it."""
    for start, end, kind in tracks[1].turns:
        for turn_start, turn_end, _ in tracks[0].turns if kind == "backchannel" else []:
            words = [w for w in tracks[0].words if turn_start <= w.start and w.end <= turn_end]
            if any(w.end <= start for w in words) and any(w.start >= end for w in words) and \
                    any(w.start < end and w.end > start for w in words):
                return True
    return False


def _track(planner: Planner, index: int) -> VoiceTrack:
    """Seconds, merged speech and audio of one track of a finished plan."""
    sr = planner.sr
    audio = np.zeros(planner.n, dtype=np.float32)
    words = []
    for slot in sorted(planner.slots[index], key=lambda s: s.offset):
        audio[slot.offset : slot.end] = slot.audio
        words.append(PlacedWord(slot.text, slot.offset / sr, slot.end / sr))
    turns = sorted((a / sr, b / sr, kind) for a, b, kind in planner.turns[index])
    return VoiceTrack(words, merge_speech(words), audio, turns)
