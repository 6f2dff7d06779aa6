"""Stage 5: Image Semantic Augmented Generation (an LLM rewrites text1 with the caption and tags).

For every image with retrievals: caption (the captioner stage's, else `caption.fallback`; OFA in the paper), tags
(prompt-ensembled zero-shot CLIP over a tag vocabulary; RAM++ in the paper) and the top retrieved sentence
fill the paper's prompt; the configured backend writes `syn_text`. Every request is keyed by
`request_hash` = hash(model id, sampling parameters, prompt) in the `generation_cache` table: a request
found there is never sent again (rerun, retry after a crash, another image with the same prompt), and a
changed prompt or model resends only the rows it changes. Answers are committed in chunks of at most
`generate.commit_batch_size` requests, so a crash loses at most one chunk.
"""
from __future__ import annotations

import json
import math

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from realsyn_spark.config import GenerateConfig, RealSynConfig
from realsyn_spark.runlog import EmbeddingModel, StageContext, StageRun
from realsyn_spark.sparkutil import ship
from realsyn_spark.stages import tagvocab
from realsyn_spark.stages.caption import caption_with_fallback, model_captions
from realsyn_spark.stages.retrieve import kept_image_vectors
from realsyn_spark.tables import (GENERATION_CACHE, IMAGES, RETRIEVALS, SENTENCES, SYNTHETIC_TEXTS,
                                  SYNTHETIC_TEXTS_PER_RANK, Lake)
from udfs.generate import (GENERATED_SCHEMA, PROMPT_TEMPLATE, api_key, generate_texts, model_id, sampling_params,
                           template_texts)
from udfs.tagger import ClipZeroShotTagger, tag_images

def empty_tags() -> F.Column:
    return F.array().cast("array<string>")


def tag_vocabulary_version(lake: Lake) -> str:
    """The vocabulary the tagger scores: the tagvocab stage's current version (which is
    `generate.tag_vocabulary_path` as a fixed list when that is set)."""
    version = tagvocab.current_version(lake)
    if version is None:
        raise RuntimeError("generate.tags_per_image > 0 needs a tag vocabulary: run the tagvocab stage first "
                           "(or set generate.tags_per_image=0)")
    return version


def image_tags(lake: Lake, cfg: RealSynConfig, embedding: EmbeddingModel) -> DataFrame:
    """Prompt-ensembled zero-shot CLIP tags per kept image, from the tag embeddings tagvocab stored for the
    current vocabulary version and the model embed recorded."""
    version = tag_vocabulary_version(lake)
    names, matrix = tagvocab.tag_matrix(lake, embedding.model_id, version)
    if not names and tagvocab.vocabulary_tags(lake, version):
        raise RuntimeError(f"tag vocabulary {version} has no embeddings for {embedding.model_id}: run the tagvocab "
                           "stage after embed (it embeds the vocabulary for the recorded model)")
    if not names:   # an empty vocabulary (empty base file, nothing mined): no tags, captions fall back
        return lake.spark.createDataFrame([], "image_id string, tags array<string>")
    # 8,000 x 512 float32 = 16 MB: in the closure by default, a file read once per worker past the limit.
    shipped = ship(matrix, lake.root, cfg.spark.closure_max_bytes, "tag-matrix")
    n_tags, floor = cfg.generate.tags_per_image, cfg.generate.tag_min_score

    def make_tagger():
        return ClipZeroShotTagger(names, shipped.value, n_tags, floor)

    return kept_image_vectors(lake, embedding.model_id).mapInPandas(tag_images(make_tagger),
                                                                   "image_id string, tags array<string>")


def spark_template(template: str) -> str:
    """Python `str.format` template with {raw}/{caption}/{tags} -> Spark `format_string` pattern."""
    pattern = template.replace("%", "%%").replace("{raw}", "%1$s").replace("{caption}", "%2$s") \
        .replace("{tags}", "%3$s")
    return pattern.replace("{{", "{").replace("}}", "}")


def request_hash_column(model: str, sampling: dict, prompt) -> F.Column:
    """Same formula as udfs.generate.request_hash."""
    return F.sha2(F.concat_ws("\u001f", F.lit(model), F.lit(json.dumps(sampling, sort_keys=True)), prompt),
                  256).substr(1, 32)


def generation_requests(lake: Lake, cfg: RealSynConfig, embedding: EmbeddingModel | None = None) -> DataFrame:
    """(image_id, rank, sentence_id, raw_text, caption, caption_source, tags, prompt) for every image with a
    top-1 retrieval, and for every retrieved rank with generate.per_retrieved_text (T_s^k). `embedding`
    (what embed recorded) is needed when generate.tags_per_image > 0."""
    top1 = (retrieved_texts(lake, cfg.generate.per_retrieved_text).select("image_id", "rank", "sentence_id")
            .join(lake.read(SENTENCES).select("sentence_id", F.col("text").alias("raw_text")), "sentence_id"))
    alt = lake.read(IMAGES).select("image_id", F.nullif(F.trim("alt"), F.lit("")).alias("alt"))
    if cfg.generate.tags_per_image:
        tagged = top1.join(image_tags(lake, cfg, embedding), "image_id", "left")
    else:
        tagged = top1.withColumn("tags", empty_tags())
    tagged = tagged.withColumn("tags", F.coalesce("tags", empty_tags()))
    top_tag = F.try_element_at("tags", F.lit(1))
    # The captioner stage's caption, else caption.fallback (alt text, a phrase from the top tag), else "".
    caption, source = caption_with_fallback(cfg.caption.fallback, F.col("model_caption"), F.col("alt"), top_tag)
    template = spark_template(cfg.generate.prompt_template or PROMPT_TEMPLATE)
    return (tagged.join(alt, "image_id").join(model_captions(lake, cfg), "image_id", "left")
            .withColumn("caption", caption).withColumn("caption_source", source)
            .withColumn("prompt", F.format_string(template, "raw_text", "caption", F.array_join("tags", ", ")))
            .select("image_id", "rank", "sentence_id", "raw_text", "caption", "caption_source", "tags", "prompt"))


def retrieved_texts(lake: Lake, per_retrieved_text: bool) -> DataFrame:
    """The retrievals a rewrite is asked for: rank 1 (text1), or every rank."""
    retrievals = lake.read(RETRIEVALS)
    return retrievals if per_retrieved_text else retrievals.where("rank = 1")


def with_request_hash(requests: DataFrame, g: GenerateConfig) -> DataFrame:
    return requests.withColumn("request_hash", request_hash_column(model_id(g), sampling_params(g), F.col("prompt"))) \
        .withColumn("generator", F.lit(model_id(g)))


def send_in_chunks(lake: Lake, fresh: DataFrame, n_fresh: int, g: GenerateConfig, partitions: int,
                   run_id: str) -> None:
    """Answer `fresh` (distinct request_hash, prompt, raw_text, caption, tags) chunk by chunk; each chunk is
    one Delta commit to the cache, so a crash loses at most the chunk in flight."""
    n_chunks = max(1, math.ceil(n_fresh / g.commit_batch_size))
    # The API key is read where the job starts (env var or Databricks secret) and travels in the task
    # closure, so executors need no copy of the environment; it is never logged or stored.
    secret = api_key(g) if g.backend == "openai" else None
    body = template_texts() if g.backend == "template" else generate_texts(g, secret)
    sampling = json.dumps(sampling_params(g), sort_keys=True)
    for chunk in range(n_chunks):
        part = fresh.where(F.pmod(F.xxhash64("request_hash"), F.lit(n_chunks)) == chunk)
        # An append, not a MERGE: the rows are new by construction (anti-joined with the cache), and a MERGE
        # evaluates its source more than once, i.e. would send every request twice (measured: it did,
        # even with the source persisted). Spark's commit protocol keeps a retried task from adding rows twice.
        answered = (part.repartition(partitions, "request_hash").mapInPandas(body, GENERATED_SCHEMA)
                    .withColumn("model_id", F.lit(model_id(g))).withColumn("sampling", F.lit(sampling))
                    .withColumn("run_id", F.lit(run_id)).withColumn("created_at", F.current_timestamp()))
        lake.append(GENERATION_CACHE, answered)


def run(ctx: StageContext) -> StageRun:
    cfg, lake, run_id = ctx.cfg, ctx.lake, ctx.run_id
    g = cfg.generate
    with ctx.stage as stage:
        embedding = ctx.embedding_model() if g.tags_per_image else None
        # Persisted: read twice, for what to send and for which stored texts are still current.
        requests = with_request_hash(generation_requests(lake, cfg, embedding), g).persist()
        existing = settled_texts(lake, g.per_retrieved_text)
        # An image whose request was answered but dropped by the checks is settled too: not asked again.
        dropped = lake.read(GENERATION_CACHE).where("drop_reason IS NOT NULL").select("request_hash")
        todo = (requests.join(existing, ["image_id", "rank", "request_hash"], "left_anti")
                .join(dropped, "request_hash", "left_anti").persist())
        stage.rows_in = todo.count()
        for source, n in todo.groupBy("caption_source").count().collect():
            stage.count(f"captions_from_{source}", n)
        cache = lake.read(GENERATION_CACHE).select("request_hash")
        distinct = todo.dropDuplicates(["request_hash"])
        # Pinned before anything is sent: the budget split below must not move as the cache fills up.
        pending = distinct.join(cache, "request_hash", "left_anti").persist()
        fresh = pending
        n_fresh = pending.count()
        stage.count("cache_hits", todo.count() - todo.join(fresh.select("request_hash"), "request_hash").count())
        if g.max_requests_per_run is not None and n_fresh > g.max_requests_per_run:
            fresh = fresh.orderBy("request_hash").limit(g.max_requests_per_run)
            stage.count("requests_over_budget", n_fresh - g.max_requests_per_run)
            n_fresh = g.max_requests_per_run
        partitions = cfg.spark.shuffle_partitions
        send_in_chunks(lake, fresh, n_fresh, g, partitions, run_id)
        record_counters(stage, lake, run_id)
        # Two concurrent runs could both append one request: the first answer counts.
        results = lake.read(GENERATION_CACHE).select("request_hash", "syn_text", "drop_reason") \
            .dropDuplicates(["request_hash"])
        written = (todo.select("image_id", "rank", "sentence_id", "request_hash", "caption", "tags", "generator")
                   .join(results.where("drop_reason IS NULL"), "request_hash")
                   .withColumn("run_id", F.lit(run_id)))
        write_texts(lake, written, g.per_retrieved_text, stage)
        withdraw_stale_texts(lake, requests, g.per_retrieved_text, stage)
        stage.rows_out = lake.read(SYNTHETIC_TEXTS).count()
        todo.unpersist()
        pending.unpersist()
        requests.unpersist()
    return stage


def settled_texts(lake: Lake, per_retrieved_text: bool) -> DataFrame:
    """(image_id, rank, request_hash) already written: a request is asked (or looked up) once per row."""
    if per_retrieved_text:
        return lake.read(SYNTHETIC_TEXTS_PER_RANK).select("image_id", "rank", "request_hash")
    return lake.read(SYNTHETIC_TEXTS).select("image_id", F.lit(1).alias("rank"), "request_hash")


def write_texts(lake: Lake, written: DataFrame, per_retrieved_text: bool, stage: StageRun) -> None:
    """Rank 1 into synthetic_texts (what balance and export read); with per_retrieved_text every rank into
    synthetic_texts_per_rank, keyed by (image_id, rank)."""
    first = written.where("rank = 1").join(lake.read(SYNTHETIC_TEXTS).select("image_id", "request_hash"),
                                           ["image_id", "request_hash"], "left_anti")
    lake.upsert(SYNTHETIC_TEXTS, first)
    if per_retrieved_text:
        lake.upsert(SYNTHETIC_TEXTS_PER_RANK, written)
        stage.count("texts_per_rank", lake.read(SYNTHETIC_TEXTS_PER_RANK).count())


def withdraw_stale_texts(lake: Lake, requests: DataFrame, per_retrieved_text: bool, stage: StageRun) -> None:
    """Remove synthetic texts whose request is no longer asked: the image was withdrawn upstream (a later
    file made it a duplicate) or its retrieved text, caption or tags changed. A full build would not have them."""
    current = requests.select("image_id", "rank", "request_hash")
    stale = lake.read(SYNTHETIC_TEXTS).join(current.where("rank = 1"), ["image_id", "request_hash"], "left_anti").count()
    stage.count("texts_withdrawn", stale)
    if stale:
        lake.delete_absent(SYNTHETIC_TEXTS, current.where("rank = 1"), keys=("image_id", "request_hash"))
    if per_retrieved_text:
        lake.delete_absent(SYNTHETIC_TEXTS_PER_RANK, current, keys=("image_id", "rank", "request_hash"))


def record_counters(stage: StageRun, lake: Lake, run_id: str) -> None:
    """Requests sent, attempts, tokens and drops per reason of this run, aggregated from the cache rows."""
    mine = lake.read(GENERATION_CACHE).where(F.col("run_id") == run_id)
    totals = mine.agg(F.count("*").alias("n"), F.coalesce(F.sum("attempts"), F.lit(0)).alias("attempts"),
                      F.coalesce(F.sum("completion_tokens"), F.lit(0)).alias("tokens")).collect()[0]
    stage.count("requests_answered", totals.n)
    stage.count("model_calls", totals.attempts)
    stage.count("completion_tokens", totals.tokens)
    for reason, n in mine.where("drop_reason IS NOT NULL").groupBy("drop_reason").count().collect():
        stage.count(f"dropped:{reason}", n)
    retried = mine.where("attempts > 1").count()
    stage.count("retried_bad_output", retried)
