"""Sentence rules that need the whole corpus or a model: information entropy (Spark aggregation + join),
CAT (spaCy) and perplexity (causal LM) scores kept in `sentence_scores`.

Model scores are computed once per (sentence, scorer) and only for sentences that reach the rule (those
that passed the rules before it), so a threshold change re-decides from stored scores and only scores
sentences that newly reach a rule. The entropy is recomputed from the corpus every run: the word
probabilities are corpus-wide, so new documents change every sentence's score, and an incremental run
decides exactly as a full rebuild.
"""
from __future__ import annotations

import logging
import math

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from realsyn_spark.config import SentenceFilterConfig
from realsyn_spark.tables import SENTENCE_SCORES, Lake

log = logging.getLogger("realsyn")

# Word tokens for the entropy: lower-cased runs of letters/digits, keeping inner apostrophes ("it's").
ENTROPY_WORD_PATTERN = "[\\p{L}\\p{N}]+(?:['\u2019][\\p{L}\\p{N}]+)*"


def entropy_words(text_col: str = "text"):
    return F.regexp_extract_all(F.lower(F.col(text_col)), F.lit(ENTROPY_WORD_PATTERN), 0)


def word_probabilities(corpus: DataFrame) -> DataFrame:
    """(word, p) over every word token of `corpus` (text column): p = count / total tokens."""
    words = corpus.select(F.explode(entropy_words()).alias("word"))
    counts = words.groupBy("word").agg(F.count(F.lit(1)).alias("n"))
    return (counts.crossJoin(counts.agg(F.sum("n").alias("total")))
            .select("word", (F.col("n") / F.col("total")).alias("p")))


def sentence_entropy(corpus: DataFrame, sentences: DataFrame, log_base: float) -> DataFrame:
    """(sentence_id, entropy) with entropy = -sum_i p(w_i) log_b p(w_i) over the sentence's word tokens
    (repeats counted, as the paper's sum over i = 1..n), p from the whole `corpus`. A sentence without
    word tokens gets 0. Word probabilities stay distributed: the per-word contribution is joined on the
    exploded tokens (AQE splits the skewed partitions of very frequent words)."""
    contribution = word_probabilities(corpus).select(
        "word", (-F.col("p") * F.log(F.col("p")) / F.lit(math.log(log_base))).alias("c"))
    tokens = sentences.select("sentence_id", F.explode(entropy_words()).alias("word"))
    per_sentence = tokens.join(contribution, "word").groupBy("sentence_id").agg(F.sum("c").alias("entropy"))
    return (sentences.select("sentence_id").join(per_sentence, "sentence_id", "left")
            .select("sentence_id", F.coalesce("entropy", F.lit(0.0)).alias("entropy")))


def cat_scorer(cfg: SentenceFilterConfig) -> str:
    from udfs.cat import CAT_VERSION

    return f"cat-v{CAT_VERSION}:{cfg.spacy_model}"


def language_scorer(cfg: SentenceFilterConfig) -> str:
    """The languages are part of the scorer: the stored flag says "one of these languages"."""
    from udfs.langid import LANGID_VERSION

    return f"langid-v{LANGID_VERSION}:py3langid:{','.join(sorted(cfg.languages))}"


def language_mapper(cfg: SentenceFilterConfig):
    from udfs.langid import language_mapper as mapper

    return mapper(list(cfg.languages))


def perplexity_scorer(cfg: SentenceFilterConfig) -> str:
    return f"ppl:{cfg.perplexity_model}"


def scores(lake: Lake, scorer: str, prefix: str) -> DataFrame:
    return (lake.read(SENTENCE_SCORES).where(F.col("scorer") == scorer)
            .select("sentence_id", F.col("score").alias(f"{prefix}_score"), F.col("flag").alias(f"{prefix}_flag")))


def ensure_scores(spark: SparkSession, lake: Lake, eligible: DataFrame, scorer: str, mapper, run_id: str,
                  rows_per_batch: int) -> int:
    """Score the `eligible` (sentence_id, text) rows that have no `scorer` score yet; returns how many."""
    from realsyn_spark.sparkutil import arrow_batch_rows, parallelism as task_parallelism

    done = lake.read(SENTENCE_SCORES).where(F.col("scorer") == scorer).select("sentence_id")
    todo = eligible.select("sentence_id", "text").join(done, "sentence_id", "left_anti").localCheckpoint(eager=True)
    n = todo.count()
    if n == 0:
        return 0
    parallelism = task_parallelism(spark)
    with arrow_batch_rows(spark, rows_per_batch):
        scored = (todo.repartition(max(1, min(parallelism * 4, n // rows_per_batch + 1)))
                  .mapInPandas(mapper, "sentence_id string, score double, flag boolean")
                  .withColumn("scorer", F.lit(scorer)).withColumn("run_id", F.lit(run_id)))
        lake.merge_insert(SENTENCE_SCORES, scored)
    return n


def cat_mapper(cfg: SentenceFilterConfig):
    from udfs.cat import cat_mapper as mapper

    inner = mapper(cfg.spacy_model, cfg.spacy_batch_size)

    def run(batches):
        for frame in inner(batches):
            yield frame[["sentence_id", "score", "flag"]]
    return run


def perplexity_mapper(cfg: SentenceFilterConfig):
    from udfs.perplexity import perplexity_mapper as mapper

    inner = mapper(cfg.perplexity_model, cfg.perplexity_device, cfg.perplexity_batch_size,
                   cfg.perplexity_max_tokens)

    def run(batches):
        for frame in inner(batches):
            import pandas as pd

            frame = frame.assign(flag=pd.array([None] * len(frame), dtype="boolean"))
            yield frame[["sentence_id", "score", "flag"]]
    return run


def perplexity_available(cfg: SentenceFilterConfig) -> tuple[bool, str]:
    """Decided once on the driver. Missing model: raise (fail) or (False, reason) (skip)."""
    from udfs.perplexity import model_available

    ok, why = model_available(cfg.perplexity_model)
    if ok:
        return True, ""
    if cfg.perplexity_on_missing_model == "fail":
        raise RuntimeError(
            f"perplexity model unavailable: {why}. Point sentence_filter.perplexity_model at a local directory "
            "(or make the hub reachable), or set sentence_filter.perplexity_on_missing_model=skip to run "
            "without the perplexity rule.")
    log.warning("PERPLEXITY RULE SKIPPED: %s (sentence_filter.perplexity_on_missing_model=skip)", why)
    return False, why
