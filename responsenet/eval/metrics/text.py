"""Text metrics: METEOR, ROUGE-L, Distinct-n and BERTScore of generated vs real listener words.

Clip rule (all reference-based metrics): a clip is scored when its ``ref_text`` holds a word; a
clip whose reference is empty or None is left out (there is nothing to compare against). Among the
scored clips an empty or None ``gen_text`` is an empty candidate and scores 0, as nltk and
bert-score score an empty hypothesis. With no reference text anywhere the metric raises
``MetricSkipped("no clip has reference text")``. Distinct-n needs no reference: it counts over
every generated text, and scores 0 when there are no n-grams at all.

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


def text_pairs(clips: Sequence[ScoredClip]) -> list[tuple[str, str]]:
    """(generated, reference) texts of the clips that have reference words (see module rule)."""
    require(clips, "gen_text")
    pairs = [((c.gen_text or "").strip(), c.ref_text.strip())
             for c in clips if c.ref_text is not None and c.ref_text.strip()]
    if not pairs:
        raise MetricSkipped("no clip has reference text")
    return pairs


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
    """Mean METEOR over clips with reference text; tokens from :func:`tokenize_words`."""
    pairs = text_pairs(clips)
    wordnet = load_wordnet(str(ctx.asset("wordnet")))
    return float(np.mean([meteor_score_tokens([tokenize_words(ref)], tokenize_words(gen), wordnet)
                          for gen, ref in pairs]))


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
    """Mean ROUGE-L F (beta 1.2) on whitespace tokens over clips with reference text."""
    beta = float(ctx.param("rouge_l", "beta", 1.2))
    return float(np.mean([rouge_l_f(gen.split(), [ref.split()], beta)
                          for gen, ref in text_pairs(clips)]))


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
                     ref_weight: np.ndarray) -> tuple[float, float, float]:
    """BERTScore precision, recall and F1 of one pair by greedy cosine matching.

    Every token is a match target (special tokens included, as in bert-score); the averages
    weight each token by ``*_weight`` (1, or 0 for ``<s>``/``</s>``/``[CLS]``/``[SEP]``). This
    equals bert-score run with ``batch_size=1``: in padded batches bert-score also lets a padding
    position (cosine 0) win a max whose real cosines are all negative, so its value depends on
    which pairs share a batch (seen with MiniLM, up to 6e-4 on one pair's F1).

    Args:
        cand_emb: float [Lc, D] candidate token embeddings; ref_emb: float [Lr, D] reference.
        cand_weight: float [Lc]; ref_weight: float [Lr].

    Returns:
        ``(P, R, F1)``; all 0 when either side has no weighted token (an empty sentence).
    """
    if cand_weight.sum() == 0 or ref_weight.sum() == 0:
        return 0.0, 0.0, 0.0
    cand = cand_emb / np.linalg.norm(cand_emb, axis=-1, keepdims=True)
    ref = ref_emb / np.linalg.norm(ref_emb, axis=-1, keepdims=True)
    sim = cand @ ref.T
    precision = float((sim.max(axis=1) * cand_weight).sum() / cand_weight.sum())
    recall = float((sim.max(axis=0) * ref_weight).sum() / ref_weight.sum())
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
    """float [N, 3] (P, R, F1) per (candidate, reference) pair with the model in ``folder``."""
    tokenizer, model = load_encoder(str(folder), num_layers, device)
    emb = embed_texts(tokenizer, model, [t for pair in pairs for t in pair], batch_size)
    return np.array([greedy_match_prf(emb[c][0], emb[r][0], emb[c][1], emb[r][1])
                     for c, r in pairs], dtype=np.float64).reshape(-1, 3)


def _bertscore(clips: Sequence[ScoredClip], ctx: MetricContext, name: str, asset: str,
               model_type: str, num_layers: int) -> float:
    import transformers

    pairs = text_pairs(clips)
    folder = ctx.asset(asset)
    batch_size = int(ctx.param(name, "batch_size", 64))
    scores = bertscore_pairs(pairs, folder, num_layers, ctx.device, batch_size)
    ctx.notes[name] = {"hash": bertscore_hash(model_type, num_layers, transformers.__version__)}
    return float(scores[:, 2].mean())


def bertscore_f1(clips: Sequence[ScoredClip], ctx: MetricContext) -> float:
    """Mean BERTScore F1: roberta-large layer 17, no idf, no rescale (bert-score, lang=en)."""
    return _bertscore(clips, ctx, "bertscore_f1", "roberta_large", "roberta-large", 17)


def bertscore_minilm(clips: Sequence[ScoredClip], ctx: MetricContext) -> float:
    """Mean BERTScore F1 with all-MiniLM-L6-v2 layer 6 (offline variant, same code)."""
    return _bertscore(clips, ctx, "bertscore_minilm", "minilm_l6_v2",
                      "sentence-transformers/all-MiniLM-L6-v2", 6)
