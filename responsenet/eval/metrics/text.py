"""Text metrics: METEOR, ROUGE-L, Distinct-n and BERTScore of generated vs real listener words.

Computed as OmniResponse's released text scripts (``evaluation/text``) compute them, one JSON file
per clip with its ``text``:

- Clip rule (reference-based metrics): a clip is scored when both its ``ref_text`` and its
  ``gen_text`` hold a word after stripping. A clip with an empty or None reference is left out
  (nothing to compare against); so is a clip whose generated text is empty or None, because the
  released scripts skip such a pair instead of scoring it 0. That rewards a model for staying
  silent where it would score badly; ``params[metric]["empty_gen"] = "zero"`` scores those clips
  0 instead (our earlier rule, not the paper's). The value is the mean over scored clips, 0.0
  when no clip is left (as the released scripts print), and ``MetricSkipped("no clip has
  reference text")`` when no clip has a reference at all. ``ctx.notes[metric]`` records how many
  clips were scored and how many were dropped for an empty generation.
- Distinct-n needs no reference: it counts over every generated text, and scores 0 when there are
  no n-grams at all.

The math lives in pure functions (``meteor_score_tokens``, ``rouge_l_f``, ``distinct_n``,
``greedy_match_prf``, ...); the functions the registry names wrap them for ScoredClips. nltk, torch
and transformers are imported only when a metric that needs them runs.
"""

from __future__ import annotations

import functools
import io
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from responsenet.errors import UsageError
from responsenet.eval.metrics.base import MetricContext, MetricSkipped, ScoredClip, require

log = logging.getLogger(__name__)

#: the bert-score release whose computation the BERTScore code reproduces (checked in the tests)
BERT_SCORE_VERSION = "0.3.13"

#: WordNet 3.0 lexicographer file names by number (``lexnames(5WN)``): Debian's wordnet-base does
#: not ship the ``lexnames`` file that nltk's reader opens, so it is served from here.
_LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute "
    "noun.body noun.cognition noun.communication noun.event noun.feeling noun.food noun.group "
    "noun.location noun.motive noun.object noun.person noun.phenomenon noun.plant "
    "noun.possession noun.process noun.quantity noun.relation noun.shape noun.state "
    "noun.substance noun.time verb.body verb.change verb.cognition verb.communication "
    "verb.competition verb.consumption verb.contact verb.creation verb.emotion verb.motion "
    "verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl"
).split()
_POS_NUMBER = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}


EMPTY_GEN_RULES = ("skip", "zero")


def text_pairs(clips: Sequence[ScoredClip], empty_gen: str = "skip") -> list[tuple[str, str]]:
    """(generated, reference) stripped texts of the clips to score (see the module's clip rule).

    Args:
        clips: the run's clips; at least one must have ``gen_text``.
        empty_gen: ``"skip"`` leaves out clips whose generated text is empty or None (the released
            scripts); ``"zero"`` keeps them as empty candidates, which score 0.

    Returns:
        Pairs in the order of the released scripts' file names (``{clip_id}.json`` sorted), which
        is the order BERTScore batches them in.
    """
    if empty_gen not in EMPTY_GEN_RULES:
        raise UsageError(f"empty_gen must be one of {', '.join(EMPTY_GEN_RULES)}, "
                         f"not {empty_gen!r}")
    require(clips, "gen_text")
    with_ref = sorted((c for c in clips if c.ref_text is not None and c.ref_text.strip()),
                      key=lambda c: f"{c.clip_id}.json")
    if not with_ref:
        raise MetricSkipped("no clip has reference text")
    pairs = [((c.gen_text or "").strip(), c.ref_text.strip()) for c in with_ref]
    return [(gen, ref) for gen, ref in pairs if gen or empty_gen == "zero"]


def _pairs_for(name: str, clips: Sequence[ScoredClip], ctx: MetricContext
               ) -> list[tuple[str, str]]:
    """:func:`text_pairs` with the metric's ``empty_gen`` param, counts noted in ``ctx.notes``."""
    pairs = text_pairs(clips, str(ctx.param(name, "empty_gen", "skip")))
    with_ref = sum(1 for c in clips if c.ref_text is not None and c.ref_text.strip())
    ctx.notes.setdefault(name, {}).update(
        {"scored_clips": len(pairs), "empty_gen_skipped": with_ref - len(pairs)})
    return pairs


def _mean(values: Sequence[float]) -> float:
    """Mean of per-clip scores; 0.0 for none, as the released scripts report it."""
    return float(np.mean(values)) if len(values) else 0.0


# --- METEOR ---------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _word_tokenizers() -> tuple[Any, Any]:
    from nltk.tokenize import NLTKWordTokenizer
    from nltk.tokenize.punkt import PunktSentenceTokenizer

    return PunktSentenceTokenizer(), NLTKWordTokenizer()


def tokenize_words(text: str) -> list[str]:
    """nltk ``word_tokenize`` without the punkt download.

    ``word_tokenize`` splits sentences with the pretrained English punkt model (a download) and
    then runs the Treebank-style ``NLTKWordTokenizer`` on each sentence. Here the sentences come
    from an untrained ``PunktSentenceTokenizer`` (no data needed), which splits after every
    sentence-final ``. ! ?``; it differs from ``word_tokenize`` only on abbreviations the English
    model knows (``Mr. Smith`` -> ``Mr . Smith``). ``word_tokenize(text, preserve_line=True)``
    would instead keep mid-text periods attached (``yeah. ok`` -> ``yeah.``, ``ok``).
    """
    sentences, words = _word_tokenizers()
    return [token for sentence in sentences.tokenize(text) for token in words.tokenize(sentence)]


@functools.lru_cache(maxsize=2)
def load_wordnet(folder: str) -> Any:
    """nltk ``WordNetCorpusReader`` over a WordNet 3.0 dict folder (e.g. /usr/share/wordnet).

    No ``nltk.download``: the reader opens the folder's files; ``lexnames`` is served from
    :data:`_LEXNAMES` when the folder lacks it. ``omw_reader`` is None (English only), so the
    version map for multilingual data (``map_wn``, which would load nltk's own copy) is skipped. nltk >= 3.9
    reads corpora only under ``nltk.data.path``, so the folder is appended there (its documented
    opt-in).
    """
    import nltk.data
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    if folder not in nltk.data.path:
        nltk.data.path.append(folder)

    has_lexnames = (Path(folder) / "lexnames").is_file()
    lexnames = "".join(f"{i:02d}\t{name}\t{_POS_NUMBER[name.split('.')[0]]}\n"
                       for i, name in enumerate(_LEXNAMES))

    class FolderWordNet(WordNetCorpusReader):
        def open(self, file: str) -> Any:
            if file == "lexnames" and not has_lexnames:
                return io.StringIO(lexnames)
            return super().open(file)

        def map_wn(self, version: str = "wordnet") -> None:
            return None  # maps other WordNet versions onto this one for OMW, which is unused

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The multilingual functions")
        return FolderWordNet(folder, None)


def meteor_score_tokens(references: Sequence[Sequence[str]], hypothesis: Sequence[str],
                        wordnet: Any) -> float:
    """nltk METEOR (alpha 0.9, beta 3, gamma 0.5, lower-cased, Porter stems, WordNet synonyms).

    Args:
        references: token lists of the reference texts (the best-scoring one counts).
        hypothesis: tokens of the generated text; empty scores 0.
        wordnet: a WordNet reader (:func:`load_wordnet`).
    """
    from nltk.translate.meteor_score import meteor_score

    return float(meteor_score([list(r) for r in references], list(hypothesis), wordnet=wordnet))


def meteor(clips: Sequence[ScoredClip], ctx: MetricContext) -> float:
    """Mean METEOR over the scored clips (module clip rule); tokens from :func:`tokenize_words`.

    The released script tokenizes with nltk ``word_tokenize`` (punkt's English model); we cannot
    ship that model, so sentences are split by an untrained punkt, which differs only on
    abbreviations the English model knows (see :func:`tokenize_words`).
    """
    pairs = _pairs_for("meteor", clips, ctx)
    wordnet = load_wordnet(str(ctx.asset("wordnet")))
    return _mean([meteor_score_tokens([tokenize_words(ref)], tokenize_words(gen), wordnet)
                  for gen, ref in pairs])


# --- ROUGE-L and Distinct ---------------------------------------------------------------------------

def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token sequences."""
    previous = [0] * (len(b) + 1)
    for token in a:
        current = [0]
        for j, other in enumerate(b):
            current.append(previous[j] + 1 if token == other else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l_f(candidate: Sequence[str], references: Sequence[Sequence[str]],
              beta: float = 1.2) -> float:
    """ROUGE-L as pycocoevalcap computes it: F_beta of the max precision and max recall.

    ``P = max_r LCS/len(candidate)``, ``R = max_r LCS/len(r)``, ``F = (1+b^2) P R / (R + b^2 P)``;
    0 when either is 0 (also for an empty candidate or reference).
    """
    lcs = [lcs_length(candidate, ref) for ref in references]
    precision = max((n / len(candidate) for n in lcs if candidate), default=0.0)
    recall = max((n / len(ref) for n, ref in zip(lcs, references) if ref), default=0.0)
    if precision == 0 or recall == 0:
        return 0.0
    return (1 + beta**2) * precision * recall / (recall + beta**2 * precision)


def rouge_l(clips: Sequence[ScoredClip], ctx: MetricContext) -> float:
    """Mean ROUGE-L F (beta 1.2) on case-sensitive whitespace tokens over the scored clips."""
    beta = float(ctx.param("rouge_l", "beta", 1.2))
    return _mean([rouge_l_f(gen.split(), [ref.split()], beta)
                  for gen, ref in _pairs_for("rouge_l", clips, ctx)])


def distinct_n(texts: Sequence[Sequence[str]], n: int) -> float:
    """Corpus-level Distinct-n: unique n-grams / all n-grams, n-grams taken within each text.

    Args:
        texts: token lists, one per text; n-grams never span two texts.
        n: n-gram order (1 or 2 in the benchmark).

    Returns:
        A value in [0, 1]; 0 when the texts hold no n-gram.
    """
    grams = [tuple(tokens[i:i + n]) for tokens in texts for i in range(len(tokens) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def distinct(clips: Sequence[ScoredClip], ctx: MetricContext) -> dict[str, float]:
    """Distinct-1 and Distinct-2 over the whitespace tokens of all generated texts."""
    require(clips, "gen_text")
    texts = [c.gen_text.split() for c in clips if c.gen_text is not None]
    return {"1": distinct_n(texts, 1), "2": distinct_n(texts, 2)}


# --- BERTScore ----------------------------------------------------------------------------------

def bertscore_hash(model_type: str, num_layers: int, transformers_version: str) -> str:
    """bert-score's hash string for our settings (no idf, no rescale, default tokenizer)."""
    return (f"{model_type}_L{num_layers}_no-idf_version={BERT_SCORE_VERSION}"
            f"(hug_trans={transformers_version})")


def greedy_match_prf(cand_emb: np.ndarray, ref_emb: np.ndarray, cand_weight: np.ndarray,
                     ref_weight: np.ndarray, ref_padded: bool = False, cand_padded: bool = False
                     ) -> tuple[float, float, float]:
    """BERTScore precision, recall and F1 of one pair by greedy cosine matching.

    Every token is a match target (special tokens included, as in bert-score); the averages
    weight each token by ``*_weight`` (1, or 0 for ``<s>``/``</s>``/``[CLS]``/``[SEP]``).

    bert-score matches a whole batch of pairs at once, each side padded to the batch's longest
    sentence, and masks padding to a cosine of 0 rather than leaving it out. Where a pair's
    reference is shorter than the batch's longest one (``ref_padded``), a candidate token whose
    real cosines are all negative therefore matches a padding 0; likewise for recall with
    ``cand_padded``. The released script runs bert-score with batches of 64 pairs, so its value
    depends on that; :func:`bertscore_pairs` sets the flags accordingly (with both False this is
    bert-score at ``batch_size=1``).

    Args:
        cand_emb: float [Lc, D] candidate token embeddings; ref_emb: float [Lr, D] reference.
        cand_weight: float [Lc]; ref_weight: float [Lr].
        ref_padded, cand_padded: that side was padded in bert-score's batch.

    Returns:
        ``(P, R, F1)``; all 0 when either side has no weighted token (an empty sentence).
    """
    if cand_weight.sum() == 0 or ref_weight.sum() == 0:
        return 0.0, 0.0, 0.0
    cand = cand_emb / np.linalg.norm(cand_emb, axis=-1, keepdims=True)
    ref = ref_emb / np.linalg.norm(ref_emb, axis=-1, keepdims=True)
    sim = cand @ ref.T
    best_ref = sim.max(axis=1)
    best_cand = sim.max(axis=0)
    if ref_padded:
        best_ref = np.maximum(best_ref, 0.0)
    if cand_padded:
        best_cand = np.maximum(best_cand, 0.0)
    precision = float((best_ref * cand_weight).sum() / cand_weight.sum())
    recall = float((best_cand * ref_weight).sum() / ref_weight.sum())
    total = precision + recall
    return precision, recall, (2 * precision * recall / total if total != 0 else 0.0)


@functools.lru_cache(maxsize=2)
def load_encoder(folder: str, num_layers: int, device: str = "cpu") -> tuple[Any, Any]:
    """(tokenizer, model) from a local transformers folder, cut after layer ``num_layers``."""
    import torch
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Loading weights" bar in the middle of a report
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    layers = getattr(getattr(model, "encoder", None), "layer", None)
    if layers is None or not 0 <= num_layers <= len(layers):
        raise ValueError(f"{folder}: expected a BERT/RoBERTa encoder with >= {num_layers} layers")
    model.encoder.layer = torch.nn.ModuleList(list(layers)[:num_layers])
    return tokenizer, model.to(device)


def encode_ids(tokenizer: Any, text: str) -> list[int]:
    """Token ids as bert-score's ``sent_encode``: special tokens added, truncated to the model.

    Byte-level BPE tokenizers (RoBERTa, GPT-2) get a leading space, which is what bert-score's
    ``add_prefix_space=True`` did (transformers 5 ignores that argument of ``encode``).
    """
    import transformers

    byte_level = tuple(getattr(transformers, name) for name in (
        "GPT2Tokenizer", "GPT2TokenizerFast", "RobertaTokenizer", "RobertaTokenizerFast")
        if hasattr(transformers, name))  # transformers 4 has separate *Fast classes
    text = text.strip()
    if not text:
        return [tokenizer.cls_token_id, tokenizer.sep_token_id]
    if isinstance(tokenizer, byte_level):
        text = " " + text
    max_length = min(tokenizer.model_max_length, 1 << 20)
    return tokenizer.encode(text, add_special_tokens=True, max_length=max_length, truncation=True)


def embed_texts(tokenizer: Any, model: Any, texts: Sequence[str], batch_size: int = 64
                ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per distinct text: (float32 [L, D] last-layer embeddings, float32 [L] token weights)."""
    import torch

    ids_of = {text: encode_ids(tokenizer, text) for text in set(texts)}
    unique = sorted(ids_of, key=lambda text: len(ids_of[text]))
    special = {tokenizer.cls_token_id, tokenizer.sep_token_id}
    device = next(model.parameters()).device
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for start in range(0, len(unique), batch_size):
        batch = unique[start:start + batch_size]
        ids = [ids_of[text] for text in batch]
        longest = max(len(i) for i in ids)
        padded = torch.full((len(ids), longest), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(padded)
        for row, seq in enumerate(ids):
            padded[row, :len(seq)] = torch.tensor(seq)
            mask[row, :len(seq)] = 1
        with torch.no_grad():
            hidden = model(padded.to(device), attention_mask=mask.to(device)).last_hidden_state
        hidden = hidden.float().cpu().numpy()
        for row, (text, seq) in enumerate(zip(batch, ids)):
            weight = np.array([0.0 if i in special else 1.0 for i in seq], dtype=np.float32)
            out[text] = (hidden[row, :len(seq)], weight)
    return out


def bertscore_pairs(pairs: Sequence[tuple[str, str]], folder: str | Path, num_layers: int,
                    device: str = "cpu", batch_size: int = 64) -> np.ndarray:
    """float [N, 3] (P, R, F1) per (candidate, reference) pair with the model in ``folder``.

    ``batch_size`` is bert-score's: it sets which pairs share a padded matching batch (see
    :func:`greedy_match_prf`), as consecutive runs of ``batch_size`` pairs in the given order, and
    how many sentences are embedded at once (which changes nothing but round-off).
    """
    tokenizer, model = load_encoder(str(folder), num_layers, device)
    emb = embed_texts(tokenizer, model, [t for pair in pairs for t in pair], batch_size)
    out = []
    for start in range(0, len(pairs), batch_size):
        batch = pairs[start:start + batch_size]
        longest_cand = max(len(emb[c][1]) for c, _ in batch)
        longest_ref = max(len(emb[r][1]) for _, r in batch)
        out += [greedy_match_prf(emb[c][0], emb[r][0], emb[c][1], emb[r][1],
                                 ref_padded=len(emb[r][1]) < longest_ref,
                                 cand_padded=len(emb[c][1]) < longest_cand)
                for c, r in batch]
    return np.array(out, dtype=np.float64).reshape(-1, 3)


def _bertscore(clips: Sequence[ScoredClip], ctx: MetricContext, name: str, asset: str,
               model_type: str, num_layers: int) -> float:
    import transformers

    pairs = _pairs_for(name, clips, ctx)
    folder = ctx.asset(asset)
    batch_size = int(ctx.param(name, "batch_size", 64))
    ctx.notes[name]["hash"] = bertscore_hash(model_type, num_layers, transformers.__version__)
    if not pairs:
        return 0.0
    scores = bertscore_pairs(pairs, folder, num_layers, ctx.device, batch_size)
    return float(scores[:, 2].mean())


def bertscore_f1(clips: Sequence[ScoredClip], ctx: MetricContext) -> float:
    """Mean BERTScore F1 over the scored clips: roberta-large layer 17, no idf, no rescale.

    These are bert-score's defaults for ``lang="en"``, which the released script uses, with its
    batches of 64 pairs (param ``batch_size``) taken in file-name order.
    """
    return _bertscore(clips, ctx, "bertscore_f1", "roberta_large", "roberta-large", 17)


def bertscore_minilm(clips: Sequence[ScoredClip], ctx: MetricContext) -> float:
    """Mean BERTScore F1 with all-MiniLM-L6-v2 layer 6 (offline variant, same code)."""
    return _bertscore(clips, ctx, "bertscore_minilm", "minilm_l6_v2",
                      "sentence-transformers/all-MiniLM-L6-v2", 6)
