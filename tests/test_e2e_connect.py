"""A scheduled refresh, run as a Spark Connect client on a cluster, with a crash in the middle (issues 9
and 22). The real CLI with SPARK_REMOTE pointing at a local Spark Connect server with Delta
(tests/connect_server.py) whose master is `local-cluster[2,1,1024]`: two executor JVMs with their own Python
workers, so every UDF, shipped array and model cache must survive pickling to another process.

1. `realsyn run` over the WARC and PDF files (the first night);
2. `realsyn run --until embed` over the whole folder after the OBELICS and HTML files arrived (the run ends
   after embed, as a crash between stages leaves the lake);
3. `realsyn run` again: it finishes the work.

Everything a full build decides, the refreshed lake must decide the same: it is compared with the shared
Classic pipeline lake (tests/conftest.py, built in-process with the same settings over the whole folder),
except the balance clusters, which a refresh keeps frozen from the first run (by design) and which must equal
a full assignment of every current image to those centroids. One pipeline's worth of Connect work covers what
took five runs before (Classic CLI, Connect CLI, local-cluster CLI, an interrupted run, a Classic refresh)."""
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
from realsyn_spark.tables import BALANCED, DATASET, IMAGES, RETRIEVALS, RUN_LOG, SENTENCES, Lake
from tests.conftest import pipeline_overrides
from tests.connect_server import connect_server

REPO = Path(__file__).resolve().parents[1]
CLUSTER = "local-cluster[2,1,1024]"
UNTIL_EMBED = list(STAGES)[:list(STAGES).index("embed") + 1]


def _run_cli(overrides: list[str], remote: str, *args: str) -> str:
    cmd = [sys.executable, "-m", "realsyn_spark.cli", *[a for o in overrides for a in ("--set", o)], "run", *args]
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_REMOTE": remote,
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=2400, cwd=REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return done.stdout


@pytest.fixture(scope="module")
def refreshed(spark, sample_corpus, tmp_path_factory):
    """(config, lake, [run log rows of each of the three runs, in order])."""
    base = tmp_path_factory.mktemp("connect")
    overrides = pipeline_overrides(base / "lake")
    first_night = overrides + [f"ingest.input_paths=[{sample_corpus}/warc, {sample_corpus}/pdf]"]
    everything = overrides + [f"ingest.input_paths=[{sample_corpus}]"]
    started = time.monotonic()
    with connect_server(master=CLUSTER, log_path=str(base / "connect-server.log")) as url:
        _run_cli(first_night, url)
        _run_cli(everything, url, "--until", "embed")
        stdout = _run_cli(everything, url)
    assert "wall time" in stdout
    figures = f"e2e wall time (Connect on {CLUSTER}: refresh, crash after embed, resume): {time.monotonic() - started:.1f} s"
    print("\n" + figures)
    (base / "wall_times.txt").write_text(figures + "\n")   # kept under pytest's basetemp
    cfg = load_config(overrides=everything)
    lake = Lake(spark, cfg.lake)
    runs: dict[str, list] = {}
    for row in lake.read(RUN_LOG).collect():
        runs.setdefault(row.run_id, []).append(row)
    ordered = sorted(runs.values(), key=lambda rows: min(r.started_at for r in rows))
    return cfg, lake, [sorted(rows, key=lambda r: r.started_at) for rows in ordered]


def _by_stage(rows) -> dict:
    return {r.stage: r for r in rows}


@pytest.mark.timeout(4800)
def test_each_run_did_its_stages_and_the_resumed_run_repeated_nothing(refreshed, sample_corpus):
    _, _, runs = refreshed
    assert len(runs) == 3
    first, crashed, resumed = runs
    assert all(r.status == "ok" for rows in runs for r in rows)
    assert [r.stage for r in first] == list(STAGES) and [r.stage for r in resumed] == list(STAGES)
    assert [r.stage for r in crashed] == UNTIL_EMBED
    ingest = _by_stage(crashed)["ingest"].counters
    first_files = [f for folder in ("warc", "pdf") for f in (sample_corpus / folder).iterdir()]
    assert ingest["files_skipped_already_ingested"] == len(first_files) and ingest["files_ingested"] > 0, ingest
    resumed_log = _by_stage(resumed)
    assert resumed_log["ingest"].rows_in == 0                          # nothing ingested twice
    assert resumed_log["embed"].counters["images_embedded"] == 0       # nor embedded twice
    # the sample corpus's later files hold duplicates that win over images kept by the first run
    assert resumed_log["generate"].counters["texts_withdrawn"] > 0
    assert resumed_log["balance"].counters["images_withdrawn"] > 0


def test_refresh_decides_what_the_classic_full_build_decides(spark, refreshed, pipeline_lake):
    _, lake, _ = refreshed
    _, full, _ = pipeline_lake

    def decisions(spec, key):
        return lambda l: sorted(tuple(r) for r in l.read(spec).select(key, "drop_reason", "duplicate_of").collect())

    for spec, key in ((IMAGES, "image_id"), (SENTENCES, "sentence_id")):
        assert decisions(spec, key)(lake) == decisions(spec, key)(full), spec.name

    def top_texts(l):
        rows = l.read(RETRIEVALS).groupBy("image_id").agg(F.sort_array(F.collect_list("sentence_id")).alias("s"))
        return {r.image_id: r.s for r in rows.collect()}

    assert top_texts(lake) == top_texts(full)

    def dataset(l):
        columns = ["image_id", "sentence_id1", "sentence_id2", "sentence_id3", "text1", "syn_text",
                   "raw_image_url", "source_image_urls", "image_bytes"]
        return sorted(tuple(r) for r in l.read(DATASET).select(columns).collect())

    rows = dataset(lake)
    assert len(rows) > 0 and rows == dataset(full)


def test_refreshed_clusters_are_a_full_assignment_to_the_frozen_centroids(spark, refreshed):
    from realsyn_spark.runlog import recorded_embedding_model
    from realsyn_spark.stages import balance

    cfg, lake, _ = refreshed
    bcfg = cfg.balance
    model_id = recorded_embedding_model(lake, cfg.embed).model_id
    version = balance.latest_version(lake, model_id)
    kept = balance.similarity_band(lake, bcfg, model_id).where("drop_reason IS NULL")
    expected = balance.rank_in_clusters(balance.assign_images(lake, kept, version, balance.load_coarse(lake, version),
                                                              bcfg), bcfg.seed)
    columns = ["image_id", "cluster_id", "cluster_size", "cluster_rank"]
    got = lake.read(BALANCED).where("drop_reason IS NULL").select(columns)
    assert sorted(tuple(r) for r in got.collect()) == sorted(tuple(r) for r in expected.select(columns).collect())


def test_cluster_executors_wrote_the_webdataset_shards(spark, refreshed):
    _, lake, _ = refreshed
    dataset = lake.read(DATASET)
    kept_with_text = (lake.read(IMAGES).where("drop_reason IS NULL").select("image_id")
                      .join(lake.read(RETRIEVALS).select("image_id").distinct(), "image_id"))
    assert dataset.count() == kept_with_text.count() > 0
    assert dataset.where(F.size("scales") > 0).count() > 0
    # Shards written by the executors of the cluster, listed in sizes.json by the driver.
    sizes = json.loads((Path(lake.root) / "export" / "webdataset" / "sizes.json").read_text())
    assert sum(sizes.values()) == dataset.count()
    assert all((Path(lake.root) / "export" / "webdataset" / name).stat().st_size > 1024 for name in sizes)
