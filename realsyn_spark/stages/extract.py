"""Stage 2: Real-World Data Extraction — images and sentences out of documents, then every filter of the
paper's section 3.1, in its order:

* images: not fetched / unavailable, min_side, aspect_ratio (quality) -> exact_duplicate (content hash)
  -> near_duplicate (pHash LSH + connected components);
* sentences: language, emoji, url, min_words, max_words, cat (quality) -> entropy, perplexity (semantic)
  -> exact_duplicate (redundancy).

semantic_duplicate (CLIP embeddings) is the `dedup` stage's; this stage writes only the filters' decision,
`filter_reason` / `filter_duplicate_of`, and `dedup` composes the final `drop_reason` / `duplicate_of` from
both (realsyn_spark/decisions.py): each column has one writer.

Extraction appends (MERGE on a deterministic id) the image occurrences and sentences of documents not
yet extracted. The filters then decide `filter_reason` for *every* row from light columns and stored
scores only (pHashes per content hash, CAT and perplexity scores per sentence are computed once, for the
rows that reach the rule), and only rows whose decision changed are rewritten. So a rerun changes
nothing, a threshold change needs no re-ingest, and an incremental run decides exactly as a full
rebuild would (exact duplicates keep the smallest id, whenever it arrived). `filter_duplicate_of` points at
the row the filters keep (chains resolved).
"""
from __future__ import annotations

from typing import Iterator

import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from realsyn_spark import sentence_filters as sf
from realsyn_spark import text as textrules
from realsyn_spark.config import ImageFilterConfig, RealSynConfig, SentenceFilterConfig
from realsyn_spark.decisions import FILTER_COLUMNS
from realsyn_spark.dedup import near_duplicate_groups, resolve_duplicate_chains
from realsyn_spark.rules import rule
from realsyn_spark.runlog import StageContext, StageRun
from realsyn_spark.sparkutil import arrow_batch_rows, parallelism as task_parallelism
from realsyn_spark.tables import DOCUMENTS, IMAGE_BLOBS, IMAGE_HASHES, IMAGES, SENTENCES, Lake
from udfs.phash import hash_kind, phash_mapper


def segment_documents(normalise: bool):
    """mapInPandas body: one document's text nodes, in order -> one row per sentence. A document is
    segmented as a whole so that a paragraph cut by a page or block break is joined first and page
    numbers / running headers are dropped (text.document_paragraphs)."""
    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for frame in batches:
            rows = []
            for doc_id, texts in zip(frame["doc_id"], frame["texts"]):
                nodes = [(int(n["position"]), n["text"], n["page"]) for n in texts]
                paragraphs, _, _ = textrules.document_paragraphs(nodes)
                for position, paragraph in paragraphs:
                    for index, sentence in enumerate(textrules.split_sentences(paragraph)):
                        text = textrules.normalise_style(sentence) if normalise else sentence
                        rows.append((doc_id, position, index, text, textrules.count_words(text)))
            yield pd.DataFrame(rows, columns=["doc_id", "position", "sentence_index", "text", "n_words"])
    return run


def _first_failing(rules: list[tuple[str, Column]], modality: str | None = None) -> Column:
    """drop_reason = the name of the first rule that holds, in the paper's order; null when all pass.
    With `modality`, every name must be declared in realsyn_spark/rules.py."""
    decision = F.lit(None).cast("string")
    for name, dropped in reversed(rules):
        decision = F.when(dropped, F.lit(rule(modality, name) if modality else name)).otherwise(decision)
    return decision


def image_rules(cfg: ImageFilterConfig) -> list[tuple[str, Column]]:
    short_side = F.least("width", "height")
    ratio = F.col("width") / F.col("height")
    return [
        ("not_fetched", F.col("status").isNull() | (F.col("status") == "pending")),
        ("unavailable", F.col("status") != "ok"),
        ("min_side", short_side < cfg.min_side),
        ("aspect_ratio", (ratio > cfg.max_aspect_ratio) | (ratio < 1.0 / cfg.max_aspect_ratio)),
    ]


def sentence_rules(cfg: SentenceFilterConfig) -> list[tuple[str, Column]]:
    rules = []
    if cfg.drop_emoji:
        rules.append(("emoji", F.col("text").rlike(textrules.EMOJI_PATTERN)))
    if cfg.drop_urls:
        rules.append(("url", F.col("text").rlike(textrules.URL_PATTERN)))
    rules += [("min_words", F.col("n_words") < cfg.min_words), ("max_words", F.col("n_words") > cfg.max_words)]
    return rules


def mark_exact_duplicates(df: DataFrame, id_col: str, key: Column, modality: str = "images") -> DataFrame:
    """Among rows that passed the rules, every row but the smallest id per key is an exact duplicate."""
    survivors = df.where(F.col("drop_reason").isNull())
    first = Window.partitionBy("_dedup_key").orderBy(id_col)
    ranked = (survivors.withColumn("_dedup_key", key)
              .withColumn("_first", F.first(id_col).over(first))
              .select(id_col, "_first"))
    joined = df.join(ranked, id_col, "left")
    is_dup = F.col("_first").isNotNull() & (F.col("_first") != F.col(id_col))
    return (joined.withColumn("drop_reason", F.when(is_dup, F.lit(rule(modality, "exact_duplicate"))).otherwise(F.col("drop_reason")))
            .withColumn("duplicate_of", F.when(is_dup, F.col("_first")))
            .drop("_first"))


def extract_new(lake: Lake, run_id: str, normalise: bool) -> int:
    docs = lake.read(DOCUMENTS)
    done = lake.read(IMAGES).select("doc_id").union(lake.read(SENTENCES).select("doc_id")).distinct()
    # Checkpointed, not cached: the MERGE into `images` below would invalidate a cache that reads it,
    # and the recomputed set of "new" documents would then be empty for the sentences.
    new_docs = docs.join(done, "doc_id", "left_anti").localCheckpoint(eager=True)
    n_new = new_docs.count()
    nodes = new_docs.select("doc_id", F.explode("nodes").alias("n")).select("doc_id", "n.*")
    images = nodes.where("kind = 'image' AND image_url IS NOT NULL").select(
        F.sha2(F.concat_ws("\u001f", "doc_id", F.col("position").cast("string")), 256).substr(1, 24).alias("image_id"),
        "doc_id", "position", "image_url", "alt",
        *[F.lit(None).cast(t).alias(c) for c, t in
          [("sha256", "string"), ("width", "int"), ("height", "int"), ("drop_reason", "string"),
           ("duplicate_of", "string")]],
        F.lit(run_id).alias("run_id"), *[F.lit(None).cast("string").alias(c) for c in FILTER_COLUMNS])
    texts = F.filter("nodes", lambda n: (n["kind"] == "text") & n["text"].isNotNull())
    sentences = (new_docs.select("doc_id", F.transform(texts, lambda n: F.struct(n["position"].alias("position"),
                                                       n["text"].alias("text"), n["page"].alias("page")))
                                 .alias("texts"))
                 .mapInPandas(segment_documents(normalise),
                              "doc_id string, position int, sentence_index int, text string, n_words int")
                 .select(F.sha2(F.concat_ws("\u001f", "doc_id", F.col("position").cast("string"),
                                            F.col("sentence_index").cast("string")), 256).substr(1, 24)
                         .alias("sentence_id"), "*")
                 .withColumn("drop_reason", F.lit(None).cast("string"))
                 .withColumn("duplicate_of", F.lit(None).cast("string")).withColumn("run_id", F.lit(run_id))
                 .select("*", *[F.lit(None).cast("string").alias(c) for c in FILTER_COLUMNS]))
    lake.merge_insert(IMAGES, images)
    lake.merge_insert(SENTENCES, sentences)
    return n_new


def ensure_phashes(spark: SparkSession, lake: Lake, survivors: DataFrame, cfg: ImageFilterConfig,
                   run_id: str) -> int:
    """pHash every distinct content hash among `survivors` that has none for these settings yet."""
    kind = hash_kind(cfg.phash_core_fraction)
    done = lake.read(IMAGE_HASHES).where(F.col("hash_kind") == kind).select("sha256")
    todo = survivors.select("sha256").where("sha256 IS NOT NULL").distinct().join(done, "sha256", "left_anti")
    todo = todo.localCheckpoint(eager=True)
    n = todo.count()
    if n == 0:
        return 0
    blobs = (lake.read(IMAGE_BLOBS).where("status = 'ok' AND image_bytes IS NOT NULL")
             .select("sha256", "image_bytes").dropDuplicates(["sha256"]))
    parallelism = task_parallelism(spark)
    with arrow_batch_rows(spark, 64):
        hashes = (todo.join(blobs, "sha256").repartition(max(1, min(parallelism * 4, n // 64 + 1)))
                  .mapInPandas(phash_mapper(cfg.phash_core_fraction), "sha256 string, phash bigint, phash_core bigint")
                  .withColumn("hash_kind", F.lit(kind)).withColumn("run_id", F.lit(run_id)))
        lake.merge_insert(IMAGE_HASHES, hashes)
    return n


def mark_near_duplicates(spark: SparkSession, lake: Lake, decided: DataFrame, cfg: ImageFilterConfig,
                         max_cc_iterations: int, run_id: str, stage: StageRun | None = None) -> DataFrame:
    """Near-duplicates among the images that survived the rules and exact dedup: every member of a group
    but its representative (most pixels, then smallest id) gets `near_duplicate`."""
    survivors = decided.where("drop_reason IS NULL AND sha256 IS NOT NULL")
    computed = ensure_phashes(spark, lake, survivors, cfg, run_id)
    hashes = (lake.read(IMAGE_HASHES).where(F.col("hash_kind") == hash_kind(cfg.phash_core_fraction))
              .select("sha256", "phash", "phash_core"))
    items = (survivors.join(hashes, "sha256")
             .select("image_id", "phash", "phash_core",
                     (F.col("width").cast("long") * F.col("height").cast("long")).alias("area")))
    groups, counters = near_duplicate_groups(items, "image_id", cfg.phash_max_distance, cfg.phash_blocks,
                                             cfg.phash_key_blocks, cfg.phash_bucket_window, max_cc_iterations)
    if stage is not None:
        stage.count("phash_computed", computed)
        for key, value in counters.items():
            stage.count(key, value)
    groups = groups.withColumnRenamed("representative", "_near_rep")
    is_near = (F.col("drop_reason").isNull() & F.col("_near_rep").isNotNull()
               & (F.col("_near_rep") != F.col("image_id")))
    return (decided.join(groups, "image_id", "left")
            .withColumn("duplicate_of", F.when(is_near, F.col("_near_rep")).otherwise(F.col("duplicate_of")))
            .withColumn("drop_reason", F.when(is_near, F.lit(rule("images", "near_duplicate"))).otherwise(F.col("drop_reason")))
            .drop("_near_rep"))


def decide_images(spark: SparkSession, lake: Lake, cfg: RealSynConfig, run_id: str,
                  stage: StageRun | None = None) -> DataFrame:
    """(image_id, sha256, width, height, filter_reason, filter_duplicate_of) for every image."""
    icfg = cfg.image_filter
    blobs = lake.read(IMAGE_BLOBS).select("image_url", "status", F.col("sha256").alias("b_sha"),
                                          F.col("width").alias("b_w"), F.col("height").alias("b_h"))
    rows = (lake.read(IMAGES).drop("drop_reason", "duplicate_of", "sha256", "width", "height", *FILTER_COLUMNS)
            .join(blobs, "image_url", "left")
            .withColumnRenamed("b_sha", "sha256").withColumnRenamed("b_w", "width").withColumnRenamed("b_h", "height"))
    decided = rows.withColumn("drop_reason", _first_failing(image_rules(icfg), "images"))
    if icfg.exact_dedup:
        decided = mark_exact_duplicates(decided, "image_id", F.col("sha256"))
    else:
        decided = decided.withColumn("duplicate_of", F.lit(None).cast("string"))
    decided = decided.drop("status").localCheckpoint(eager=True)
    if icfg.near_dedup:
        decided = mark_near_duplicates(spark, lake, decided, icfg, cfg.dedup.max_cc_iterations, run_id, stage)
    return filter_decision(decided, "image_id", "sha256", "width", "height")


def _none_holds(rules: list[tuple[str, Column]]) -> Column:
    holds = F.lit(False)
    for _, dropped in rules:
        holds = holds | F.coalesce(dropped, F.lit(False))
    return ~holds


def _with_language_rule(spark: SparkSession, lake: Lake, rows: DataFrame, rules: list[tuple[str, Column]],
                        scfg: SentenceFilterConfig, run_id: str, count) -> DataFrame:
    """Language ID, the first sentence rule: the paper's corpus was English-filtered before its other
    rules ran. Scores are stored per (sentence, languages), so only new sentences are detected."""
    scorer = sf.language_scorer(scfg)
    count("language_scored", sf.ensure_scores(spark, lake, rows, scorer, sf.language_mapper(scfg), run_id,
                                              rows_per_batch=2048))
    rows = rows.join(sf.scores(lake, scorer, "lang"), "sentence_id", "left")
    rules.insert(0, ("language", ~F.col("lang_flag") & (F.col("lang_score") >= scfg.language_min_confidence)))
    return rows


def decide_sentences(spark: SparkSession, lake: Lake, cfg: RealSynConfig, run_id: str,
                     stage: StageRun | None = None) -> DataFrame:
    """(sentence_id, filter_reason, filter_duplicate_of) for every sentence."""
    scfg = cfg.sentence_filter
    count = stage.count if stage is not None else (lambda *_: None)
    base = lake.read(SENTENCES).drop("drop_reason", "duplicate_of", *FILTER_COLUMNS)
    rules = sentence_rules(scfg)
    rows = base
    if scfg.languages:
        rows = _with_language_rule(spark, lake, rows, rules, scfg, run_id, count)
    if scfg.cat_filter:
        scorer = sf.cat_scorer(scfg)
        count("cat_scored", sf.ensure_scores(spark, lake, rows.where(_none_holds(rules)), scorer, sf.cat_mapper(scfg),
                                             run_id, rows_per_batch=scfg.spacy_batch_size * 4))
        rows = rows.join(sf.scores(lake, scorer, "cat"), "sentence_id", "left")
        fails = F.col("cat_score") < scfg.cat_min_complexity
        if scfg.cat_require_action:
            fails = fails | ~F.col("cat_flag")
        rules.append(("cat", fails))
    if scfg.entropy_filter:
        entropy = sf.sentence_entropy(base, base.select("sentence_id", "text"), scfg.entropy_log_base)
        rows = rows.join(entropy, "sentence_id", "left")
        rules.append(("entropy", F.col("entropy") < scfg.min_entropy))
    rows = rows.localCheckpoint(eager=True)
    if scfg.perplexity_filter:
        available, _ = sf.perplexity_available(scfg)
        if available:
            scorer = sf.perplexity_scorer(scfg)
            count("perplexity_scored", sf.ensure_scores(
                spark, lake, rows.where(_none_holds(rules)), scorer, sf.perplexity_mapper(scfg), run_id,
                rows_per_batch=scfg.perplexity_batch_size * 8))
            rows = rows.join(sf.scores(lake, scorer, "ppl"), "sentence_id", "left")
            rules.append(("perplexity", (F.col("ppl_score") < scfg.min_perplexity)
                          | (F.col("ppl_score") > scfg.max_perplexity)))
        else:
            count("perplexity_skipped", 1)
    decided = rows.withColumn("drop_reason", _first_failing(rules, "sentences"))
    if scfg.exact_dedup:
        dedup_key = F.trim(F.regexp_replace(F.lower("text"), r"[^\p{L}\p{N}]+", " "))
        decided = mark_exact_duplicates(decided, "sentence_id", dedup_key, "sentences")
    else:
        decided = decided.withColumn("duplicate_of", F.lit(None).cast("string"))
    return filter_decision(decided.localCheckpoint(eager=True), "sentence_id")


def filter_decision(decided: DataFrame, id_col: str, *columns: str) -> DataFrame:
    """(id, *columns, filter_reason, filter_duplicate_of): the filters' decision, chains resolved to the row
    the filters keep (an exact duplicate of a near-duplicate points at the group's representative)."""
    resolved = resolve_duplicate_chains(decided.select(id_col, *columns, "drop_reason", "duplicate_of"), id_col)
    return (resolved.withColumnRenamed("drop_reason", "filter_reason")
            .withColumnRenamed("duplicate_of", "filter_duplicate_of").localCheckpoint(eager=True))


def _count_reasons(stage: StageRun, df: DataFrame, prefix: str) -> int:
    """Counters per filter rule; returns how many rows the filters keep."""
    kept = 0
    for row in df.groupBy("filter_reason").count().collect():
        if row.filter_reason is None:
            kept = row["count"]
        else:
            stage.count(f"{prefix}:{row.filter_reason}", row["count"])
    stage.count(f"{prefix}:kept", kept)
    return kept


def run(ctx: StageContext) -> StageRun:
    spark, cfg, lake, run_id = ctx.spark, ctx.cfg, ctx.lake, ctx.run_id
    with ctx.stage as stage:
        stage.rows_in = extract_new(lake, run_id, cfg.sentence_filter.normalise_style)
        # Only changed rows are rewritten; drop_reason / duplicate_of are dedup's (decisions.compose).
        lake.update_columns(IMAGES, decide_images(spark, lake, cfg, run_id, stage))
        lake.update_columns(SENTENCES, decide_sentences(spark, lake, cfg, run_id, stage))
        images = lake.read(IMAGES)
        sentences = lake.read(SENTENCES)
        stage.count("images:total", images.count())
        stage.count("sentences:total", sentences.count())
        stage.rows_out = _count_reasons(stage, images, "images") + _count_reasons(stage, sentences, "sentences")
    return stage
