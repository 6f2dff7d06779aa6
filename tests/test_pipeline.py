"""Integration: the whole pipeline on the sample corpus, on the session's local Spark with Delta."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from realsyn_spark.config import load_config
from realsyn_spark.pipeline import STAGES, run_pipeline
from realsyn_spark.tables import (ALL_TABLES, BALANCED, DATASET, IMAGES, INGEST_ERRORS, RETRIEVALS, RUN_LOG, SENTENCES,
                                  SYNTHETIC_TEXTS, Lake)
from tests.conftest import tiny_overrides

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


def test_interrupted_run_resumes_to_the_same_result(spark, runs, sample_corpus, tmp_path):
    cfg_full, lake_full, *_ = runs
    cfg = load_config(overrides=tiny_overrides(tmp_path, sample_corpus) + ["fetch.timeout_s=2", "fetch.retries=0"])
    run_pipeline(spark, cfg, stages=["ingest", "fetch", "extract", "embed"])   # "crash" after embed
    run_pipeline(spark, cfg)                                                    # the rerun finishes the work
    lake = Lake(spark, cfg.lake)
    assert table_counts(spark, lake)["dataset"] == table_counts(spark, lake_full)["dataset"]
    ids = lambda l: {r.image_id for r in l.read(DATASET).select("image_id").collect()}  # noqa: E731
    assert ids(lake) == ids(lake_full)


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


@pytest.fixture(scope="module")
def refreshed(spark, sample_corpus, tmp_path_factory):
    """A lake built the way a scheduled refresh builds it: a run over the WARC and PDF files, then a run
    over the whole input folder after the OBELICS and HTML files arrived."""
    root = tmp_path_factory.mktemp("refresh")
    base = tiny_overrides(root) + ["fetch.timeout_s=2", "fetch.retries=0", "export.samples_per_shard=40"]
    run_pipeline(spark, load_config(overrides=base + [
        f"ingest.input_paths=[{sample_corpus}/warc, {sample_corpus}/pdf]"]))
    cfg = load_config(overrides=base + [f"ingest.input_paths=[{sample_corpus}]"])
    second = run_pipeline(spark, cfg)
    return cfg, Lake(spark, cfg.lake), second


def test_refresh_with_new_files_equals_a_full_build(spark, sample_corpus, runs, refreshed):
    """Everything a full build decides, a refresh decides the same, except the balance clusters: a refresh
    keeps the centroids trained on the first run (frozen, by design) and must equal a full assignment of
    every current image to them. Images the new files withdrew (their duplicate arrived and won) must
    leave every derived table, as they never enter a full build's."""
    from realsyn_spark.stages import balance
    from realsyn_spark.runlog import recorded_embedding_model

    cfg, lake, second = refreshed
    full = runs[1]
    log = _log(spark, lake, second)
    ingest = log["ingest"].counters
    first_files = [f for folder in ("warc", "pdf") for f in (sample_corpus / folder).iterdir()]
    assert ingest["files_skipped_already_ingested"] == len(first_files) and ingest["files_ingested"] > 0, ingest

    def decisions(spec, key):
        return lambda l: sorted(tuple(r) for r in l.read(spec).select(key, "drop_reason", "duplicate_of").collect())

    for spec, key in ((IMAGES, "image_id"), (SENTENCES, "sentence_id")):
        assert decisions(spec, key)(lake) == decisions(spec, key)(full), spec.name

    def top_texts(l):
        rows = l.read(RETRIEVALS).groupBy("image_id").agg(F.sort_array(F.collect_list("sentence_id")).alias("s"))
        return {r.image_id: r.s for r in rows.collect()}

    assert top_texts(lake) == top_texts(full)

    def dataset(l):
        columns = ["image_id", "sentence_id1", "sentence_id2", "sentence_id3", "syn_text"]
        return sorted(tuple(r) for r in l.read(DATASET).select(columns).collect())

    assert dataset(lake) == dataset(full)
    # the sample corpus's later files hold duplicates that win over images kept by the first run
    assert log["generate"].counters["texts_withdrawn"] > 0 and log["balance"].counters["images_withdrawn"] > 0
    # balance: the refreshed table is a full assignment of the current band to the frozen centroids
    bcfg = cfg.balance
    model_id = recorded_embedding_model(lake, cfg.embed).model_id
    version = balance.latest_version(lake, model_id)
    kept = balance.similarity_band(lake, bcfg, model_id).where("drop_reason IS NULL")
    expected = balance.rank_in_clusters(balance.assign_images(lake, kept, version, balance.load_coarse(lake, version),
                                                              bcfg), bcfg.seed)
    columns = ["image_id", "cluster_id", "cluster_size", "cluster_rank"]
    got = lake.read(BALANCED).where("drop_reason IS NULL").select(columns)
    assert sorted(tuple(r) for r in got.collect()) == sorted(tuple(r) for r in expected.select(columns).collect())
