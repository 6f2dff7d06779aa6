"""Stage 5a: a concise caption per kept image from an image-to-text model (OFA-base in the paper).

Any Hugging Face image-to-text model by `caption.model` (executor code in udfs/caption.py). Every image's
request is keyed by `request_hash` = hash(model id, generation params, image content id): a request already
in the `captions` table is never captioned again (rerun, crash + rerun, another image with the same bytes),
and another model or setting captions again. New captions are committed in chunks of at most
`caption.commit_batch_size` images, so a crash loses at most one chunk. With `caption.model: null`, or a
model that cannot be had and `on_missing_model: fallback`, nothing is captioned and the run log says so;
`generate` then takes each image's caption from `caption.fallback` (alt text, or a phrase from its top tag).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from realsyn_spark.config import CaptionConfig, RealSynConfig
from realsyn_spark.runlog import StageContext, StageRun
from realsyn_spark.sparkutil import arrow_batch_rows
from realsyn_spark.tables import CAPTIONS, IMAGE_BLOBS, IMAGES, Lake
from udfs.caption import CAPTIONED_SCHEMA, image_captioner

log = logging.getLogger("realsyn")

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def generation_params(c: CaptionConfig) -> str:
    """The settings that change a caption, as canonical JSON: part of the request hash."""
    return json.dumps({"max_new_tokens": c.max_new_tokens, "num_beams": c.num_beams, "prompt": c.prompt},
                      sort_keys=True)


def _hub_has(repo: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    from realsyn_spark.stages.embed import _hub_reachable

    try:
        return isinstance(try_to_load_from_cache(repo, "config.json"), str) or _hub_reachable()
    except Exception:  # noqa: BLE001 - not a valid repo id either: not available
        return False


def resolve_captioner(c: CaptionConfig) -> str | None:
    """The model path executors load, or None when there is no captioner (model null, or weights that
    cannot be had with on_missing_model: fallback). Decided once, on the driver."""
    if c.model is None:
        return None
    if os.path.isdir(c.model) or _hub_has(c.model):
        return c.model
    if c.on_missing_model == "fail":
        raise RuntimeError(f"captioner {c.model!r} is neither a local directory nor cached nor downloadable "
                           "(model hub unreachable). Set caption.model to a local directory, caption.model=null "
                           "to use only the fallback, or caption.on_missing_model=fallback.")
    log.warning("NO CAPTIONER: %s cannot be loaded here; every image takes the fallback caption %s",
                c.model, c.fallback)
    return None


def captioner_id(c: CaptionConfig) -> str:
    """The stored model id: the hub id, or for a local directory its path plus a fingerprint of its config
    and weight files (name and size), so a model retrained into the same directory captions again."""
    if not os.path.isdir(c.model):
        return c.model
    digest = hashlib.sha256()
    for name in sorted(os.listdir(c.model)):
        full = os.path.join(c.model, name)
        if name == "config.json":
            digest.update(open(full, "rb").read())
        elif name.endswith(WEIGHT_SUFFIXES):
            digest.update(f"{name}:{os.path.getsize(full)}".encode())
    return f"{c.model}#{digest.hexdigest()[:12]}"


def content_id() -> Column:
    """What a caption depends on in the image: its bytes' hash (a URL only where no bytes were hashed)."""
    return F.coalesce(F.col("sha256"), F.concat(F.lit("url:"), F.col("image_url")))


def request_hash_column(model: str, params: str) -> Column:
    return F.sha2(F.concat_ws("\u001f", F.lit(model), F.lit(params), F.col("content_id")), 256).substr(1, 32)


def caption_requests(lake: Lake, model: str, params: str) -> DataFrame:
    """(image_id, image_url, content_id, request_hash) of every kept image."""
    return (lake.read(IMAGES).where("drop_reason IS NULL").select("image_id", "image_url", "sha256")
            .withColumn("content_id", content_id()).drop("sha256")
            .withColumn("request_hash", request_hash_column(model, params)))


def model_captions(lake: Lake, cfg: RealSynConfig) -> DataFrame:
    """(image_id, model_caption) for the images the configured captioner captioned: what generate reads."""
    c = cfg.caption
    stored = lake.read(CAPTIONS).where("drop_reason IS NULL").select("image_id", "request_hash", "caption")
    # No availability probe here: a captioner that could not be loaded simply left no rows to find.
    if c.model is None:
        return stored.where(F.lit(False)).select("image_id", F.col("caption").alias("model_caption"))
    requests = caption_requests(lake, captioner_id(c), generation_params(c)).select("image_id", "request_hash")
    # Two concurrent runs could both append one request: one caption per image.
    return (requests.join(stored, ["image_id", "request_hash"]).dropDuplicates(["image_id"])
            .select("image_id", F.col("caption").alias("model_caption")))


def caption_with_fallback(fallback: list[str], model_caption: Column, alt: Column,
                          top_tag: Column) -> tuple[Column, Column]:
    """(caption, caption source) for generate: the model's caption, else the first fallback that exists
    (alt text; "a photo showing a <top tag>"), else ""; the source is model | alt | tags | none."""
    options = {"alt_text": (alt, "alt"), "tags": (F.concat(F.lit("a photo showing a "), top_tag), "tags")}
    chain = [(model_caption, "model")] + [options[name] for name in fallback]
    caption = F.coalesce(*[value for value, _ in chain], F.lit(""))
    source = F.when(chain[0][0].isNotNull(), chain[0][1])
    for value, name in chain[1:]:
        source = source.when(value.isNotNull(), name)
    return caption, source.otherwise("none")


def caption_in_chunks(lake: Lake, fresh: DataFrame, n_fresh: int, c: CaptionConfig, path: str, model: str,
                      params: str, partitions: int, run_id: str) -> None:
    """Caption `fresh` (image_id, request_hash, content_id, image_url) chunk by chunk, each chunk one Delta
    commit. Each distinct request is captioned once, then joined back to every image that has it."""
    n_chunks = max(1, math.ceil(n_fresh / c.commit_batch_size))
    blobs = lake.read(IMAGE_BLOBS).where("image_bytes IS NOT NULL").select("image_url", "image_bytes")
    for chunk in range(n_chunks):
        part = fresh.where(F.pmod(F.xxhash64("request_hash"), F.lit(n_chunks)) == chunk)
        distinct = part.dropDuplicates(["request_hash"]).join(blobs, "image_url").select("request_hash", "image_bytes")
        # An append, not a MERGE: the rows are new by construction (anti-joined with the table), and a
        # MERGE evaluates its source more than once, i.e. would run the model twice.
        answered = distinct.repartition(partitions, "request_hash").mapInPandas(image_captioner(c, path),
                                                                                CAPTIONED_SCHEMA)
        rows = (part.select("image_id", "request_hash", "content_id").join(answered, "request_hash")
                .withColumn("model_id", F.lit(model)).withColumn("params", F.lit(params))
                .withColumn("run_id", F.lit(run_id)).withColumn("created_at", F.current_timestamp()))
        lake.append(CAPTIONS, rows)


def reuse_known(lake: Lake, todo: DataFrame, run_id: str) -> int:
    """Images whose request another image already answered (same bytes): stored without the model."""
    known = lake.read(CAPTIONS).select("request_hash", "model_id", "params", "caption", "drop_reason") \
        .dropDuplicates(["request_hash"])
    reused = todo.select("image_id", "request_hash", "content_id").join(known, "request_hash") \
        .withColumn("run_id", F.lit(run_id)).withColumn("created_at", F.current_timestamp())
    n = reused.count()
    if n:
        lake.merge_insert(CAPTIONS, reused)
    return n


def record_counters(stage: StageRun, lake: Lake, run_id: str) -> None:
    mine = lake.read(CAPTIONS).where(F.col("run_id") == run_id)
    stage.count("images_captioned", mine.where("drop_reason IS NULL").count())
    for reason, n in mine.where("drop_reason IS NOT NULL").groupBy("drop_reason").count().collect():
        stage.count(f"dropped:{reason}", n)
    stage.rows_out = mine.count()


def run(ctx: StageContext) -> StageRun:
    spark, cfg, lake, run_id = ctx.spark, ctx.cfg, ctx.lake, ctx.run_id
    c = cfg.caption
    with ctx.stage as stage:
        path = resolve_captioner(c)
        if path is None:
            # Every kept image takes the fallback in generate (counted there per source).
            stage.count("captioner_disabled" if c.model is None else "captioner_unavailable", 1)
            stage.rows_in = stage.rows_out = 0
            return stage
        model, params = captioner_id(c), generation_params(c)
        requests = caption_requests(lake, model, params)
        done = lake.read(CAPTIONS).select("image_id", "request_hash")
        todo = requests.join(done, ["image_id", "request_hash"], "left_anti").persist()
        stage.rows_in = todo.count()
        stage.count("reused_captions", reuse_known(lake, todo, run_id))
        # Pinned before anything is written: the chunking below must not move as the table fills up.
        fresh = todo.join(lake.read(CAPTIONS).select("request_hash"), "request_hash", "left_anti").persist()
        with_bytes = fresh.join(lake.read(IMAGE_BLOBS).where("image_bytes IS NOT NULL").select("image_url"),
                                "image_url", "left_semi")
        n_fresh = with_bytes.count()
        # Distinct requests the model sees (images with the same bytes share one).
        stage.count("requests_to_model", with_bytes.select("request_hash").distinct().count())
        # No bytes yet (a deferred or failed fetch): not stored, so a later run captions it once bytes arrive.
        stage.count("no_image_bytes", fresh.count() - n_fresh)
        with arrow_batch_rows(spark, c.batch_size):
            caption_in_chunks(lake, with_bytes, n_fresh, c, path, model, params, cfg.spark.shuffle_partitions, run_id)
        record_counters(stage, lake, run_id)
        todo.unpersist()
        fresh.unpersist()
    return stage
