"""Table names, schemas and keys in one place, and the Delta read/write helpers every stage uses.

Tables are path-based under `lake.root` by default (`<root>/<name>`), or `<catalog_schema>.<name>` in a
metastore (Unity Catalog, Glue) when `lake.catalog_schema` is set. Writes are transactional Delta
commits: MERGE on the table's key for incremental stages, replaceWhere/overwrite for derived tables.
Create and MERGE go through Delta SQL (`CREATE TABLE IF NOT EXISTS ... USING DELTA`, `MERGE INTO` from
a temporary view), not the Python `DeltaTable` API, so they run unchanged under Spark Connect (the
open-source Connect server has no handler for DeltaTable's plan extension).
"""
from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from typing import Iterable

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from realsyn_spark.config import LakeConfig

# A text or image node of an interleaved document, in reading order. (Delta rejects NOT NULL
# constraints nested in arrays, so element fields and array elements are nullable.)
NODE = T.StructType([
    T.StructField("position", T.IntegerType(), True),
    T.StructField("kind", T.StringType(), True),           # "text" | "image"
    T.StructField("text", T.StringType(), True),           # paragraph text for text nodes
    T.StructField("image_url", T.StringType(), True),      # absolute URL or pdf:// / warc:// reference
    T.StructField("alt", T.StringType(), True),
    T.StructField("page", T.IntegerType(), True),          # PDF page number (1-based)
])


@dataclass(frozen=True)
class TableSpec:
    name: str
    schema: T.StructType
    keys: tuple[str, ...]
    doc: str


def _schema(*fields: tuple[str, T.DataType, bool]) -> T.StructType:
    return T.StructType([T.StructField(n, t, nullable) for n, t, nullable in fields])


S, I, L, D, B, TS = T.StringType(), T.IntegerType(), T.LongType(), T.DoubleType(), T.BinaryType(), T.TimestampType()
F = T.FloatType()

DOCUMENTS = TableSpec("documents", _schema(
    ("doc_id", S, False), ("source_uri", S, False), ("source_kind", S, False), ("record_offset", L, True),
    ("url", S, True), ("title", S, True), ("nodes", T.ArrayType(NODE, True), False),
    ("metadata", S, True), ("run_id", S, False), ("ingested_at", TS, False),
), ("doc_id",), "one row per ingested document: ordered text and image nodes")

INGESTED_SOURCES = TableSpec("ingested_sources", _schema(
    ("source_uri", S, False), ("size_bytes", L, False), ("modified_ms", L, False), ("source_kind", S, False),
    ("documents", L, False), ("errors", L, False), ("run_id", S, False), ("ingested_at", TS, False),
), ("source_uri", "size_bytes", "modified_ms"), "input files already ingested (skip on later runs)")

INGEST_ERRORS = TableSpec("ingest_errors", _schema(
    ("error_id", S, False), ("stage", S, False), ("source_uri", S, False), ("location", S, True),
    ("kind", S, False), ("reason", S, False), ("run_id", S, False), ("recorded_at", TS, False),
), ("error_id",), "quarantine: every bad record, file, page or image with its reason")

IMAGE_BLOBS = TableSpec("image_blobs", _schema(
    ("image_url", S, False), ("status", S, False), ("image_bytes", B, True), ("sha256", S, True),
    ("width", I, True), ("height", I, True), ("format", S, True), ("origin", S, False),
    ("error", S, True), ("run_id", S, False), ("stored_at", TS, False),
), ("image_url",), "image bytes per distinct URL/reference, with fetch status and provenance")

IMAGES = TableSpec("images", _schema(
    ("image_id", S, False), ("doc_id", S, False), ("position", I, False), ("image_url", S, False),
    ("alt", S, True), ("sha256", S, True), ("width", I, True), ("height", I, True),
    ("drop_reason", S, True), ("duplicate_of", S, True), ("run_id", S, False),
    ("filter_reason", S, True), ("filter_duplicate_of", S, True),
), ("image_id",), "one row per image occurrence; filter_reason / filter_duplicate_of: the filters' decision "
   "(extract: rules, exact and near duplicates); drop_reason / duplicate_of: the final one, composed with the "
   "semantic duplicates by dedup (realsyn_spark/decisions.py), null for kept images")

SENTENCES = TableSpec("sentences", _schema(
    ("sentence_id", S, False), ("doc_id", S, False), ("position", I, False), ("sentence_index", I, False),
    ("text", S, False), ("n_words", I, False), ("drop_reason", S, True), ("duplicate_of", S, True),
    ("run_id", S, False), ("filter_reason", S, True), ("filter_duplicate_of", S, True),
), ("sentence_id",), "one row per segmented sentence; filter_* the filters' decision (extract), drop_reason / "
   "duplicate_of the final one (dedup composes them), null for kept sentences")

IMAGE_EMBEDDINGS = TableSpec("image_embeddings", _schema(
    ("image_id", S, False), ("model_id", S, False), ("embedding", T.ArrayType(F, True), False),
    ("run_id", S, False),
), ("image_id", "model_id"), "L2-normalised CLIP image embeddings")

SENTENCE_EMBEDDINGS = TableSpec("sentence_embeddings", _schema(
    ("sentence_id", S, False), ("model_id", S, False), ("embedding", T.ArrayType(F, True), False),
    ("run_id", S, False),
), ("sentence_id", "model_id"), "L2-normalised CLIP text embeddings of kept sentences")

CENTROIDS = TableSpec("centroids", _schema(
    ("version", S, False), ("purpose", S, False), ("cluster_id", I, False),
    ("centroid", T.ArrayType(F, True), False), ("model_id", S, False), ("created_at", TS, False),
), ("version", "purpose", "cluster_id"), "versioned k-means centroids (purpose: retrieval | balance)")

RETRIEVALS = TableSpec("retrievals", _schema(
    ("image_id", S, False), ("rank", I, False), ("sentence_id", S, False), ("score", F, False),
    ("cluster_id", I, False), ("centroid_version", S, False), ("run_id", S, False),
), ("image_id", "rank"), "top-k realistic sentences per image")

CAPTIONS = TableSpec("captions", _schema(
    ("image_id", S, False), ("request_hash", S, False), ("model_id", S, False), ("params", S, False),
    ("content_id", S, False), ("caption", S, True), ("drop_reason", S, True), ("run_id", S, False),
    ("created_at", TS, False),
), ("image_id", "request_hash"), "captioner output per image, keyed by request_hash = hash(model id, generation "
   "params, image content id): a request found here is never captioned again; drop_reason is set (undecodable, "
   "model_error, empty_caption) where no caption came out")

SYNTHETIC_TEXTS = TableSpec("synthetic_texts", _schema(
    ("image_id", S, False), ("request_hash", S, False), ("syn_text", S, False), ("caption", S, True),
    ("tags", T.ArrayType(S, True), True), ("generator", S, False), ("run_id", S, False),
), ("image_id",), "one synthetic caption per image; request_hash keys the generation cache")

GENERATION_CACHE = TableSpec("generation_cache", _schema(
    ("request_hash", S, False), ("model_id", S, False), ("sampling", S, False), ("syn_text", S, True),
    ("drop_reason", S, True), ("attempts", I, False), ("completion_tokens", L, False), ("run_id", S, False),
    ("created_at", TS, False),
), ("request_hash",), "every answered rewrite request, keyed by hash(model id, sampling params, prompt): "
   "a request found here is never sent again; drop_reason is set for outputs that failed the checks")

SYNTHETIC_TEXTS_PER_RANK = TableSpec("synthetic_texts_per_rank", _schema(
    ("image_id", S, False), ("rank", I, False), ("sentence_id", S, False), ("request_hash", S, False),
    ("syn_text", S, False), ("generator", S, False), ("run_id", S, False),
), ("image_id", "rank"), "generate.per_retrieved_text: one synthetic text per retrieved text (the paper's "
   "T_s^k ablation); rank 1 is the row of synthetic_texts")

SENTENCE_PHRASES = TableSpec("sentence_phrases", _schema(
    ("sentence_id", S, False), ("parser", S, False), ("phrases", T.ArrayType(S, True), False),
    ("run_id", S, False),
), ("sentence_id", "parser"), "candidate tag phrases per kept sentence (lemmatised spaCy noun chunks), "
   "parsed once per sentence and parser")

TAG_VOCABULARY = TableSpec("tag_vocabulary", _schema(
    ("version", S, False), ("tag", S, False), ("source", S, False), ("rank", I, False),
    ("sentence_count", L, True), ("created_at", TS, False), ("run_id", S, False),
), ("version", "tag"), "tag vocabulary versions (version = hash of the ordered tags; the newest created_at "
   "is current): base list (source base) plus mined noun phrases (source mined, with their sentence counts)")

TAG_EMBEDDINGS = TableSpec("tag_embeddings", _schema(
    ("version", S, False), ("model_id", S, False), ("tag", S, False), ("embedding", T.ArrayType(F, True), False),
    ("run_id", S, False),
), ("version", "model_id", "tag"), "prompt-ensembled CLIP text embeddings of a vocabulary version, once per model")

SYNTHETIC_EMBEDDINGS = TableSpec("synthetic_embeddings", _schema(
    ("request_hash", S, False), ("model_id", S, False), ("embedding", T.ArrayType(F, True), False),
    ("run_id", S, False),
), ("request_hash", "model_id"), "CLIP text embeddings of synthetic texts, keyed by generation request")

BALANCED = TableSpec("balanced", _schema(
    ("image_id", S, False), ("request_hash", S, False), ("similarity", F, False), ("drop_reason", S, True), ("cluster_id", I, True),
    ("cluster_size", I, True), ("cluster_rank", I, True), ("centroid_score", F, True),
    ("centroid_version", S, True), ("run_id", S, False),
), ("image_id",), "image<->synthetic similarity band (request_hash: the synthetic text it was measured on), cluster assignment (cosine to its centroid) and "
   "cluster-capped sampling ranks")

BALANCE_CENTROIDS = TableSpec("balance_centroids", _schema(
    ("version", S, False), ("level", S, False), ("cell", I, False), ("cluster_id", I, False),
    ("centroid", T.ArrayType(F, True), False), ("model_id", S, False), ("created_at", TS, False),
), ("version", "level", "cluster_id"), "two-level balance k-means: coarse cells (level coarse, cluster_id = "
   "cell) and each cell's fine centroids (level fine, dense cluster_id over all cells)")

DATASET = TableSpec("dataset", _schema(
    ("image_id", S, False), ("raw_image_url", S, False), ("image_bytes", B, True),
    ("text1", S, True), ("score1", F, True), ("sentence_id1", S, True),
    ("text2", S, True), ("score2", F, True), ("sentence_id2", S, True),
    ("text3", S, True), ("score3", F, True), ("sentence_id3", S, True),
    ("syn_text", S, True), ("similarity", F, True), ("cluster_id", I, True), ("cluster_rank", I, True),
    ("scales", T.ArrayType(I, True), True),
    ("source_doc_ids", T.ArrayType(S, True), True), ("source_image_urls", T.ArrayType(S, True), True),
    ("run_id", S, False),
), ("image_id",), "the exported dataset: one row per image with realistic and synthetic texts, and every "
   "document and URL the image stood for (itself and its exact, near and semantic duplicates)")

DATASET_CARD = TableSpec("dataset_card", _schema(
    ("figure", S, False), ("series", S, False), ("key", S, False), ("x", D, True), ("value", D, True),
    ("paper_value", D, True), ("png", S, True), ("text", S, True), ("run_id", S, False),
), ("figure", "series", "key"), "the dataset card's figures as rows (bins, counts, means) beside the paper's "
   "values; the export rewrites it with <export>/card/README.md and its PNGs")

RUN_LOG = TableSpec("run_log", _schema(
    ("run_id", S, False), ("stage", S, False), ("started_at", TS, False), ("ended_at", TS, False),
    ("status", S, False), ("rows_in", L, True), ("rows_out", L, True),
    ("counters", T.MapType(S, L, False), True), ("config_fingerprint", S, False), ("error", S, True),
), ("run_id", "stage"), "one row per stage run: status, row counts and per-rule counters")

EMBEDDING_MODELS = TableSpec("embedding_models", _schema(
    ("model_id", S, False), ("model", S, False), ("pretrained", S, True), ("checkpoint_path", S, True),
    ("random_weights", T.BooleanType(), False), ("run_id", S, False), ("recorded_at", TS, False),
), ("model_id",), "the CLIP model each embed run wrote its vectors under (latest recorded_at = the current "
   "one): later stages read vectors of that model_id and embed new texts with the same weights")

IMAGE_HASHES = TableSpec("image_hashes", _schema(
    ("sha256", S, False), ("hash_kind", S, False), ("phash", L, True), ("phash_core", L, True),
    ("run_id", S, False),
), ("sha256", "hash_kind"), "perceptual hashes per distinct image content (null: not decodable)")

SENTENCE_SCORES = TableSpec("sentence_scores", _schema(
    ("sentence_id", S, False), ("scorer", S, False), ("score", D, True), ("flag", T.BooleanType(), True),
    ("run_id", S, False),
), ("sentence_id", "scorer"), "model scores per sentence (cat:<parser>: relations + action; ppl:<lm>: perplexity)")

SEMANTIC_DUPLICATES = TableSpec("semantic_duplicates", _schema(
    ("kind", S, False), ("item_id", S, False), ("representative_id", S, False), ("cluster_id", I, False),
    ("similarity", F, False), ("group_size", I, False), ("model_id", S, False), ("run_id", S, False),
), ("kind", "item_id"), "semantic duplicates (kind image|sentence) and the group member kept for them")

FUNNEL = TableSpec("funnel", _schema(
    ("modality", S, False), ("step_index", I, False), ("step", S, False), ("rule", S, False),
    ("removed", L, False), ("remaining", L, False), ("ratio_to_start", D, True), ("ratio_to_previous", D, True),
    ("paper_remaining", D, True), ("paper_ratio_to_start", D, True), ("paper_ratio_to_previous", D, True),
    ("note", S, True), ("run_id", S, False),
), ("modality", "step_index", "rule"), "Real-World Data Extraction funnel: rows per step and rule beside the paper's")

ALL_TABLES = (DOCUMENTS, INGESTED_SOURCES, INGEST_ERRORS, IMAGE_BLOBS, IMAGES, SENTENCES, IMAGE_EMBEDDINGS,
              SENTENCE_EMBEDDINGS, CENTROIDS, RETRIEVALS, CAPTIONS, SYNTHETIC_TEXTS, GENERATION_CACHE, SYNTHETIC_EMBEDDINGS,
              BALANCED, BALANCE_CENTROIDS, DATASET, DATASET_CARD, RUN_LOG,
              IMAGE_HASHES, SENTENCE_SCORES, SEMANTIC_DUPLICATES, FUNNEL,
              SYNTHETIC_TEXTS_PER_RANK, SENTENCE_PHRASES, TAG_VOCABULARY, TAG_EMBEDDINGS, EMBEDDING_MODELS)


def schema_ddl(schema: T.StructType) -> str:
    """Column list for CREATE TABLE: nested types as Spark's DDL strings, NOT NULL kept at top level."""
    return ", ".join(f"`{f.name}` {f.dataType.simpleString()}{'' if f.nullable else ' NOT NULL'}"
                     for f in schema.fields)


class MissingTableError(LookupError):
    """A table was read that was never written (reading never creates one)."""


class UndeclaredTableError(RuntimeError):
    """A stage read or wrote a table its StageSpec does not declare."""


class Lake:
    """Where the tables live and how they are read and written.

    `readable` / `writable` (table names; None = any) are a stage's declarations: the runner gives each
    stage a Lake limited to them, so a stage cannot depend on a table its StageSpec does not name."""

    def __init__(self, spark: SparkSession, cfg: LakeConfig, readable: Iterable[str] | None = None,
                 writable: Iterable[str] | None = None, owner: str | None = None):
        self.spark = spark
        self.cfg = cfg
        self._ensured: set[str] = set()   # tables created or brought up to their spec's columns
        self._present: set[str] = set()   # tables known to exist (the pipeline never drops one)
        self.readable = None if readable is None else frozenset(readable)
        self.writable = None if writable is None else frozenset(writable)
        self.owner = owner

    def _declared(self, spec: TableSpec, allowed: frozenset[str] | None, verb: str) -> None:
        if allowed is not None and spec.name not in allowed:
            raise UndeclaredTableError(f"stage {self.owner!r} {verb} table {spec.name!r}, which its StageSpec in "
                                       f"realsyn_spark/pipeline.py does not declare")

    def location(self, spec: TableSpec) -> str:
        if self.cfg.catalog_schema:
            return f"{self.cfg.catalog_schema}.{spec.name}"
        return f"{self.root}/{spec.name}"

    @property
    def root(self) -> str:
        """Lake root as Spark needs it: a relative local path is made absolute (Delta's builder reads
        './lake/x' as a table name), any URI with a scheme is kept as given."""
        root = self.cfg.root.rstrip("/")
        return root if "://" in root or root.startswith(("dbfs:", "file:")) else os.path.abspath(root)

    def sql_name(self, spec: TableSpec) -> str:
        """The table as SQL names it: `catalog`.`schema`.`name`, or delta.`<path>` (backticks doubled)."""
        if self.cfg.catalog_schema:
            return ".".join(f"`{part.replace('`', '``')}`" for part in self.location(spec).split("."))
        return "delta.`" + self.location(spec).replace("`", "``") + "`"

    def ensure(self, spec: TableSpec) -> None:
        """Create the table empty with its schema if it does not exist (idempotent, once per Lake)."""
        self._declared(spec, self.writable, "writes")
        if spec.name in self._ensured:
            return
        if not self.exists(spec):
            self.spark.sql(f"CREATE TABLE IF NOT EXISTS {self.sql_name(spec)} ({schema_ddl(spec.schema)}) USING DELTA")
        else:
            self.add_missing_columns(spec)
        self._ensured.add(spec.name)

    def add_missing_columns(self, spec: TableSpec) -> list[str]:
        """A table written by an older release lacks columns its spec has gained: add them (nullable, as
        Delta adds columns; old rows read null) so the stage's MERGE or overwrite does not fail on a lake
        that predates them. Columns are never dropped or retyped here."""
        present = {f.name for f in self._load(spec).schema.fields}
        missing = [f for f in spec.schema.fields if f.name not in present]
        if missing:
            columns = ", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in missing)
            self.spark.sql(f"ALTER TABLE {self.sql_name(spec)} ADD COLUMNS ({columns})")
        return [f.name for f in missing]

    def _load(self, spec: TableSpec) -> DataFrame:
        if self.cfg.catalog_schema:
            return self.spark.read.table(self.location(spec))
        return self.spark.read.format("delta").load(self.location(spec))

    def exists(self, spec: TableSpec) -> bool:
        if spec.name in self._present or spec.name in self._ensured:
            return True
        if self.cfg.catalog_schema:
            found = self.spark.catalog.tableExists(self.location(spec))
        else:
            from pyarrow import fs as pafs

            from realsyn_spark.hadoopfs import _fs_and_path

            filesystem, path = _fs_and_path(self.location(spec) + "/_delta_log")
            found = filesystem.get_file_info(path).type == pafs.FileType.Directory
        if found:
            self._present.add(spec.name)
        return found

    def history(self, spec: TableSpec, limit: int | None = None) -> DataFrame:
        """DESCRIBE HISTORY: the table's commits, newest first."""
        return self.spark.sql(f"DESCRIBE HISTORY {self.sql_name(spec)}" + (f" LIMIT {int(limit)}" if limit else ""))

    def read(self, spec: TableSpec) -> DataFrame:
        """The table; a table that was never written is an error naming it (reading creates nothing)."""
        self._declared(spec, self.readable, "reads")
        if not self.exists(spec):
            raise MissingTableError(f"table {spec.name!r} does not exist at {self.location(spec)}: "
                                    "run the stage that writes it first")
        return self._load(spec)

    def read_or_empty(self, spec: TableSpec) -> DataFrame:
        """For an optional input only (declared so in its StageSpec): the table, or an empty frame with
        its schema when it was never written. Creates nothing."""
        self._declared(spec, self.readable, "reads")
        return self.read(spec) if self.exists(spec) else self.spark.createDataFrame([], spec.schema)

    def conform(self, spec: TableSpec, df: DataFrame) -> DataFrame:
        """Select the table's columns in order with its types, so a stage cannot drift from the schema."""
        return df.select([df[f.name].cast(f.dataType).alias(f.name) for f in spec.schema.fields])

    def merge_insert(self, spec: TableSpec, df: DataFrame, keys: Iterable[str] | None = None) -> None:
        """Insert rows whose key is not yet present: re-running with the same input adds nothing."""
        self._merge(spec, df, keys, update=False)

    def upsert(self, spec: TableSpec, df: DataFrame, keys: Iterable[str] | None = None,
               update_columns: Iterable[str] | None = None) -> None:
        """Insert new keys and update matched rows whose listed columns differ (no-op rows rewrite nothing)."""
        self._merge(spec, df, keys, update=True, update_columns=update_columns)

    def update_columns(self, spec: TableSpec, changes: DataFrame) -> None:
        """Set the columns of `changes` (the table's keys + some of its columns) on the existing rows with
        those keys, rewriting only rows where a value differs; no row is inserted or deleted."""
        columns = [c for c in changes.columns if c not in spec.keys]
        current = self.read(spec).drop(*columns)
        self.upsert(spec, current.join(changes, list(spec.keys)), update_columns=columns)

    def _merge(self, spec, df, keys, update, update_columns=None):
        self.ensure(spec)
        keys = tuple(keys or spec.keys)
        condition = " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys)
        view = f"realsyn_merge_{spec.name}_{uuid.uuid4().hex[:12]}"
        clauses = []
        if update:
            columns = list(update_columns or [f.name for f in spec.schema.fields if f.name not in keys])
            changed = " OR ".join(f"NOT (t.`{c}` <=> s.`{c}`)" for c in columns)
            assignments = ", ".join(f"t.`{c}` = s.`{c}`" for c in columns)
            clauses.append(f"WHEN MATCHED AND ({changed}) THEN UPDATE SET {assignments}")
        clauses.append("WHEN NOT MATCHED THEN INSERT *")
        self.conform(spec, df).createOrReplaceTempView(view)
        try:
            self.spark.sql(f"MERGE INTO {self.sql_name(spec)} AS t USING `{view}` AS s ON {condition} "
                           + " ".join(clauses))
        finally:
            self.spark.catalog.dropTempView(view)

    def delete_absent(self, spec: TableSpec, current: DataFrame, keys: Iterable[str] | None = None) -> None:
        """Delete the rows whose key is not in `current` (the rows that should exist now): what an upstream
        stage withdrew (an image a later file made a duplicate, a changed request) leaves this table too.
        One MERGE (`WHEN NOT MATCHED BY SOURCE THEN DELETE`), so readers never see a half-pruned table."""
        self.ensure(spec)
        keys = tuple(keys or spec.keys)
        condition = " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys)
        view = f"realsyn_keep_{spec.name}_{uuid.uuid4().hex[:12]}"
        current.select(*keys).dropDuplicates(list(keys)).createOrReplaceTempView(view)
        try:
            self.spark.sql(f"MERGE INTO {self.sql_name(spec)} AS t USING `{view}` AS s ON {condition} "
                           "WHEN NOT MATCHED BY SOURCE THEN DELETE")
        finally:
            self.spark.catalog.dropTempView(view)

    def overwrite(self, spec: TableSpec, df: DataFrame) -> None:
        """Replace the whole table in one Delta commit (readers see the old or the new version)."""
        self.ensure(spec)
        writer = self.conform(spec, df).write.format("delta").mode("overwrite").option("overwriteSchema", "false")
        if self.cfg.catalog_schema:
            writer.saveAsTable(self.location(spec))
        else:
            writer.save(self.location(spec))

    def append(self, spec: TableSpec, df: DataFrame) -> None:
        self.ensure(spec)
        writer = self.conform(spec, df).write.format("delta").mode("append")
        if self.cfg.catalog_schema:
            writer.saveAsTable(self.location(spec))
        else:
            writer.save(self.location(spec))
