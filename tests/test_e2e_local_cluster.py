"""End to end on `local-cluster[2,1,1024]`: two executor JVMs with their own Python workers, so every
UDF, broadcast and model cache must survive pickling. Run through the real CLI in a subprocess (one
SparkContext per process), then read the tables back from the test session (the notebooks run in
tests/test_notebooks.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from realsyn_spark.config import load_config
from realsyn_spark.pipeline import STAGES
from realsyn_spark.tables import DATASET, IMAGES, RETRIEVALS, RUN_LOG, Lake
from tests.conftest import tiny_overrides

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster_run(sample_corpus, tmp_path_factory):
    lake_root = tmp_path_factory.mktemp("cluster") / "lake"
    overrides = tiny_overrides(lake_root, sample_corpus) + [
        "spark.local_master=local-cluster[2,1,1024]", "fetch.timeout_s=2", "fetch.retries=0",
        "retrieval.n_probe=2"]
    cmd = [sys.executable, "-m", "realsyn_spark.cli", *[a for o in overrides for a in ("--set", o)], "run"]
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=880, cwd=REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return overrides, done.stdout


@pytest.mark.timeout(900)
def test_pipeline_on_local_cluster(spark, cluster_run):
    overrides, stdout = cluster_run
    assert "wall time" in stdout
    lake = Lake(spark, load_config(overrides=overrides).lake)
    log = spark.read.format("delta").load(lake.location(RUN_LOG)).collect()
    assert {r.stage for r in log} == set(STAGES) and all(r.status == "ok" for r in log)
    dataset = lake.read(DATASET)
    kept_with_text = (lake.read(IMAGES).where("drop_reason IS NULL").select("image_id")
                      .join(lake.read(RETRIEVALS).select("image_id").distinct(), "image_id"))
    assert dataset.count() == kept_with_text.count() > 0
    assert dataset.where(F.size("scales") > 0).count() > 0
    # WebDataset shards written by the executors of the cluster, listed in sizes.json by the driver.
    sizes = json.loads((Path(lake.root) / "export" / "webdataset" / "sizes.json").read_text())
    assert sum(sizes.values()) == dataset.count()
    assert all((Path(lake.root) / "export" / "webdataset" / name).stat().st_size > 1024 for name in sizes)
