"""Resolve the Delta Lake jars from Maven Central once, cache them, and hand local paths to Spark.

Resolution uses Spark's own Ivy resolver (`spark.jars.packages`) with a private Ivy home, so the
repositories are Spark's defaults. Later sessions pass the cached jar files through `spark.jars` and
need no network.
"""
from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("REALSYN_CACHE", Path.home() / ".cache" / "realsyn"))


def delta_maven_coordinate() -> str:
    """The delta-spark artifact matching the installed pyspark and delta-spark (as delta's pip_utils does)."""
    import pyspark

    spark_major_minor = ".".join(pyspark.__version__.split(".")[:2])
    return f"io.delta:delta-spark_{spark_major_minor}_2.13:{metadata.version('delta-spark')}"


def _ivy_home() -> Path:
    return cache_dir() / "ivy"


def cached_jars() -> list[str]:
    """Jar files already resolved for the current coordinate, or [] when resolution has not run."""
    marker = cache_dir() / "jars.txt"
    if not marker.exists():
        return []
    lines = marker.read_text().splitlines()
    if not lines or lines[0] != delta_maven_coordinate():
        return []
    jars = lines[1:]
    return jars if jars and all(Path(j).exists() for j in jars) else []


def resolve_jars() -> list[str]:
    """Return local jar paths for Delta, resolving them through Spark's Ivy once if needed."""
    jars = cached_jars()
    if jars:
        return jars
    from pyspark.sql import SparkSession

    coordinate = delta_maven_coordinate()
    ivy = _ivy_home()
    ivy.mkdir(parents=True, exist_ok=True)
    # A throwaway session whose only job is to make Ivy download the artifacts into `ivy`.
    spark = (
        SparkSession.builder.master("local[1]")
        .appName("realsyn-resolve-jars")
        .config("spark.jars.packages", coordinate)
        .config("spark.jars.ivy", str(ivy))
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    spark.stop()
    jars = sorted(str(p) for p in (ivy / "jars").glob("*.jar"))
    wanted = [j for j in jars if "delta-spark" in j or "delta-storage" in j]
    if not wanted:
        raise RuntimeError(f"Ivy resolved no Delta jars for {coordinate} into {ivy}/jars")
    (cache_dir() / "jars.txt").write_text("\n".join([coordinate, *wanted]) + "\n")
    return wanted


def write_spark_defaults(jars: list[str]) -> Path:
    """Write the pip-installed Spark's conf/spark-defaults.conf so plain `spark-submit jobs/<stage>.py`
    finds Delta locally. A cluster's spark-submit reads its own conf directory and is untouched."""
    import pyspark

    conf_dir = Path(pyspark.__file__).parent / "conf"
    conf_dir.mkdir(exist_ok=True)
    path = conf_dir / "spark-defaults.conf"
    path.write_text(
        "# Written by `realsyn setup-spark` for the local pip-installed Spark.\n"
        f"spark.jars {','.join(jars)}\n"
        "spark.sql.extensions io.delta.sql.DeltaSparkSessionExtension\n"
        "spark.sql.catalog.spark_catalog org.apache.spark.sql.delta.catalog.DeltaCatalog\n"
        "spark.sql.shuffle.partitions 8\n"
        "spark.driver.memory 4g\n"
        "spark.ui.showConsoleProgress false\n"
    )
    # Warnings only on the console, as the embedded session does; a cluster keeps its own log4j2 setup.
    (conf_dir / "log4j2.properties").write_text(
        "rootLogger.level = warn\nrootLogger.appenderRef.stdout.ref = console\n"
        "appender.console.type = Console\nappender.console.name = console\nappender.console.target = SYSTEM_ERR\n"
        "appender.console.layout.type = PatternLayout\n"
        "appender.console.layout.pattern = %d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n%ex\n"
    )
    return path
