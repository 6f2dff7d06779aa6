"""A small lake with every table the export reads, written directly (no pipeline run): clusters of
known sizes, images whose colour names the cluster (so a tiny CLIP can learn something), three retrieved
sentences and a synthetic text per image, and a few rows the filters dropped."""
from __future__ import annotations

import datetime as dt
import io

from PIL import Image

from realsyn_spark.config import load_config
from realsyn_spark.stages.balance import rank_in_clusters
from realsyn_spark.tables import (BALANCED, DOCUMENTS, IMAGE_BLOBS, IMAGES, RETRIEVALS, RUN_LOG, SENTENCES,
                                  SYNTHETIC_TEXTS, Lake)

CLUSTER_SIZES = [1, 2, 3, 5, 8, 13, 25, 40]
COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "black", "white"]
RGB = {"red": (220, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 220), "yellow": (230, 230, 20),
       "purple": (150, 20, 160), "orange": (250, 140, 0), "black": (5, 5, 5), "white": (250, 250, 250)}
BAND_DROPPED = 4     # images the similarity band dropped: in no scale


def _png(rgb, i: int) -> bytes:
    out = io.BytesIO()
    image = Image.new("RGB", (120, 110), rgb)
    image.putpixel((i % 120, 0), (i % 256, 0, 0))   # distinct bytes per image
    image.save(out, "PNG")
    return out.getvalue()


def export_config(root, overrides=()):
    return load_config(overrides=[f"lake.root={root}", "spark.shuffle_partitions=2", "balance.caps=[4, 20]",
                                  "export.samples_per_shard=16", "balance.similarity_min=-1.0",
                                  "balance.similarity_max=1.0", *overrides])


def build(spark, root) -> tuple[Lake, dict[str, int]]:
    """Write the tables; returns (lake, cluster id of every kept image)."""
    cfg = export_config(root)
    lake = Lake(spark, cfg.lake)
    now = dt.datetime(2026, 1, 1)
    cluster_of, images, blobs, sentences, retrievals, synthetic, balanced = {}, [], [], [], [], [], []
    i = 0
    for cluster, size in enumerate(CLUSTER_SIZES + [BAND_DROPPED]):
        colour = COLOURS[cluster % len(COLOURS)]
        for _ in range(size):
            image_id, url, doc = f"{i:024x}", f"https://example.org/{i}.png", f"d{i % 5}"
            dropped = cluster == len(CLUSTER_SIZES)
            images.append((image_id, doc, i, url, f"alt {i}", None, 120, 110, None, None, "r0", None, None))
            blobs.append((url, "ok", _png(RGB[colour], i), None, 120, 110, "PNG", "inline", None, "r0", now))
            for rank in (1, 2, 3):
                sid = f"s{i}_{rank}"
                text = f"a {colour} square number {i} seen in picture {rank} of the page" + " words" * (rank * 4)
                sentences.append((sid, doc, i, rank, text, len(text.split()), None, None, "r0", None, None))
                retrievals.append((image_id, rank, sid, 0.9 - 0.1 * rank, 0, "cv", "r0"))
            synthetic.append((image_id, f"h{i}", f"a photo of a {colour} square", None, None, "template", "r0"))
            similarity = -0.5 if dropped else 0.2 + 0.01 * (i % 30)
            balanced.append((image_id, similarity, "similarity_below_min" if dropped else None,
                             None if dropped else cluster))
            if not dropped:
                cluster_of[image_id] = cluster
            i += 1
    images.append(("f" * 24, "d0", 999, "https://example.org/tiny.png", None, None, 20, 20, "min_side", None, "r0", "min_side", None))
    sentences.append(("s_short", "d0", 999, 0, "too short", 2, "min_words", None, "r0", "min_words", None))
    docs = [(f"d{d}", "file:/corpus.jsonl", "obelics", None, f"https://example.org/doc{d}", None, [], None, "r0", now)
            for d in range(5)]
    for spec, rows in ((DOCUMENTS, docs), (IMAGES, images), (IMAGE_BLOBS, blobs), (SENTENCES, sentences),
                       (RETRIEVALS, retrievals), (SYNTHETIC_TEXTS, synthetic)):
        lake.overwrite(spec, spark.createDataFrame(rows, spec.schema))
    assigned = spark.createDataFrame(balanced, "image_id string, similarity float, drop_reason string, cluster_id int")
    kept = rank_in_clusters(assigned.where("cluster_id IS NOT NULL"), cfg.balance.seed)
    rows = kept.unionByName(assigned.where("cluster_id IS NULL").selectExpr(
        "*", "CAST(NULL AS INT) AS cluster_size", "CAST(NULL AS INT) AS cluster_rank"))
    lake.overwrite(BALANCED, rows.selectExpr("*", "'h' AS request_hash", "CAST(0.5 AS FLOAT) AS centroid_score",
                                             "'cv' AS centroid_version", "'r0' AS run_id"))
    lake.ensure(RUN_LOG)
    return lake, cluster_of
