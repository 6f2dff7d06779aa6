"""Redundancy filters: connected components in Spark, pHash LSH near-duplicates on real images,
semantic dedup (k-means + union-find) on planted vectors, duplicate_of chains and provenance."""
from __future__ import annotations

import io
import random

import numpy as np
import pytest
from PIL import Image, ImageDraw

from realsyn_spark import dedup
from realsyn_spark.config import load_config
from pyspark.sql import functions as F
from udfs import phash as phashes


def _python_components(n_nodes, edges):
    uf = dedup.UnionFind(n_nodes)
    for a, b in edges:
        uf.union(a, b)
    return uf


@pytest.mark.parametrize("seed", [0])
def test_connected_components_match_union_find(spark, seed):
    rng = random.Random(seed)
    n = 300
    # Chains, stars, a long path and isolated pairs: the shapes that need several rounds.
    edges = [(i, i + 1) for i in range(0, 30)]                       # a path of 31 nodes
    edges += [(100, j) for j in range(101, 130)]                     # a star
    edges += [(rng.randrange(130, n), rng.randrange(130, n)) for _ in range(120)]
    names = [f"n{i:04d}" for i in range(n)]
    df = spark.createDataFrame([(names[a], names[b]) for a, b in edges], "u string, v string")
    components, rounds = dedup.connected_components(df)
    got = {r.node: r.component for r in components.collect()}
    uf = _python_components(n, edges)
    touched = {x for e in edges for x in e if e[0] != e[1]}
    expected = {}
    for i in touched:
        root = uf.find(i)
        expected[names[i]] = min(names[j] for j in touched if uf.find(j) == root)
    assert got == expected
    assert 1 <= rounds <= 12


def test_union_find_cluster_groups_keep_member_nearest_centroid():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(3, 16))
    vecs = []
    ids = []
    for g in range(3):
        for k in range(4 if g < 2 else 1):
            v = base[g] + (0.02 * rng.normal(size=16) if k else 0)
            vecs.append(v / np.linalg.norm(v))
            ids.append(f"g{g}m{k}")
    vecs = np.array(vecs, dtype=np.float32)
    rows = dedup.cluster_groups(np.array(ids), vecs, threshold=0.95)
    dropped = {r[0]: r[1] for r in rows}
    assert len(dropped) == 6                                  # two groups of 4 keep one each; g2 alone
    for g in range(2):
        members = [f"g{g}m{k}" for k in range(4)]
        reps = {dropped.get(m, m) for m in members}
        assert len(reps) == 1
        rep = reps.pop()
        centroid = vecs[[ids.index(m) for m in members]].mean(0)
        assert rep == max(members, key=lambda m: float(vecs[ids.index(m)] @ centroid))
    assert all(r[3] == 4 for r in rows)


# ------------------------------------------------------------------- LSH candidate generation

def test_lsh_finds_every_pair_within_the_guaranteed_distance(spark):
    rng = np.random.default_rng(3)
    icfg = load_config().image_filter
    n_blocks, key_blocks = icfg.phash_blocks, icfg.phash_key_blocks
    guaranteed = n_blocks - key_blocks                    # 3 bits with the defaults
    rows, truth = [], set()
    for g in range(150):
        base = int(rng.integers(0, 2**63)) * (1 if g % 2 else -1)
        rows.append((f"g{g:03d}-0", base, None))
        flips = rng.choice(64, size=int(rng.integers(1, guaranteed + 1)), replace=False)
        twin = base
        for bit in flips:
            twin ^= 1 << int(bit)
        twin = phashes.to_signed64(twin & (2**64 - 1))
        rows.append((f"g{g:03d}-1", twin, None))
        truth.add((f"g{g:03d}-0", f"g{g:03d}-1"))
    items = spark.createDataFrame(rows, "image_id string, phash bigint, phash_core bigint")
    pairs = {(r.a, r.b) for r in dedup.near_duplicate_candidates(items, "image_id", n_blocks, key_blocks, 64).collect()}
    assert truth <= pairs
    assert len(pairs) < 2 * len(truth)                    # random 64-bit hashes rarely share a ~32-bit key


def test_a_huge_bucket_costs_window_pairs_per_row_and_stays_connected(spark):
    n, window = 80, 8
    items = spark.createDataFrame([(f"i{i:04d}", 12345, 12345, 1) for i in range(n)],
                                  "image_id string, phash bigint, phash_core bigint, area bigint")
    pairs = dedup.near_duplicate_candidates(items, "image_id", 6, 3, window)
    assert pairs.count() <= n * window
    groups, counters = dedup.near_duplicate_groups(items, "image_id", 6, 6, 3, window)
    assert groups.select("representative").distinct().count() == 1 and groups.count() == n


# ------------------------------------------------------------- a small lake of real images

def _drawn(seed: int, size=(240, 180)) -> Image.Image:
    rng = random.Random(seed)
    w, h = size
    im = Image.new("RGB", size, tuple(rng.randint(0, 255) for _ in range(3)))
    draw = ImageDraw.Draw(im)
    for _ in range(8):
        x0, y0 = rng.randint(0, w), rng.randint(0, h)
        box = [x0, y0, x0 + rng.randint(20, w // 2), y0 + rng.randint(20, h // 2)]
        colour = tuple(rng.randint(0, 255) for _ in range(3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    return im


def _encode(im: Image.Image, fmt="PNG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _variants(im: Image.Image) -> dict[str, bytes]:
    w, h = im.size
    mark = im.copy()
    ImageDraw.Draw(mark).rectangle([w - 30, h - 14, w - 4, h - 4], fill=(255, 255, 255))
    return {
        "resized": _encode(im.resize((w // 2 + 60, h // 2 + 45))),
        "jpeg": _encode(im, "JPEG", quality=15),
        "cropped": _encode(im.crop((3, 2, w - 3, h - 2))),
        "watermark": _encode(mark),
    }


def _image_lake(spark, root, groups=6, overrides=()):
    import datetime as dt
    import hashlib

    from realsyn_spark.tables import DOCUMENTS, IMAGE_BLOBS, IMAGES, Lake

    cfg = load_config(overrides=[f"lake.root={root}", "spark.shuffle_partitions=4", *overrides])
    lake = Lake(spark, cfg.lake)
    now = dt.datetime(2024, 1, 1)
    blobs, images, truth = [], [], {}
    for g in range(groups):
        base = _drawn(100 + g)
        copies = {"original": _encode(base), **_variants(base)}
        if g == 0:
            copies["exact"] = copies["jpeg"]                 # an exact copy of a near-duplicate
        for k, data in copies.items():
            url = f"http://img.example/{g}/{k}.png"
            with Image.open(io.BytesIO(data)) as img:
                w, h = img.size
            blobs.append((url, "ok", data, hashlib.sha256(data).hexdigest(), w, h, "PNG", "test", None, "r0", now))
            image_id = f"img-{g}-{k}"
            images.append((image_id, f"doc-{g}-{k}", 0, url, None, None, None, None, None, None, "r0", None, None))
            truth[image_id] = g
    lake.append(IMAGE_BLOBS, spark.createDataFrame(blobs, IMAGE_BLOBS.schema))
    lake.append(IMAGES, spark.createDataFrame(images, IMAGES.schema))
    docs = [(f"doc-{g}-{k}", "file:///x", "html", None, f"http://page.example/{g}/{k}", None, [], None, "r0", now)
            for g in range(groups) for k in ("original", "resized", "jpeg", "cropped", "watermark", "exact")]
    lake.append(DOCUMENTS, spark.createDataFrame(docs, DOCUMENTS.schema))
    from realsyn_spark.pipeline import SPECS

    for table in SPECS["extract"].writes:   # what the runner does before extract runs (its own earlier output)
        lake.ensure(table)
    return cfg, lake, truth


@pytest.fixture(scope="module")
def image_lake(spark, tmp_path_factory):
    from realsyn_spark.stages import extract

    root = tmp_path_factory.mktemp("imglake")
    cfg, lake, truth = _image_lake(spark, root)
    from realsyn_spark.tables import IMAGES

    from realsyn_spark.stages.dedup import write_decisions
    from realsyn_spark.tables import SEMANTIC_DUPLICATES

    decided = extract.decide_images(spark, lake, cfg, "r1")
    lake.update_columns(IMAGES, decided)
    write_decisions(lake, "image", spark.createDataFrame([], SEMANTIC_DUPLICATES.schema))   # as dedup composes
    return cfg, lake, truth


def test_near_duplicates_grouped_with_one_kept_per_group(spark, image_lake):
    from realsyn_spark.tables import IMAGES

    _, lake, truth = image_lake
    rows = {r.image_id: r for r in lake.read(IMAGES).collect()}
    for g in set(truth.values()):
        members = [i for i, t in truth.items() if t == g]
        kept = [i for i in members if rows[i].filter_reason is None]
        assert len(kept) == 1, (g, {i: rows[i].filter_reason for i in members})
        assert kept[0] in (f"img-{g}-original", f"img-{g}-jpeg", f"img-{g}-watermark", f"img-{g}-exact")  # largest
        for i in members:
            if i != kept[0]:
                assert rows[i].filter_duplicate_of == kept[0]          # chains resolved to the kept image
                assert rows[i].filter_reason in ("near_duplicate", "exact_duplicate")
    assert rows["img-0-exact"].filter_reason == "exact_duplicate" or rows["img-0-jpeg"].filter_reason == "exact_duplicate"
    # no semantic groups: the final decision dedup composes is the filters' decision
    assert all((r.drop_reason, r.duplicate_of) == (r.filter_reason, r.filter_duplicate_of) for r in rows.values())


def test_rerun_of_the_image_decisions_changes_nothing(spark, image_lake):
    from realsyn_spark.stages import extract
    from realsyn_spark.tables import IMAGES

    cfg, lake, _ = image_lake
    before = {(r.image_id, r.filter_reason, r.filter_duplicate_of) for r in lake.read(IMAGES).collect()}
    again = {(r.image_id, r.filter_reason, r.filter_duplicate_of)
             for r in extract.decide_images(spark, lake, cfg, "r2").collect()}
    assert again == before


def test_extract_and_dedup_each_write_only_their_own_decision_columns(spark, tmp_path):
    """drop_reason / duplicate_of have one writer (dedup composes them), filter_reason / filter_duplicate_of
    another (extract): a stricter rule changes extract's columns and leaves the final decision alone until
    dedup composes it again; dedup (semantic dedup skipped: random weights) changes only the final one."""
    from realsyn_spark.pipeline import run_stage
    from realsyn_spark.runlog import record_embedding_model
    from realsyn_spark.tables import IMAGES
    from tests.stage_inputs import ensure_inputs

    no_ppl = "sentence_filter.perplexity_on_missing_model=skip"    # no sentences here; no GPT-2 weights offline
    cfg, lake, truth = _image_lake(spark, tmp_path, groups=2, overrides=[no_ppl])
    record_embedding_model(lake, "tiny-clip:random-seed0", cfg.embed, True, "r0")
    ensure_inputs(lake, "dedup")

    def decisions():
        return {r.image_id: (r.filter_reason, r.filter_duplicate_of, r.drop_reason, r.duplicate_of)
                for r in lake.read(IMAGES).collect()}

    run_stage(spark, cfg, "extract", "r1")
    after_extract = decisions()
    assert all(d[2:] == (None, None) for d in after_extract.values())          # undecided until dedup
    assert sum(d[0] is None for d in after_extract.values()) == 2                # one kept per group
    run_stage(spark, cfg, "dedup", "r2")
    composed = decisions()
    assert all(d[:2] == after_extract[i][:2] and d[2:] == d[:2] for i, d in composed.items())

    strict = load_config(overrides=[f"lake.root={tmp_path}", "spark.shuffle_partitions=4", no_ppl,
                                    "image_filter.min_side=100000"])
    run_stage(spark, strict, "extract", "r3")
    restricted = decisions()
    assert {d[0] for d in restricted.values()} == {"min_side"}
    assert {i: d[2:] for i, d in restricted.items()} == {i: d[2:] for i, d in composed.items()}
    run_stage(spark, strict, "dedup", "r4")
    assert {d[2:] for d in decisions().values()} == {("min_side", None)}


def test_kept_image_lists_every_source_document_and_url(spark, image_lake):
    _, lake, truth = image_lake
    sources = {r.image_id: r for r in dedup.image_sources(lake).collect()}
    assert len(sources) == len(set(truth.values()))
    for image_id, row in sources.items():
        g = truth[image_id]
        members = sorted(i for i, t in truth.items() if t == g)
        assert row.n_sources == len(members)
        assert sorted(s.source_id for s in row.sources) == members
        assert row.doc_ids == sorted(f"doc-{i[4:]}" for i in members)
        assert all(s.doc_url.startswith("http://page.example/") for s in row.sources)
        assert len(row.image_urls) == len(members)


# --------------------------------------------------------- semantic dedup stage (planted vectors)

def test_semantic_dedup_stage_on_planted_vectors(spark, tmp_path, monkeypatch):
    from realsyn_spark.pipeline import run_stage
    from realsyn_spark.runlog import record_embedding_model
    from realsyn_spark.stages import embed
    from realsyn_spark.tables import IMAGE_EMBEDDINGS, IMAGES, SEMANTIC_DUPLICATES, SENTENCE_EMBEDDINGS, SENTENCES, Lake
    from tests.conftest import tiny_overrides

    cfg = load_config(overrides=tiny_overrides(tmp_path) + [
        "dedup.on_random_weights=run", "dedup.items_per_cluster=10", "dedup.image_threshold=0.95",
        "dedup.text_threshold=0.95"])
    lake = Lake(spark, cfg.lake)
    # The vectors are under the id embed recorded, not the configured model's: the stage must read the
    # record (issue 9) and never ask the hub what the id would be.
    model_id = "planted-clip:test"
    record_embedding_model(lake, model_id, cfg.embed, False, "r0")
    monkeypatch.setattr(embed, "resolve_embed_config", lambda *_: pytest.fail("dedup probed for the model id"))
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(8, 32))
    vectors, ids = [], []
    for g, centre in enumerate(centres):
        for k in range(3 if g < 4 else 1):             # 4 groups of 3 near-identical vectors, 4 singletons
            v = centre + (0.03 * rng.normal(size=32) if k else 0)
            vectors.append((v / np.linalg.norm(v)).astype(np.float32).tolist())
            ids.append(f"x{g}-{k}")
    lake.append(IMAGES, spark.createDataFrame(
        [(i, "d", 0, f"u/{i}", None, None, 200, 200, None, None, "r0", None, None) for i in ids], IMAGES.schema))
    lake.append(IMAGE_EMBEDDINGS, spark.createDataFrame([(i, model_id, v, "r0") for i, v in zip(ids, vectors)],
                                                        IMAGE_EMBEDDINGS.schema))
    lake.append(SENTENCES, spark.createDataFrame(
        [(i, "d", 0, 0, f"text {i}", 2, None, None, "r0", None, None) for i in ids], SENTENCES.schema))
    lake.append(SENTENCE_EMBEDDINGS, spark.createDataFrame([(i, model_id, v, "r0") for i, v in zip(ids, vectors)],
                                                           SENTENCE_EMBEDDINGS.schema))
    stage = run_stage(spark, cfg, "dedup", "r1")
    assert stage.counters["images:semantic_duplicate"] == 8 and stage.counters["sentences:semantic_duplicate"] == 8
    for spec, id_col in ((IMAGES, "image_id"), (SENTENCES, "sentence_id")):
        rows = {r[id_col]: r for r in lake.read(spec).collect()}
        for g in range(4):
            members = [f"x{g}-{k}" for k in range(3)]
            kept = [m for m in members if rows[m].drop_reason is None]
            assert len(kept) == 1
            assert all(rows[m].duplicate_of == kept[0] for m in members if m != kept[0])
    version = lambda: spark.sql(f"DESCRIBE HISTORY delta.`{lake.location(IMAGES)}`").count()  # noqa: E731
    before = version()
    run_stage(spark, cfg, "dedup", "r2")                             # rerun: same decisions, nothing rewritten
    assert lake.read(SEMANTIC_DUPLICATES).count() == 16
    # The stored decision is the composition of the filters' (all kept here) and the stored groups.
    from realsyn_spark.decisions import compose

    decided = {tuple(r) for r in compose(lake.read(IMAGES), lake.read(SEMANTIC_DUPLICATES).where("kind = 'image'"),
                                         "image", "image_id").collect()}
    assert decided == {(r.image_id, r.drop_reason, r.duplicate_of) for r in lake.read(IMAGES).collect()}
    rerun_commits = lake.history(IMAGES).where(F.col("version") >= before).collect()   # versions count from 0
    assert all(int(c.operationMetrics.get("numTargetRowsUpdated", "0")) == 0
               and int(c.operationMetrics.get("numTargetRowsInserted", "0")) == 0 for c in rerun_commits)
    # dedup never writes the filters' columns
    assert all(r.filter_reason is None and r.filter_duplicate_of is None for r in lake.read(IMAGES).collect())
