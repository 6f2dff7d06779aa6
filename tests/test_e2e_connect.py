"""The whole pipeline as a Spark Connect client (issue 9): the real CLI with SPARK_REMOTE pointing at a
local Spark Connect server with Delta (tests/connect_server.py), against the same pipeline on a
Classic session; both must give the same dataset rows. Both run as subprocesses (a process holds
either a Classic or a Connect session), and their wall times are printed for the closing note."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from realsyn_spark.config import load_config
from realsyn_spark.pipeline import STAGES
from realsyn_spark.tables import DATASET, RUN_LOG, Lake
from tests.conftest import tiny_overrides
from tests.connect_server import connect_server

REPO = Path(__file__).resolve().parents[1]
# Columns that name the run, not the data.
VOLATILE = {"run_id"}


def _run_cli(overrides: list[str], remote: str | None) -> float:
    cmd = [sys.executable, "-m", "realsyn_spark.cli", *[a for o in overrides for a in ("--set", o)], "run"]
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("SPARK_REMOTE", None)
    if remote:
        env["SPARK_REMOTE"] = remote
    started = time.monotonic()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=2400, cwd=REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return time.monotonic() - started


def _rows(spark, overrides):
    lake = Lake(spark, load_config(overrides=overrides).lake)
    frame = lake.read(DATASET)
    columns = [c for c in frame.columns if c not in VOLATILE]
    return lake, sorted(tuple(r) for r in frame.select(columns).collect())


@pytest.mark.timeout(4800)
def test_pipeline_on_spark_connect_gives_the_classic_rows(spark, sample_corpus, tmp_path_factory):
    base = tmp_path_factory.mktemp("connect")
    extra = ["fetch.timeout_s=2", "fetch.retries=0", "retrieval.n_probe=2", "spark.local_master=local[2]"]
    classic = tiny_overrides(base / "classic_lake", sample_corpus) + extra
    remote = tiny_overrides(base / "connect_lake", sample_corpus) + extra
    classic_s = _run_cli(classic, None)
    with connect_server(log_path=str(base / "connect-server.log")) as url:
        connect_s = _run_cli(remote, url)
    figures = (f"e2e wall time: classic {classic_s:.1f} s, connect {connect_s:.1f} s, "
               f"ratio connect/classic {connect_s / classic_s:.2f}, load avg {os.getloadavg()[0]:.1f}")
    print("\n" + figures)
    (base / "wall_times.txt").write_text(figures + "\n")   # kept under pytest's basetemp after a quiet run

    lake, connect_rows = _rows(spark, remote)
    _, classic_rows = _rows(spark, classic)
    assert len(connect_rows) > 0
    assert connect_rows == classic_rows
    log = lake.read(RUN_LOG).collect()
    assert {r.stage for r in log} == set(STAGES) and all(r.status == "ok" for r in log)
