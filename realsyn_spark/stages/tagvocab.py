"""Stage: the tag vocabulary, a base list extended with noun phrases mined from the kept sentences.

RAM++ (the paper's tagger) knows about 4,000 tags; the authors extended the vocabulary to 8,000 with tags
"derived from real-world sentences" (how is not stated). Here: every kept sentence is parsed once with
spaCy (`sentence_phrases`, keyed by sentence and parser, so a rerun parses only new sentences), its noun
chunks reduced to concrete tag candidates (udfs/tagger.py); the candidates are counted in Spark over the
currently kept sentences (a phrase counts once per sentence), those under `tagger.min_sentence_count`
dropped, and the most frequent fill the base list up to `tagger.vocabulary_size`. The result is a version
of `tag_vocabulary` (version = hash of the ordered tags, so the same inputs give the same version and a
rerun writes nothing); its prompt-ensembled CLIP text embeddings are computed once per (version, CLIP
model) on executors into `tag_embeddings`, which the generate stage's tagger reads.
"""
from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from realsyn_spark.config import RealSynConfig
from realsyn_spark.runlog import EmbeddingModel, StageContext, StageRun
from realsyn_spark.tables import SENTENCE_PHRASES, SENTENCES, TAG_EMBEDDINGS, TAG_VOCABULARY, Lake
from udfs.tagger import embed_tags, noun_phrases

# Tags per embedding task: ~6 prompts each through the CLIP text tower.
TAGS_PER_TASK = 2000


def read_tag_file(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def normalise(tags) -> list[str]:
    """Lower-cased, whitespace-folded, first occurrence kept (ImageNet repeats 'crane' and 'maillot')."""
    return list(dict.fromkeys(" ".join(t.lower().split()) for t in tags if t and t.strip()))


def builtin_base() -> list[str]:
    """ImageNet-1k class names (open_clip's zero-shot metadata), COCO detection categories (torchvision's
    weights metadata) and the project's scene/people list, in that order."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES
    from torchvision.models._meta import _COCO_CATEGORIES

    coco = [c for c in _COCO_CATEGORIES if c not in ("__background__", "N/A")]
    own = read_tag_file(resources.files("realsyn_spark").joinpath("resources/tags.txt").read_text())
    return normalise([*own, *IMAGENET_CLASSNAMES, *coco])


def base_vocabulary(path: str | None) -> list[str]:
    return normalise(read_tag_file(Path(path).read_text())) if path else builtin_base()


def vocabulary_version(tags: list[str]) -> str:
    return hashlib.sha256("\n".join(tags).encode()).hexdigest()[:16]


def parser_id(model: str) -> str:
    import spacy

    return f"spacy:{spacy.__version__}:{model}"


def parse_new_sentences(lake: Lake, cfg: RealSynConfig, stage: StageRun, run_id: str) -> None:
    """Noun-chunk candidates for kept sentences without a row for this parser (each parsed once)."""
    t = cfg.tagger
    parser = parser_id(t.spacy_model)
    done = lake.read(SENTENCE_PHRASES).where(F.col("parser") == parser).select("sentence_id")
    todo = (lake.read(SENTENCES).where("drop_reason IS NULL").select("sentence_id", "text")
            .join(done, "sentence_id", "left_anti"))
    n = todo.count()
    stage.count("sentences_parsed", n)
    if n == 0:
        return
    parsed = (todo.repartition(cfg.spark.shuffle_partitions, "sentence_id")
              .mapInPandas(noun_phrases(t.spacy_model, t.max_phrase_words, t.batch_size),
                           "sentence_id string, phrases array<string>")
              .withColumn("parser", F.lit(parser)).withColumn("run_id", F.lit(run_id)))
    # An append, not a MERGE: the rows are new by construction (anti-joined), and a MERGE evaluates its
    # source more than once (every sentence would be parsed twice).
    lake.append(SENTENCE_PHRASES, parsed)


def mined_counts(lake: Lake, cfg: RealSynConfig, base: list[str]) -> DataFrame:
    """(tag, sentence_count) over the currently kept sentences, most frequent first, base tags excluded."""
    kept = lake.read(SENTENCES).where("drop_reason IS NULL").select("sentence_id")
    phrases = (lake.read(SENTENCE_PHRASES).where(F.col("parser") == parser_id(cfg.tagger.spacy_model))
               .join(kept, "sentence_id").select("sentence_id", F.explode("phrases").alias("tag")))
    return (phrases.groupBy("tag").agg(F.countDistinct("sentence_id").alias("sentence_count"))
            .where(F.col("sentence_count") >= cfg.tagger.min_sentence_count)
            .where(~F.col("tag").isin(base)))


def build_vocabulary(lake: Lake, cfg: RealSynConfig) -> list[tuple[str, str, int | None]]:
    """[(tag, source, sentence_count)]: the base list (cut to vocabulary_size), then the mined phrases;
    or, when `generate.tag_vocabulary_path` pins a fixed list, that list as it is (nothing mined)."""
    if cfg.generate.tag_vocabulary_path:
        return [(t, "base", None) for t in base_vocabulary(cfg.generate.tag_vocabulary_path)]
    base = base_vocabulary(cfg.tagger.base_vocabulary_path)[:cfg.tagger.vocabulary_size]
    room = cfg.tagger.vocabulary_size - len(base)
    mined = []
    if room > 0:
        mined = (mined_counts(lake, cfg, base).orderBy(F.desc("sentence_count"), "tag").limit(room).collect())
    return [(t, "base", None) for t in base] + [(r.tag, "mined", int(r.sentence_count)) for r in mined]


def current_version(lake: Lake) -> str | None:
    """The version of the newest tagvocab run (created_at), or None before the first."""
    row = lake.read(TAG_VOCABULARY).orderBy(F.desc("created_at")).select("version").limit(1).collect()
    return row[0].version if row else None


def write_vocabulary(lake: Lake, entries: list[tuple[str, str, int | None]], run_id: str) -> tuple[str, bool]:
    """Store the vocabulary as a version and make it current; (version, whether anything was written)."""
    tags = [t for t, _, _ in entries]
    version = vocabulary_version(tags)
    if current_version(lake) == version:
        return version, False
    rows = [(version, t, source, i, count, run_id) for i, (t, source, count) in enumerate(entries)]
    df = (lake.spark.createDataFrame(rows, "version string, tag string, source string, rank int, "
                                           "sentence_count long, run_id string")
          .withColumn("created_at", F.current_timestamp()))
    # An older version coming back (e.g. sentences dropped again) gets a new created_at: it is current.
    lake.upsert(TAG_VOCABULARY, df, update_columns=["created_at", "run_id"])
    return version, True


def vocabulary_tags(lake: Lake, version: str) -> list[str]:
    return [r.tag for r in lake.read(TAG_VOCABULARY).where(F.col("version") == version).orderBy("rank").collect()]


def ensure_tag_embeddings(lake: Lake, cfg: RealSynConfig, version: str, tags: list[str], run_id: str,
                          embedding: EmbeddingModel) -> int:
    """Embed the tags of `version` that have no vector for the CLIP model embed recorded (executors, one
    model load per Python worker); returns how many were embedded. A second call embeds nothing."""
    model = embedding.model_id
    have = (lake.read(TAG_EMBEDDINGS).where((F.col("version") == version) & (F.col("model_id") == model))
            .select("tag"))
    todo = lake.spark.createDataFrame([(t,) for t in tags], "tag string").join(have, "tag", "left_anti")
    # A tag's vector depends on the tag and the model only: one stored under another version is reused.
    known = (lake.read(TAG_EMBEDDINGS).where(F.col("model_id") == model).dropDuplicates(["tag"])
             .select("tag", "embedding").join(todo, "tag"))
    if not known.isEmpty():
        lake.append(TAG_EMBEDDINGS, known.withColumn("version", F.lit(version)).withColumn("model_id", F.lit(model))
                    .withColumn("run_id", F.lit(run_id)))
        todo = todo.join(lake.read(TAG_EMBEDDINGS).where((F.col("version") == version) & (F.col("model_id") == model))
                         .select("tag"), "tag", "left_anti")
    n = todo.count()
    if n == 0:
        return 0
    tasks = max(1, min(cfg.spark.shuffle_partitions, -(-n // TAGS_PER_TASK)))
    vectors = (todo.repartition(tasks, "tag").mapInPandas(embed_tags(embedding.config),
                                                           "tag string, embedding array<float>")
               .withColumn("version", F.lit(version)).withColumn("model_id", F.lit(model))
               .withColumn("run_id", F.lit(run_id)))
    lake.append(TAG_EMBEDDINGS, vectors)     # new by construction; a MERGE would run CLIP twice
    return n


def tag_matrix(lake: Lake, model: str, version: str) -> tuple[list[str], np.ndarray]:
    """(tags in vocabulary order, L2-normalised embedding matrix) of a version for CLIP model `model`."""
    rows = (lake.read(TAG_EMBEDDINGS).where((F.col("version") == version) & (F.col("model_id") == model))
            .join(lake.read(TAG_VOCABULARY).where(F.col("version") == version).select("tag", "rank"), "tag")
            .orderBy("rank").select("tag", "embedding").collect())
    if not rows:
        return [], np.zeros((0, 0), np.float32)
    return [r.tag for r in rows], np.asarray([r.embedding for r in rows], dtype=np.float32)


def run(ctx: StageContext) -> StageRun:
    cfg, lake, run_id = ctx.cfg, ctx.lake, ctx.run_id
    with ctx.stage as stage:
        parse_new_sentences(lake, cfg, stage, run_id)
        entries = build_vocabulary(lake, cfg)
        stage.rows_in = len(entries)
        version, written = write_vocabulary(lake, entries, run_id)
        stage.count("base_tags", sum(1 for _, s, _ in entries if s == "base"))
        stage.count("mined_tags", sum(1 for _, s, _ in entries if s == "mined"))
        stage.count("new_version", int(written))
        stage.count("tags_embedded", ensure_tag_embeddings(lake, cfg, version, [t for t, _, _ in entries], run_id,
                                                             ctx.embedding_model()))
        stage.rows_out = len(entries)
    return stage
