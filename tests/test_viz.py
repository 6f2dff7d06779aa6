"""Rendering helpers (realsyn_spark.viz, no Spark) and the notebook queries (realsyn_spark.explore)."""
from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from PIL import Image

from realsyn_spark import explore, viz


def _jpeg(size=(40, 20), orientation: int | None = None, mode="RGB") -> bytes:
    img = Image.new(mode, size, "red" if mode == "RGB" else 0)
    out = io.BytesIO()
    if orientation:
        exif = Image.Exif()
        exif[0x0112] = orientation
        img.save(out, format="JPEG", exif=exif)
    else:
        img.save(out, format="JPEG")
    return out.getvalue()


def _png_palette_with_transparency() -> bytes:
    img = Image.new("P", (30, 30), 0)
    img.putpalette([255, 0, 0] * 256)
    out = io.BytesIO()
    img.save(out, format="PNG", transparency=0)
    return out.getvalue()


def _decode_uri(uri: str) -> Image.Image:
    head, data = uri.split(",", 1)
    return Image.open(io.BytesIO(base64.b64decode(data)))


@pytest.mark.parametrize("orientation, expected", [(None, (40, 20)), (1, (40, 20)), (3, (40, 20)),
                                                   (6, (20, 40)), (8, (20, 40))])
def test_decode_applies_exif_orientation(orientation, expected):
    assert viz.decode_image(_jpeg(orientation=orientation)).size == expected


def test_decode_converts_modes_and_rejects_garbage():
    # Transparent pixels composited on white, as the export and the embedding see them.
    transparent = viz.decode_image(_png_palette_with_transparency())
    assert transparent.mode == "RGB" and transparent.getpixel((5, 5)) == (255, 255, 255)
    assert viz.decode_image(_jpeg(mode="CMYK")).mode == "RGB"
    assert viz.decode_image(_jpeg(mode="L")).mode == "RGB"
    assert viz.decode_image(b"<html>not an image</html>") is None
    assert viz.decode_image(_jpeg()[:50]) is None        # truncated
    assert viz.decode_image(None) is None and viz.decode_image(b"") is None


def test_thumbnail_is_bounded_and_upright():
    uri = viz.thumbnail_data_uri(_jpeg((400, 100), orientation=6), side=64)
    assert uri.startswith("data:image/jpeg;base64,")
    assert _decode_uri(uri).size == (16, 64)             # rotated to portrait, longest side 64
    assert viz.thumbnail_data_uri(b"junk") is None


def _row(i, data=True, **extra):
    row = {"image_id": f"img{i}", "raw_image_url": f"http://x/{i}.jpg", "image_bytes": _jpeg() if data else None,
           "text1": f"first <b>{i}</b>", "score1": 0.61234, "text2": "second", "score2": 0.5, "text3": None,
           "score3": None, "syn_text": "a red square", "similarity": 0.55, "cluster_id": 7, "cluster_rank": 2,
           "scales": [20, 35]}
    row.update(extra)
    return row


def test_browser_html_has_one_image_per_decodable_row_and_escapes_text():
    html = viz.dataset_browser_html([_row(0), _row(1), _row(2, data=False)], side=100)
    assert len(re.findall(r'<img src="data:image/', html)) == 2
    assert html.count('class="rs-card"') == 3 and html.count("rs-noimg") == 1
    assert "&lt;b&gt;0&lt;/b&gt;" in html and "<b>0</b>" not in html
    assert "[0.612]" in html and "[0.550]" in html and "scales 20, 35" in html and "cluster 7" in html
    assert "second" in html and "None" not in html           # absent text3 is left out, not printed


def test_grids_and_tables():
    assert "(no rows)" in viz.image_grid_html([], title="empty")
    grid = viz.image_grid_html([_row(0), _row(1, data=False)], ["cluster_rank"], side=50)
    assert grid.count("<img ") == 1 and "<b>cluster_rank</b>: 2" in grid
    text = viz.text_examples_html({"emoji": ["fun 😀 <x>"], "url": []})
    assert "fun 😀 &lt;x&gt;" in text and "(none)" in text
    table = viz.table_html([{"a": 1, "b": "<i>"}], ["a", "b"], title="t")
    assert "<td" in table and "&lt;i&gt;" in table


def test_figures_render_to_png():
    fig = viz.size_rank_figure({"before": [50, 10, 3, 1], "cap 4": [4, 4, 3, 1]})
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log" and len(ax.lines) == 2
    assert list(ax.lines[1].get_ydata()) == [4, 4, 3, 1]
    for fig in (viz.size_histogram_figure([1, 2, 2, 30]), viz.bar_figure({"in band": 9, "cap 2": 4}, "t"),
                viz.projection_figure(np.zeros((3, 2)), [0, 1, 1], ["image", "sentence", "sentence"])):
        assert viz.figure_png(fig)[:8] == b"\x89PNG\r\n\x1a\n"
    assert viz.png_image(fig).data[:4] == b"\x89PNG"


def test_pca_finds_the_direction_of_variance():
    rng = np.random.default_rng(0)
    direction = rng.normal(size=8)
    x = np.outer(rng.normal(size=200), direction) * 10 + rng.normal(size=(200, 8)) * 0.01
    points, used = viz.project_2d(x, "pca")
    assert used == "pca" and points.shape == (200, 2)
    assert points[:, 0].var() > 1000 * points[:, 1].var()
    assert viz.project_2d(np.zeros((0, 4)))[1] == "none"
    try:
        import umap  # noqa: F401
    except ImportError:
        assert viz.project_2d(x, "umap")[1] == "pca"          # falls back and says so


# ---------------------------------------------------------------------------------------- explore

DATASET_DDL = ("image_id string, text1 string, score1 float, text2 string, syn_text string, similarity float, "
               "cluster_id int, scales array<int>")


@pytest.fixture(scope="module")
def small_dataset(spark):
    rows = [(f"img{i:02d}", f"Sentence {i} about a {'River' if i % 3 == 0 else 'hill'}", i / 20, "other",
             "syn", (i % 5) / 5, i % 4, [20] if i % 2 else [20, 35]) for i in range(20)]
    return spark.createDataFrame(rows, DATASET_DDL)


def test_filters(small_dataset):
    ids = lambda df: {r.image_id for r in df.collect()}  # noqa: E731
    assert ids(explore.filter_dataset(small_dataset, clusters=[1])) == {f"img{i:02d}" for i in range(1, 20, 4)}
    assert ids(explore.filter_dataset(small_dataset, scale=35)) == {f"img{i:02d}" for i in range(0, 20, 2)}
    assert ids(explore.filter_dataset(small_dataset, score_range=(0.5, 0.61))) == {"img10", "img11", "img12"}
    assert ids(explore.filter_dataset(small_dataset, search="river")) == {f"img{i:02d}" for i in range(0, 20, 3)}
    both = explore.filter_dataset(small_dataset, search="RIVER", similarity_range=(0.0, 0.0))
    assert ids(both) == {"img00", "img15"}


def test_sample_is_seeded_and_filtered(small_dataset):
    a = explore.browse(small_dataset, n=5, seed=1)
    assert [r["image_id"] for r in a] == [r["image_id"] for r in explore.browse(small_dataset, n=5, seed=1)]
    assert [r["image_id"] for r in a] != [r["image_id"] for r in explore.browse(small_dataset, n=5, seed=2)]
    assert len(a) == 5 and "syn_text" in a[0] and "image_bytes" not in a[0]   # absent columns are skipped
    assert all(r["cluster_id"] == 2 for r in explore.browse(small_dataset, n=10, clusters=[2]))


def test_read_table_never_creates_a_missing_table(spark, tmp_path, capsys):
    from realsyn_spark.config import load_config
    from realsyn_spark.tables import BALANCED, Lake

    lake = Lake(spark, load_config(overrides=[f"lake.root={tmp_path}/lake"]).lake)
    assert explore.read_table(lake, BALANCED) is None
    assert "`balanced`" in capsys.readouterr().out and not (tmp_path / "lake" / "balanced").exists()
    with pytest.raises(LookupError, match="balanced"):
        explore.read_table(lake, BALANCED, required=True)


def test_open_lake_finds_the_demo_lake_from_notebooks_folder(spark, tmp_path, monkeypatch):
    (tmp_path / "lake").mkdir()
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    cfg, session, lake = explore.open_lake(None, [], None, spark=spark)   # default root ./lake
    assert session is spark and lake.root == str(tmp_path / "lake")
    cfg, _, lake = explore.open_lake(None, ["retrieval.top_k=5"], "s3://bucket/lake", spark=spark)
    assert lake.root == "s3://bucket/lake" and cfg.retrieval.top_k == 5


def test_balance_sizes_per_cap(spark):
    rows = [(f"a{i}", None, 0, i + 1) for i in range(10)] + [(f"b{i}", None, 1, i + 1) for i in range(3)] + [
        ("c0", "similarity_below_min", None, None)]
    balanced = spark.createDataFrame(rows, "image_id string, drop_reason string, cluster_id int, cluster_rank int")
    series = explore.cluster_sizes_by_cap(balanced, [2, 5])
    assert sorted(series["before"]) == [3, 10] and sorted(series["cap 2"]) == [2, 2] and sorted(series["cap 5"]) == [3, 5]
    assert explore.images_per_scale(balanced, [2, 5]) == {"in band": 13, "cap 2": 4, "cap 5": 8}
    assert explore.largest_clusters(balanced, 1) == [(0, 10)]
    members = explore.cluster_members(balanced, None, 0, 20, max_rank=3)
    assert [m["cluster_rank"] for m in members] == [1, 2, 3]


def test_nearest_clusters_and_sentence_assignment(spark):
    centroids = np.eye(3, dtype=np.float32)
    order, scores = explore.nearest_clusters(np.array([[0.1, 0.9, 0.3]], np.float32), centroids, 2)
    assert order.tolist() == [[1, 2]] and scores[0, 0] == pytest.approx(0.9)
    vectors = spark.createDataFrame([("s0", [0.9, 0.1, 0.0]), ("s1", [0.0, 0.2, 0.8]), ("s2", [0.1, 0.7, 0.1])],
                                    "sentence_id string, embedding array<float>")
    got = {r.sentence_id: r.cluster_id for r in explore.sentence_clusters(vectors, centroids).collect()}
    assert got == {"s0": 0, "s1": 2, "s2": 1}
