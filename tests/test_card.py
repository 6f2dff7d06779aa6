"""The dataset card the export writes (realsyn_spark/card.py): every figure as a PNG referenced by the
Markdown, example thumbnails, and the `dataset_card` table's rows checked against direct computations."""
from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
from PIL import Image

from realsyn_spark.card import PAPER_SCALES
from realsyn_spark.tables import DATASET, DATASET_CARD
from tests.export_lake import BAND_DROPPED, CLUSTER_SIZES
from udfs.tokens import token_counts

FIGURES = ("counts_per_scale", "texts_per_image", "tokens_per_text", "token_length_hist", "cosine_hist",
           "cluster_sizes", "funnel")


def _rows(lake, figure):
    return {(r.series, r.key): r for r in lake.read(DATASET_CARD).where(f"figure = '{figure}'").collect()}


def test_card_renders_every_figure_and_the_markdown_references_them(exported_lake):
    cfg, lake, _, stage = exported_lake
    folder = Path(cfg.lake.root) / "export" / "card"
    readme = (folder / "README.md").read_text()
    assert stage.counters["card_figures"] == len(FIGURES)
    for name in FIGURES:
        assert f"]({name}.png)" in readme, name
        with Image.open(io.BytesIO((folder / f"{name}.png").read_bytes())) as image:
            assert image.format == "PNG" and image.size[0] > 300 and image.size[1] > 200, name
    thumbs = sorted((folder / "examples").glob("*.jpg"))
    assert len(thumbs) == cfg.export.card_examples
    for thumb in thumbs:
        assert f"](examples/{thumb.name})" in readme
        with Image.open(thumb) as image:
            assert max(image.size) <= 128
    assert "15,239,498" in readme and "| all texts |" in readme     # the paper's values beside ours
    assert set(re.findall(r"\]\(([^)]+)\)", readme)) == {f"{n}.png" for n in FIGURES} | {
        f"examples/{t.name}" for t in thumbs}


def test_card_table_counts_match_the_lake(exported_lake):
    cfg, lake, _, _ = exported_lake
    counts = _rows(lake, "counts_per_scale")
    band = sum(CLUSTER_SIZES)
    assert counts[("images", "all")].value == band
    assert counts[("images", "cap4")].value == sum(min(s, 4) for s in CLUSTER_SIZES)
    assert counts[("images", "cap20")].value == sum(min(s, 20) for s in CLUSTER_SIZES)
    assert counts[("images", "cap20")].paper_value == PAPER_SCALES[20][1]
    assert counts[("images", "0.03k")].value == 31                      # the exported target scale
    texts = _rows(lake, "texts_per_image")
    assert texts[("all", "4 texts")].value == band and texts[("all", "mean")].value == 4.0
    sizes = _rows(lake, "cluster_sizes")
    before = {int(k): int(r.value) for (s, k), r in sizes.items() if s == "before"}
    assert before == {s: CLUSTER_SIZES.count(s) for s in CLUSTER_SIZES}
    after = {int(k): int(r.value) for (s, k), r in sizes.items() if s == "cap4"}
    assert after == {1: 1, 2: 1, 3: 1, 4: 5}
    assert sizes[("summary", "clusters")].value == len(CLUSTER_SIZES) and sizes[("summary", "clusters")].paper_value == 1e6
    funnel = _rows(lake, "funnel")
    assert funnel and max(r.value for (m, _), r in funnel.items() if m == "images") == band + BAND_DROPPED + 1
    examples = lake.read(DATASET_CARD).where("figure = 'examples'").count()
    assert examples == cfg.export.card_examples


def test_token_and_cosine_figures_equal_a_direct_computation(exported_lake):
    _, lake, _, _ = exported_lake
    data = lake.read(DATASET).select("cluster_rank", "text1", "text2", "text3", "syn_text", "score1",
                                     "similarity").toPandas()
    tokens = _rows(lake, "tokens_per_text")
    for scale, cap in (("all", None), ("cap4", 4)):
        part = data if cap is None else data[data.cluster_rank <= cap]
        for kind in ("text1", "syn_text"):
            assert abs(tokens[(scale, kind)].value - np.mean(token_counts(part[kind]))) < 1e-9
        every = sum((token_counts(part[k]) for k in ("text1", "text2", "text3", "syn_text")), [])
        assert abs(tokens[(scale, "all texts")].value - np.mean(every)) < 1e-9
    assert tokens[("cap20", "all texts")].paper_value == 40.0
    lengths = _rows(lake, "token_length_hist")
    hist = {int(k): r.value for (s, k), r in lengths.items() if s == "text1"}
    expected = np.unique(token_counts(data.text1), return_counts=True)
    assert hist == dict(zip(expected[0].tolist(), expected[1].astype(float).tolist()))
    cosine = _rows(lake, "cosine_hist")
    for series, column in (("text1", "score1"), ("syn_text", "similarity")):
        bins = {r.x: r.value for (s, k), r in cosine.items() if s == series and r.x is not None and "band" not in k}
        assert sum(bins.values()) == len(data)
        left = min(x for x in bins if bins[x] > 0)
        assert left <= data[column].min() < left + 2.0 / 50 + 1e-6
    assert cosine[("syn_text", "band_min")].paper_value == 0.51
