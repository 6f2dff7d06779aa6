import os

from pyspark.sql import functions as F

from realsyn_spark.config import LakeConfig
from realsyn_spark.tables import ALL_TABLES, IMAGES, Lake


def _images(spark, rows):
    return spark.createDataFrame(
        [(i, "d", p, f"http://x/{i}", None, None, None, None, reason, None, "r", reason, None) for i, p, reason in rows],
        IMAGES.schema)


def test_merge_insert_is_idempotent(spark, tmp_path):
    lake = Lake(spark, LakeConfig(root=str(tmp_path)))
    batch = _images(spark, [("a", 0, None), ("b", 1, None)])
    lake.merge_insert(IMAGES, batch)
    lake.merge_insert(IMAGES, batch)
    lake.merge_insert(IMAGES, _images(spark, [("b", 1, "changed"), ("c", 2, None)]))
    rows = {r.image_id: r.drop_reason for r in lake.read(IMAGES).collect()}
    assert rows == {"a": None, "b": None, "c": None}  # insert-only: existing "b" untouched


def test_upsert_rewrites_only_changed_rows(spark, tmp_path):
    lake = Lake(spark, LakeConfig(root=str(tmp_path)))
    lake.merge_insert(IMAGES, _images(spark, [("a", 0, None), ("b", 1, None)]))
    lake.upsert(IMAGES, _images(spark, [("a", 0, None), ("b", 1, "min_side")]), update_columns=["drop_reason"])
    history = spark.sql(f"DESCRIBE HISTORY delta.`{lake.location(IMAGES)}`").orderBy(F.desc("version")).first()
    assert history.operation == "MERGE"
    assert history.operationMetrics["numTargetRowsUpdated"] == "1"
    rows = {r.image_id: r.drop_reason for r in spark.read.format("delta").load(lake.location(IMAGES)).collect()}
    assert rows == {"a": None, "b": "min_side"}


def test_conform_enforces_schema_order_and_types(spark, tmp_path):
    lake = Lake(spark, LakeConfig(root=str(tmp_path)))
    df = _images(spark, [("a", 0, None)])
    shuffled = df.select(*reversed(df.columns)).withColumn("position", F.col("position").cast("long"))
    assert lake.conform(IMAGES, shuffled).schema == IMAGES.schema


def test_locations_by_path_or_catalog(spark):
    by_path = Lake(spark, LakeConfig(root="s3://bucket/lake/"))
    by_name = Lake(spark, LakeConfig(catalog_schema="main.realsyn"))
    assert by_path.location(IMAGES) == "s3://bucket/lake/images"
    assert by_name.location(IMAGES) == "main.realsyn.images"
    relative = Lake(spark, LakeConfig(root="./lake"))
    assert relative.location(IMAGES) == os.path.abspath("lake/images")  # Delta reads './x' as a table name
    assert len({t.name for t in ALL_TABLES}) == len(ALL_TABLES)


def test_catalog_tables_in_a_metastore_schema(spark, tmp_path):
    spark.sql(f"CREATE SCHEMA IF NOT EXISTS realsyn_test LOCATION '{tmp_path}'")
    lake = Lake(spark, LakeConfig(catalog_schema="realsyn_test"))
    lake.merge_insert(IMAGES, _images(spark, [("a", 0, None)]))
    assert spark.table("realsyn_test.images").count() == 1
    assert lake.exists(IMAGES)


def test_a_table_from_an_older_release_gains_the_new_columns(spark, tmp_path):
    """A lake written before a column existed (e.g. `balanced` before `request_hash`): the next write adds
    the column, old rows read null, new rows carry it."""
    from pyspark.sql import types as T

    from realsyn_spark.tables import BALANCED, TableSpec

    old_spec = TableSpec(BALANCED.name, T.StructType([f for f in BALANCED.schema.fields if f.name != "request_hash"]),
                         BALANCED.keys, BALANCED.doc)
    row = {"image_id": "a", "similarity": 0.5, "drop_reason": None, "cluster_id": 1, "cluster_size": 1,
           "cluster_rank": 1, "centroid_score": 0.9, "centroid_version": "v", "run_id": "r0"}
    Lake(spark, LakeConfig(root=str(tmp_path))).merge_insert(
        old_spec, spark.createDataFrame([tuple(row[f.name] for f in old_spec.schema.fields)], old_spec.schema))
    lake = Lake(spark, LakeConfig(root=str(tmp_path)))
    new_row = dict(row, image_id="b", request_hash="h")
    lake.merge_insert(BALANCED, spark.createDataFrame([tuple(new_row[f.name] for f in BALANCED.schema.fields)],
                                                      BALANCED.schema))
    got = {r.image_id: r.request_hash for r in lake.read(BALANCED).collect()}
    assert got == {"a": None, "b": "h"}
    assert Lake(spark, LakeConfig(root=str(tmp_path))).add_missing_columns(BALANCED) == []
