"""Stage 3: CLIP embeddings of kept images and kept sentences (pandas UDFs on executors).

Only rows without an embedding for the configured model are embedded, so reruns and incremental
refreshes embed nothing twice. The driver decides once whether weights can be had; executors then
all load the same weights (or the same seeded random weights, where the demo allows that).
"""
from __future__ import annotations

import logging
import socket
from urllib.parse import urlparse

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from realsyn_spark.config import EmbedConfig
from realsyn_spark.runlog import StageContext, StageRun, record_embedding_model
from realsyn_spark.sparkutil import arrow_batch_rows, parallelism
from realsyn_spark.tables import IMAGE_BLOBS, IMAGE_EMBEDDINGS, IMAGES, SENTENCE_EMBEDDINGS, SENTENCES, Lake
from udfs.clip_embed import image_embedder, model_id_for, text_embedder

log = logging.getLogger("realsyn")

EMBEDDING_SCHEMA = "{id} string, model_id string, embedding array<float>"


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    host = urlparse(constants.ENDPOINT).hostname
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def _weights_cached(cfg: EmbedConfig) -> bool:
    import open_clip
    from huggingface_hub import try_to_load_from_cache

    pretrained = open_clip.get_pretrained_cfg(cfg.model, cfg.pretrained) or {}
    repo = (pretrained.get("hf_hub") or "").strip("/")
    if not repo:
        return False
    return any(isinstance(try_to_load_from_cache(repo, name), str)
               for name in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"))


def resolve_embed_config(cfg: EmbedConfig) -> EmbedConfig:
    """Executor-side settings, with the random-weight fallback decided once, here on the driver (the only
    place that asks the hub; later stages read what embed recorded in `embedding_models`)."""
    resolved = cfg
    if cfg.checkpoint_path or not cfg.pretrained:
        return resolved
    if _weights_cached(cfg) or _hub_reachable():
        return resolved
    if not cfg.allow_random_weights:
        raise RuntimeError(
            f"CLIP weights {cfg.model}/{cfg.pretrained} are neither cached nor downloadable (model hub unreachable). "
            "Set embed.checkpoint_path to a local checkpoint, or embed.allow_random_weights=true for a dry run.")
    log.warning("NO CLIP WEIGHTS: %s/%s cannot be downloaded here; embedding with seeded RANDOM weights. "
                "Retrieval and similarity scores are meaningless until real weights are configured.",
                cfg.model, cfg.pretrained)
    return cfg.model_copy(update={"pretrained": None})


def uses_random_weights(resolved: EmbedConfig) -> bool:
    return not (resolved.checkpoint_path or resolved.pretrained)


def resolved_model_id(resolved: EmbedConfig) -> str:
    return model_id_for(resolved, random_weights=uses_random_weights(resolved))


def embed_images(spark: SparkSession, lake: Lake, resolved: EmbedConfig, model_id: str, run_id: str) -> DataFrame:
    kept = lake.read(IMAGES).where("filter_reason IS NULL").select("image_id", "image_url")
    done = lake.read(IMAGE_EMBEDDINGS).where(F.col("model_id") == model_id).select("image_id")
    todo = (kept.join(done, "image_id", "left_anti")
            .join(lake.read(IMAGE_BLOBS).select("image_url", "image_bytes"), "image_url")
            .select("image_id", "image_bytes"))
    return (todo.repartition(parallelism(spark))
            .mapInPandas(image_embedder(resolved), EMBEDDING_SCHEMA.format(id="image_id"))
            .withColumn("run_id", F.lit(run_id)))


def embed_sentences(spark: SparkSession, lake: Lake, resolved: EmbedConfig, model_id: str, run_id: str) -> DataFrame:
    kept = lake.read(SENTENCES).where("filter_reason IS NULL").select("sentence_id", "text")
    done = lake.read(SENTENCE_EMBEDDINGS).where(F.col("model_id") == model_id).select("sentence_id")
    return (kept.join(done, "sentence_id", "left_anti").repartition(parallelism(spark))
            .mapInPandas(text_embedder(resolved, "sentence_id"), EMBEDDING_SCHEMA.format(id="sentence_id"))
            .withColumn("run_id", F.lit(run_id)))


def run(ctx: StageContext) -> StageRun:
    spark, cfg, lake, run_id = ctx.spark, ctx.cfg, ctx.lake, ctx.run_id
    with ctx.stage as stage:
        resolved = resolve_embed_config(cfg.embed)
        model_id = resolved_model_id(resolved)
        record_embedding_model(lake, model_id, resolved, uses_random_weights(resolved), run_id)
        before_images = lake.read(IMAGE_EMBEDDINGS).where(F.col("model_id") == model_id).count()
        before_sentences = lake.read(SENTENCE_EMBEDDINGS).where(F.col("model_id") == model_id).count()
        with arrow_batch_rows(spark, cfg.embed.batch_size * 4):
            lake.merge_insert(IMAGE_EMBEDDINGS, embed_images(spark, lake, resolved, model_id, run_id))
            lake.merge_insert(SENTENCE_EMBEDDINGS, embed_sentences(spark, lake, resolved, model_id, run_id))
        new_images = lake.read(IMAGE_EMBEDDINGS).where(F.col("model_id") == model_id).count() - before_images
        new_sentences = lake.read(SENTENCE_EMBEDDINGS).where(F.col("model_id") == model_id).count() - before_sentences
        stage.count("images_embedded", new_images)
        stage.count("sentences_embedded", new_sentences)
        stage.count("random_weights", int(":random-seed" in model_id))
        stage.rows_in = stage.rows_out = new_images + new_sentences
    return stage
