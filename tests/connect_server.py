"""A local Spark Connect server with Delta, started offline from the pip-installed pyspark (its
SparkConnectServer class and bin/spark-submit) on a free port, for tests that run the pipeline as a
Connect client would (Databricks serverless / standard access mode speak the same protocol)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pyspark

from realsyn_spark.jars import resolve_jars
from realsyn_spark.session import DELTA_CONF

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def connect_server(master: str = "local[2]", timeout_s: float = 180.0, log_path: str | None = None):
    """Yields the server's `sc://127.0.0.1:<port>` URL; the server is stopped on exit."""
    home = Path(pyspark.__file__).parent
    port = _free_port()
    conf = {**DELTA_CONF, "spark.connect.grpc.binding.port": str(port), "spark.connect.grpc.binding.address": "127.0.0.1",
            "spark.ui.enabled": "false", "spark.sql.execution.arrow.pyspark.enabled": "true",
            "spark.databricks.delta.snapshotPartitions": "4", "spark.driver.memory": "2g"}
    cmd = [str(home / "bin" / "spark-submit"), "--master", master, "--jars", ",".join(resolve_jars()),
           "--class", "org.apache.spark.sql.connect.service.SparkConnectServer"]
    for key, value in conf.items():
        cmd += ["--conf", f"{key}={value}"]
    cmd.append("spark-internal")
    # The server's Python workers import this checkout's udfs/ and realsyn_spark/ (on a cluster: the wheel).
    env = {**os.environ, "SPARK_HOME": str(home), "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("SPARK_REMOTE", None)
    log = open(log_path or os.devnull, "wb")
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while not _listening(port):
            if server.poll() is not None:
                raise RuntimeError(f"Spark Connect server exited with {server.returncode} (log: {log_path})")
            if time.monotonic() > deadline:
                raise TimeoutError(f"Spark Connect server not listening after {timeout_s} s (log: {log_path})")
            time.sleep(0.5)
        yield f"sc://127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
