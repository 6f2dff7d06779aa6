"""Shared fixtures: one local Spark session with Delta for the whole run, tiny models, sample data."""
from __future__ import annotations

import os
import sys
from importlib import resources
from pathlib import Path

import pytest

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
# Tests never reach a model hub: fail fast instead of retrying DNS for a minute.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tests.tiny_gpt2 import perplexity_overrides

TINY_CLIP = str(resources.files("realsyn_spark").joinpath("resources/tiny-clip.json"))
TAGS_TXT = str(resources.files("realsyn_spark").joinpath("resources/tags.txt"))


def tiny_overrides(lake_root: str | Path, corpus: str | Path | None = None) -> list[str]:
    """Settings for a fast test run: tiny random-weight CLIP, small clusters, open similarity band."""
    overrides = [
        f"lake.root={lake_root}",
        "embed.model=tiny-clip", "embed.pretrained=null", f"embed.model_config_path={TINY_CLIP}",
        "embed.batch_size=16", "spark.shuffle_partitions=4",
        "retrieval.sentences_per_cluster=60", "balance.images_per_cluster=8",
        "balance.similarity_min=-1.0", "balance.similarity_max=1.0",
        "generate.backend=template",   # the model backends have their own tests (tests/test_generate*.py)
        "caption.model=null",          # no captioner weights offline; the stage has its own test (test_caption.py)
        # The project's 266-tag list as the base (not ImageNet + COCO, 1,259 tags x 6 prompts through CLIP),
        # room for mined phrases on top of it.
        f"tagger.base_vocabulary_path={TAGS_TXT}", "tagger.vocabulary_size=400",
    ]
    overrides += perplexity_overrides()   # tiny random-weight GPT-2 for the perplexity rule
    if corpus is not None:
        overrides.append(f"ingest.input_paths=[{corpus}]")
    return overrides


# Settings of the shared pipeline lake: dead sample URLs fail fast; several shards per export.
PIPELINE_EXTRA = ["fetch.timeout_s=2", "fetch.retries=0", "export.samples_per_shard=40"]


def pipeline_overrides(lake_root: str | Path, corpus: str | Path | None = None) -> list[str]:
    """The shared pipeline lake's settings, in one place for the tests that build another lake to compare
    with it."""
    return tiny_overrides(lake_root, corpus) + PIPELINE_EXTRA


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    from realsyn_spark.config import load_config
    from realsyn_spark.session import local_session_builder

    cfg = load_config(overrides=["spark.shuffle_partitions=4"])
    warehouse = tmp_path_factory.mktemp("warehouse")
    session = (local_session_builder(cfg, master="local[2]")
               .config("spark.sql.warehouse.dir", str(warehouse))
               .config("spark.driver.memory", "2g")
               .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def sample_corpus(tmp_path_factory) -> Path:
    from realsyn_spark.sample_corpus import generate_sample_corpus

    out = tmp_path_factory.mktemp("corpus")
    generate_sample_corpus(str(out), seed=0, scale=1)
    return out


@pytest.fixture(scope="session")
def pipeline_lake(spark, sample_corpus, tmp_path_factory):
    """One pipeline run over the sample corpus, shared by tests/test_pipeline.py and the notebook tests
    (building a lake is the slow part of both): (config, lake, run id)."""
    from realsyn_spark.config import load_config
    from realsyn_spark.pipeline import run_pipeline
    from realsyn_spark.tables import Lake

    root = tmp_path_factory.mktemp("lake")
    cfg = load_config(overrides=pipeline_overrides(root, sample_corpus))
    return cfg, Lake(spark, cfg.lake), run_pipeline(spark, cfg)


@pytest.fixture(scope="session")
def exported_lake(spark, tmp_path_factory):
    """tests/export_lake.py's small lake, exported once with scales [all, cap 4, ~30 images] and the card:
    (config, lake, cluster id per kept image, the export's StageRun)."""
    from realsyn_spark.pipeline import run_stage
    from tests import export_lake

    root = tmp_path_factory.mktemp("export_lake")
    lake, clusters = export_lake.build(spark, root)
    cfg = export_lake.export_config(root, ["export.scales=[all, 4, 0.03k]"])
    return cfg, lake, clusters, run_stage(spark, cfg, "export", "r1")


def pytest_collection_modifyitems(config, items):
    """Mark every test that needs a Spark session (directly or through a lake fixture) `spark`, so that
    `make test-fast` (`-m "not spark"`) runs the rest: the unit tests, in about a minute."""
    for item in items:
        if "spark" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.spark)
