"""Integration: the whole pipeline on the sample corpus, on the session's local Spark with Delta."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from realsyn_spark.pipeline import STAGES, run_pipeline
from realsyn_spark.tables import (ALL_TABLES, DATASET, IMAGES, INGEST_ERRORS, RETRIEVALS, RUN_LOG, SENTENCES,
                                  SYNTHETIC_TEXTS)

COUNTED = [t for t in ALL_TABLES if t.name not in ("run_log",)]


def table_counts(spark, lake):
    return {t.name: spark.read.format("delta").load(lake.location(t)).count() for t in COUNTED}


@pytest.fixture(scope="module")
def runs(spark, pipeline_lake):
    cfg, lake, first = pipeline_lake   # tests/conftest.py: shared with the notebook tests
    counts_first = table_counts(spark, lake)
    second = run_pipeline(spark, cfg)
    counts_second = table_counts(spark, lake)
    return cfg, lake, first, second, counts_first, counts_second


def _log(spark, lake, run_id):
    return {r.stage: r for r in spark.read.format("delta").load(lake.location(RUN_LOG))
            .where(F.col("run_id") == run_id).collect()}


def test_every_stage_logged_ok_and_tables_read_back(spark, runs):
    cfg, lake, first, _, counts, _ = runs
    log = _log(spark, lake, first)
    assert set(log) == set(STAGES)
    assert all(r.status == "ok" for r in log.values())
    for name in ("documents", "image_blobs", "images", "sentences", "image_embeddings", "sentence_embeddings",
                 "centroids", "retrievals", "synthetic_texts", "balanced", "dataset", "ingest_errors"):
        assert counts[name] > 0, name


def test_rerun_adds_nothing(spark, runs):
    _, lake, _, second, counts_first, counts_second = runs
    assert counts_first == counts_second
    log = _log(spark, lake, second)
    assert log["ingest"].rows_in == 0
    assert log["embed"].counters["images_embedded"] == 0
    assert log["embed"].counters["sentences_embedded"] == 0
    assert log["retrieve"].rows_in == 0
    assert log["generate"].rows_in == 0


def test_each_filter_rule_dropped_something(spark, runs):
    _, lake, first, *_ = runs
    counters = _log(spark, lake, first)["extract"].counters
    for rule in ("images:min_side", "images:aspect_ratio", "images:exact_duplicate", "images:unavailable",
                 "sentences:emoji", "sentences:url", "sentences:min_words", "sentences:max_words",
                 "sentences:exact_duplicate", "sentences:cat", "sentences:perplexity",
                 "images:near_duplicate", "sentences:entropy", "sentences:language"):
        assert counters.get(rule, 0) > 0, (rule, counters)
    for key in ("phash_computed", "near_dup_candidate_pairs", "near_dup_edges", "cat_scored", "perplexity_scored",
                "language_scored"):
        assert key in counters, (key, counters)
    images = lake.read(IMAGES)
    assert images.count() == sum(v for k, v in counters.items() if k.startswith("images:") and k != "images:total")
    dedup_counters = _log(spark, lake, first)["dedup"].counters      # random CLIP weights: skipped, and said so
    assert dedup_counters.get("image_skipped_random_weights") == 1, dedup_counters


def test_funnel_report_adds_up_to_the_tables(spark, runs):
    from pathlib import Path

    from realsyn_spark.tables import FUNNEL

    cfg, lake, *_ = runs
    steps = {(r.modality, r.step): r for r in lake.read(FUNNEL).where("rule = '*'").collect()}
    for modality, spec in (("images", IMAGES), ("sentences", SENTENCES)):
        rows = sorted((r for (m, _), r in steps.items() if m == modality), key=lambda r: r.step_index)
        assert rows[0].removed + rows[0].remaining == lake.read(spec).count()
        assert rows[-1].remaining == lake.read(spec).where("drop_reason IS NULL").count()
        assert all(a.remaining - b.removed == b.remaining for a, b in zip(rows, rows[1:]))
        assert rows[-1].paper_remaining is not None and rows[-1].paper_ratio_to_start is not None
    assert steps[("sentences", "quality")].paper_ratio_to_start == pytest.approx(1.82 / 2.13)
    assert (Path(cfg.lake.root) / "reports" / "funnel.png").stat().st_size > 10_000


def test_bad_input_is_quarantined_not_fatal(spark, runs):
    _, lake, *_ = runs
    errors = lake.read(INGEST_ERRORS)
    kinds = {r.kind for r in errors.select("kind").distinct().collect()}
    assert "blocked" in kinds, kinds                       # cloud-metadata / private address refused
    sources = {r.source_uri.rsplit("/", 1)[-1] for r in errors.where("stage = 'ingest'").collect()}
    assert {"broken.warc.gz", "truncated.pdf", "sample.jsonl"} <= sources, sources
    docs = lake.read(ALL_TABLES[0])
    assert docs.where(F.col("source_uri").endswith("broken.warc.gz")).count() > 0  # good records survive


def test_dataset_rows_are_kept_images_with_ranked_texts(spark, runs):
    cfg, lake, *_ = runs
    dataset = lake.read(DATASET)
    n = dataset.count()
    assert dataset.select("image_id").distinct().count() == n
    kept = lake.read(IMAGES).where("drop_reason IS NULL").select("image_id")
    assert dataset.join(kept, "image_id", "left_anti").count() == 0
    assert dataset.where("text1 IS NULL OR syn_text IS NULL OR image_bytes IS NULL").count() == 0
    assert dataset.where("score1 < score2 OR score2 < score3").count() == 0
    # Provenance: each row lists its own URL among its sources; planted duplicates add more sources.
    assert dataset.where("NOT array_contains(source_image_urls, raw_image_url)").count() == 0
    assert dataset.where("size(source_image_urls) > 1").count() > 0
    kept_sentences = lake.read(SENTENCES).where("drop_reason IS NULL").select(F.col("sentence_id").alias("sentence_id1"))
    assert dataset.join(kept_sentences, "sentence_id1", "left_anti").count() == 0
    assert lake.read(RETRIEVALS).groupBy("image_id").count().where(f"count > {cfg.retrieval.top_k}").count() == 0
    assert lake.read(SYNTHETIC_TEXTS).count() == n


def test_scales_are_nested_and_capped(spark, runs):
    cfg, lake, *_ = runs
    dataset = lake.read(DATASET)
    caps = sorted(cfg.balance.caps)
    sizes = [dataset.where(F.array_contains("scales", c)).count() for c in caps]
    assert sizes == sorted(sizes)
    small = caps[0]
    per_cluster = dataset.where(F.array_contains("scales", small)).groupBy("cluster_id").count()
    assert per_cluster.agg(F.max("count")).first()[0] <= small


def test_webdataset_shards_read_by_open_clips_training_loader(spark, runs):
    import open_clip
    import webdataset as wds
    from open_clip_train.data import get_dataset_size, get_wds_dataset
    from torchvision.transforms.functional import pil_to_tensor

    cfg, lake, *_ = runs
    folder = Path(cfg.lake.root) / "export" / "webdataset"
    dataset = {r.image_id: r for r in lake.read(DATASET).collect()}
    sizes = json.loads((folder / "sizes.json").read_text())
    assert len(sizes) == -(-len(dataset) // 40) > 1
    shards = f"{folder}/{{00000..{len(sizes) - 1:05d}}}.tar"
    assert get_dataset_size(shards) == (len(dataset), len(sizes))   # open_clip sizes the epoch from sizes.json

    args = argparse.Namespace(val_data=shards, val_num_samples=len(dataset), batch_size=16, workers=0,
                              world_size=1, seed=0, dataset_resampled=False)
    loader = get_wds_dataset(args, lambda image: pil_to_tensor(image.resize((32, 32))), is_train=False,
                             tokenizer=open_clip.tokenize).dataloader
    batches = list(loader)
    assert sum(len(images) for images, _ in batches) == len(dataset)
    assert batches[0][0].shape[1:] == (3, 32, 32) and batches[0][1].shape[1] == 77

    for sample in wds.WebDataset(shards, shardshuffle=False).decode("pil"):
        row = dataset[sample["__key__"]]
        assert sample["txt"] == row.text1
        meta = sample["json"]
        assert (meta["url"], meta["syn_text"], meta["text2"]) == (row.raw_image_url, row.syn_text, row.text2)
        assert meta["source_image_urls"] == list(row.source_image_urls)
        image = next(v for k, v in sample.items() if k in ("jpg", "png", "webp"))
        assert image.size[0] >= 100 and image.size[1] >= 100   # the kept images passed min_side
