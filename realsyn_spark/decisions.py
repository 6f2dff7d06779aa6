"""The one step that writes `drop_reason` / `duplicate_of` on `images` and `sentences`.

Two stages decide about a row, and neither writes the other's columns:

* `extract` stores the filters' decision in `filter_reason` / `filter_duplicate_of` (the rules of
  realsyn_spark/rules.py decided by extract, then exact and near duplicates);
* `dedup` stores the semantic-duplicate groups in `semantic_duplicates`, and then runs `compose`, which
  writes the final `drop_reason` / `duplicate_of` from both.

So data flows one way (extract -> embed -> dedup -> later stages), and `drop_reason` has one writer. Between
extract and dedup a new row's `drop_reason` is still null (undecided); the only stage in between, `embed`,
reads `filter_reason`.
"""
from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from realsyn_spark.dedup import resolve_duplicate_chains
from realsyn_spark.rules import rule

FILTER_COLUMNS = ("filter_reason", "filter_duplicate_of")


def compose(rows: DataFrame, semantic: DataFrame, kind: str, id_col: str) -> DataFrame:
    """(id, drop_reason, duplicate_of) for every row of one modality.

    `rows` has the id and the filter columns; `semantic` is `semantic_duplicates` of this kind (item_id,
    representative_id; empty when semantic dedup is off or skipped). A row the filters kept becomes a
    `semantic_duplicate` when its group's representative is kept by the filters too (a group whose
    representative a later extract run dropped is decided anew by the next dedup run); every other row
    keeps the filters' decision. `duplicate_of` chains are resolved to the row finally kept, so an exact
    duplicate of a semantic duplicate points at the group's representative."""
    groups = semantic.select(F.col("item_id").alias(id_col), F.col("representative_id").alias("_rep"))
    alive = rows.where("filter_reason IS NULL").select(F.col(id_col).alias("_rep"))
    valid = groups.join(alive, "_rep")
    is_semantic = F.col("filter_reason").isNull() & F.col("_rep").isNotNull()
    composed = (rows.select(id_col, *FILTER_COLUMNS).join(valid, id_col, "left")
                .select(id_col,
                        F.when(is_semantic, F.lit(rule(kind, "semantic_duplicate")))
                        .otherwise(F.col("filter_reason")).alias("drop_reason"),
                        F.when(is_semantic, F.col("_rep")).otherwise(F.col("filter_duplicate_of"))
                        .alias("duplicate_of")))
    return resolve_duplicate_chains(composed, id_col)
