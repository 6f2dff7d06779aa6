"""Stage 5: Image Semantic Augmented Generation.

For every image with retrievals: caption (alt text here; OFA in the paper), tags (zero-shot CLIP over a
tag vocabulary; RAM++ in the paper) and the top retrieved sentence go into the paper's prompt; the
configured backend writes `syn_text`. Every request is keyed by `request_hash` (generator + prompt):
an image whose request is unchanged is skipped, and a request already answered for another image is
copied, not generated again.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from realsyn_spark.config import RealSynConfig
from realsyn_spark.runlog import StageRun, stage_run
from realsyn_spark.sparkutil import parallelism, ship
from realsyn_spark.stages.embed import current_model_id, resolve_embed_config
from realsyn_spark.stages.retrieve import kept_image_vectors
from realsyn_spark.tables import IMAGES, RETRIEVALS, SENTENCES, SYNTHETIC_TEXTS, Lake
from udfs.clip_embed import load_clip
from udfs.generate import PROMPT_TEMPLATE, generate_texts, generator_name, zero_shot_tags

TAG_PROMPT = "a photo of a {}."


def tag_vocabulary(path: str | None) -> list[str]:
    text = Path(path).read_text() if path else \
        resources.files("realsyn_spark").joinpath("resources/tags.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def image_tags(spark: SparkSession, lake: Lake, cfg: RealSynConfig, model_id: str) -> DataFrame:
    names = tag_vocabulary(cfg.generate.tag_vocabulary_path)
    bundle = load_clip(resolve_embed_config(cfg.embed))
    matrix = bundle.embed_texts([TAG_PROMPT.format(n) for n in names], 64)
    tags_bc = ship((np.asarray(names), np.asarray(matrix)), lake.root, cfg.spark.closure_max_bytes, "tag-vectors")
    return kept_image_vectors(lake, model_id).mapInPandas(
        zero_shot_tags(tags_bc, cfg.generate.tags_per_image), "image_id string, tags array<string>")


def generation_requests(spark: SparkSession, lake: Lake, cfg: RealSynConfig, model_id: str) -> DataFrame:
    """(image_id, request_hash, raw_text, caption, tags) for every image that has a top-1 retrieval."""
    top1 = (lake.read(RETRIEVALS).where("rank = 1").select("image_id", "sentence_id")
            .join(lake.read(SENTENCES).select("sentence_id", F.col("text").alias("raw_text")), "sentence_id"))
    alt = lake.read(IMAGES).select("image_id", "alt")
    if cfg.generate.tags_per_image:
        tagged = top1.join(image_tags(spark, lake, cfg, model_id), "image_id", "left")
    else:
        tagged = top1.withColumn("tags", F.array().cast("array<string>"))
    caption = F.coalesce(F.nullif(F.trim("alt"), F.lit("")),
                         F.concat(F.lit("a photo showing "), F.coalesce(F.element_at("tags", 1), F.lit("a scene"))))
    requests = tagged.join(alt, "image_id").withColumn("caption", caption)
    generator = generator_name(cfg.generate.model_dump())
    return requests.withColumn("request_hash", F.sha2(F.concat_ws(
        "\u001f", F.lit(generator), F.lit(PROMPT_TEMPLATE), "raw_text", "caption",
        F.array_join(F.coalesce("tags", F.array().cast("array<string>")), "|")), 256).substr(1, 32)) \
        .select("image_id", "request_hash", "raw_text", "caption", "tags")


def run(spark: SparkSession, cfg: RealSynConfig, run_id: str) -> StageRun:
    lake = Lake(spark, cfg.lake)
    with stage_run(lake, cfg, run_id, "generate") as stage:
        model_id = current_model_id(cfg.embed)
        requests = generation_requests(spark, lake, cfg, model_id).cache()
        existing = lake.read(SYNTHETIC_TEXTS).select("image_id", "request_hash", "syn_text")
        todo = requests.join(existing.select("image_id", "request_hash"), ["image_id", "request_hash"], "left_anti").cache()
        stage.rows_in = todo.count()
        answered = existing.select("request_hash", "syn_text").dropDuplicates(["request_hash"])
        reused = todo.join(answered, "request_hash")
        fresh_requests = todo.join(answered.select("request_hash"), "request_hash", "left_anti") \
            .dropDuplicates(["request_hash"])
        n_fresh = fresh_requests.count()
        generated = fresh_requests.repartition(parallelism(spark)).mapInPandas(
            generate_texts(cfg.generate.model_dump()), "request_hash string, syn_text string")
        # Materialised once: an LLM call must not be repeated by the MERGE's two passes over its source.
        generated = generated.persist()
        generated.count()
        fresh = todo.join(generated, "request_hash")
        rows = (reused.unionByName(fresh)
                .withColumn("generator", F.lit(generator_name(cfg.generate.model_dump())))
                .withColumn("run_id", F.lit(run_id)))
        stage.count("requests_generated", n_fresh)
        stage.count("images_served_from_cache", reused.count())  # before the write changes `existing`
        lake.upsert(SYNTHETIC_TEXTS, rows)
        stage.rows_out = lake.read(SYNTHETIC_TEXTS).count()
        for frame in (generated, todo, requests):
            frame.unpersist()
    return stage
