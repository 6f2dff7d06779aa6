"""The whole pipeline as a Spark Connect client on a cluster (issues 9 and 22): the real CLI with
SPARK_REMOTE pointing at a local Spark Connect server with Delta (tests/connect_server.py) whose master is
`local-cluster[2,1,1024]`, two executor JVMs with their own Python workers, so every UDF, shipped array and
model cache must survive pickling to another process. The run is interrupted after `embed` (the first CLI
call ends there, as a crash between stages leaves a lake) and resumed by a second `realsyn run`; the lake
must then hold the same `dataset` rows as the shared Classic pipeline lake (tests/conftest.py), built
in-process with the same settings. One pipeline run covers what took four (Classic CLI, Connect CLI,
local-cluster CLI, interrupted run) before."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from realsyn_spark.config import load_config
from realsyn_spark.pipeline import STAGES
from realsyn_spark.tables import DATASET, IMAGES, RETRIEVALS, RUN_LOG, Lake
from tests.conftest import pipeline_overrides
from tests.connect_server import connect_server

REPO = Path(__file__).resolve().parents[1]
# Columns that name the run, not the data.
VOLATILE = {"run_id"}
CLUSTER = "local-cluster[2,1,1024]"


def _run_cli(overrides: list[str], remote: str, *args: str) -> str:
    cmd = [sys.executable, "-m", "realsyn_spark.cli", *[a for o in overrides for a in ("--set", o)], "run", *args]
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_REMOTE": remote,
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=2400, cwd=REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return done.stdout


def _dataset_rows(lake: Lake) -> list[tuple]:
    frame = lake.read(DATASET)
    columns = [c for c in frame.columns if c not in VOLATILE]
    return sorted(tuple(r) for r in frame.select(columns).collect())


@pytest.fixture(scope="module")
def connect_cluster_run(sample_corpus, tmp_path_factory):
    base = tmp_path_factory.mktemp("connect")
    overrides = pipeline_overrides(base / "lake", sample_corpus)
    started = time.monotonic()
    with connect_server(master=CLUSTER, log_path=str(base / "connect-server.log")) as url:
        _run_cli(overrides, url, "--until", "embed")      # the "crash": the run ends after embed
        stdout = _run_cli(overrides, url)                   # the rerun finishes the work
    figures = f"e2e wall time (Connect on {CLUSTER}, interrupted + resumed): {time.monotonic() - started:.1f} s"
    print("\n" + figures)
    (base / "wall_times.txt").write_text(figures + "\n")   # kept under pytest's basetemp
    return overrides, stdout


@pytest.mark.timeout(4800)
def test_connect_cluster_run_resumed_after_embed_gives_the_classic_rows(spark, pipeline_lake, connect_cluster_run):
    overrides, stdout = connect_cluster_run
    assert "wall time" in stdout
    lake = Lake(spark, load_config(overrides=overrides).lake)
    _, classic_lake, _ = pipeline_lake
    connect_rows = _dataset_rows(lake)
    assert len(connect_rows) > 0
    assert connect_rows == _dataset_rows(classic_lake)

    runs = {}
    for row in lake.read(RUN_LOG).collect():
        runs.setdefault(row.run_id, []).append(row)
    assert all(r.status == "ok" for rows in runs.values() for r in rows)
    first, second = sorted(runs.values(), key=lambda rows: min(r.started_at for r in rows))
    assert [r.stage for r in sorted(first, key=lambda r: r.started_at)] == list(STAGES)[:list(STAGES).index("embed") + 1]
    assert {r.stage for r in second} == set(STAGES)
    by_stage = {r.stage: r for r in second}
    assert by_stage["ingest"].rows_in == 0                            # nothing ingested twice
    assert by_stage["embed"].counters["images_embedded"] == 0


def test_cluster_executors_wrote_the_webdataset_shards(spark, connect_cluster_run):
    overrides, _ = connect_cluster_run
    lake = Lake(spark, load_config(overrides=overrides).lake)
    dataset = lake.read(DATASET)
    kept_with_text = (lake.read(IMAGES).where("drop_reason IS NULL").select("image_id")
                      .join(lake.read(RETRIEVALS).select("image_id").distinct(), "image_id"))
    assert dataset.count() == kept_with_text.count() > 0
    assert dataset.where(F.size("scales") > 0).count() > 0
    # Shards written by the executors of the cluster, listed in sizes.json by the driver.
    sizes = json.loads((Path(lake.root) / "export" / "webdataset" / "sizes.json").read_text())
    assert sum(sizes.values()) == dataset.count()
    assert all((Path(lake.root) / "export" / "webdataset" / name).stat().st_size > 1024 for name in sizes)
