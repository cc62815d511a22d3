"""Chrono-Text vocabulary: token strings <-> integer ids, special tokens first.

Ids 0-3 are always ``[PAD]`` (padding added by ``collate``), ``[UNK]`` (a token not in the
vocabulary), ``[PAUSE]`` and ``[LASTING]`` (``responsenet.chrono``); word tokens follow, most
frequent first (ties in string order), so a vocabulary built from the same streams is the same.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from responsenet.chrono import LASTING, PAUSE
from responsenet.errors import UsageError

PAD = "[PAD]"
UNK = "[UNK]"
#: The special tokens, in id order: PAD = 0, UNK = 1, PAUSE = 2, LASTING = 3.
SPECIALS: tuple[str, ...] = (PAD, UNK, PAUSE, LASTING)
_FORMAT = "responsenet.chrono_vocab"


class ChronoVocab:
    """A fixed token <-> id mapping for Chrono-Text streams.

    Args:
        words: word tokens (escaped as in the streams), in id order; special tokens and
            duplicates are skipped.
        counts: optional token -> count seen when building (saved with the vocabulary).
    """

    pad_id, unk_id, pause_id, lasting_id = range(4)

    def __init__(self, words: Iterable[str] = (), counts: dict[str, int] | None = None):
        self._tokens: list[str] = list(SPECIALS)
        self._ids: dict[str, int] = {token: i for i, token in enumerate(SPECIALS)}
        for word in words:
            if word not in self._ids:
                self._ids[word] = len(self._tokens)
                self._tokens.append(word)
        self.counts = dict(counts or {})

    @classmethod
    def build(cls, streams: Iterable[Sequence[str]], min_count: int = 1,
              max_size: int | None = None) -> ChronoVocab:
        """Vocabulary of the word tokens in ``streams`` (special tokens are always present).

        Args:
            streams: Chrono-Text token streams, str [T] each.
            min_count: keep words seen at least this often.
            max_size: most ids in all, specials included (None: no limit).
        """
        counts: Counter[str] = Counter()
        for stream in streams:
            counts.update(stream)
        return cls._from_counts(counts, min_count, max_size)

    @classmethod
    def from_corpus(cls, root: str | Path, split: str | None = "train", min_count: int = 1,
                    max_size: int | None = None) -> ChronoVocab:
        """Vocabulary of both tracks' ``chrono`` streams of a corpus split (every split: None).

        Reads only the ``chrono`` column of the split's shards.
        """
        from responsenet.data.index import shard_paths
        from responsenet.shards import read_tracks

        counts: Counter[str] = Counter()
        for path in shard_paths(root, split):
            tokens = pc.list_flatten(read_tracks(path, columns=["chrono"]).column("chrono"))
            for row in pc.value_counts(tokens).to_pylist():
                counts[row["values"]] += row["counts"]
        return cls._from_counts(counts, min_count, max_size)

    @classmethod
    def _from_counts(cls, counts: Counter[str], min_count: int,
                     max_size: int | None) -> ChronoVocab:
        if max_size is not None and max_size < len(SPECIALS):
            raise ValueError(f"max_size must be >= {len(SPECIALS)} (the special tokens), "
                             f"got {max_size}")
        words = sorted((t for t, n in counts.items() if n >= min_count and t not in SPECIALS),
                       key=lambda t: (-counts[t], t))
        if max_size is not None:
            words = words[: max_size - len(SPECIALS)]
        return cls(words, counts={t: counts[t] for t in words})

    def __len__(self) -> int:
        return len(self._tokens)

    def __contains__(self, token: object) -> bool:
        return token in self._ids

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ChronoVocab):
            return NotImplemented
        return self._tokens == other._tokens

    def __repr__(self) -> str:
        return f"ChronoVocab({len(self)} tokens: {self._tokens[4:9]}...)"

    @property
    def tokens(self) -> list[str]:
        """All tokens in id order (a copy)."""
        return list(self._tokens)

    def token_to_id(self, token: str) -> int:
        """Id of ``token``; ``unk_id`` when it is not in the vocabulary."""
        return self._ids.get(token, self.unk_id)

    def id_to_token(self, token_id: int) -> str:
        """Token of ``token_id``.

        Raises:
            IndexError: the id is negative or >= ``len(self)``.
        """
        if not 0 <= token_id < len(self._tokens):
            raise IndexError(f"token id {token_id} outside this vocabulary of {len(self)} ids")
        return self._tokens[token_id]

    def encode(self, tokens: Sequence[str] | pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Ids of a token stream: int64 [T]; unknown tokens map to ``unk_id``."""
        if isinstance(tokens, pa.Array | pa.ChunkedArray):
            encoded = pc.dictionary_encode(tokens)
            if isinstance(encoded, pa.ChunkedArray):
                encoded = encoded.combine_chunks()
            table = np.array([self.token_to_id(t) for t in encoded.dictionary.to_pylist()],
                             dtype=np.int64)
            indices = encoded.indices.to_numpy(zero_copy_only=False)
            return table[indices] if len(table) else np.zeros(0, np.int64)
        return np.fromiter((self._ids.get(t, self.unk_id) for t in tokens), np.int64,
                           count=len(tokens))

    def decode(self, ids: Iterable[int], strip_pad: bool = False) -> list[str]:
        """Tokens of ``ids`` (a list, array or 1-D tensor); ``strip_pad`` drops ``[PAD]``."""
        tokens = [self.id_to_token(int(i)) for i in np.asarray(ids).reshape(-1)]
        return [t for t in tokens if t != PAD] if strip_pad else tokens

    def to_dict(self) -> dict:
        return {"format": _FORMAT, "version": 1, "tokens": self._tokens, "counts": self.counts}

    @classmethod
    def from_dict(cls, data: dict) -> ChronoVocab:
        """Inverse of ``to_dict``.

        Raises:
            UsageError: not a vocabulary dict, or its first tokens are not ``SPECIALS``.
        """
        data = data if isinstance(data, dict) else {}
        tokens = data.get("tokens")
        if data.get("format") != _FORMAT or not isinstance(tokens, list) or \
                tuple(tokens[: len(SPECIALS)]) != SPECIALS:
            raise UsageError(f"not a Chrono-Text vocabulary: expected format {_FORMAT!r} with "
                             f"tokens starting {list(SPECIALS)}; build one with "
                             "ChronoVocab.from_corpus(root).save(path)")
        return cls(tokens[len(SPECIALS):], counts=data.get("counts"))

    def save(self, path: str | Path) -> Path:
        """Write the vocabulary as JSON (UTF-8); returns ``path``."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=1) + "\n",
                        encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> ChronoVocab:
        """Read a vocabulary written by ``save``."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise UsageError(f"cannot read the Chrono-Text vocabulary {path}: {e}") from e
        return cls.from_dict(data)
