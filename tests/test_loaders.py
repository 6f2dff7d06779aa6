"""Trainer loaders of the export: a tiny open_clip model TRAINS on the WebDataset shards through
open_clip's own loader (loss decreases), and the plain-torch Parquet reader (realsyn_spark/loaders.py)
splits rows exactly once over ranks and workers, decodes like the pipeline, and trains the same way."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch

from tests.export_lake import CLUSTER_SIZES

TINY = str(resources.files("realsyn_spark").joinpath("resources/tiny-clip.json"))


def _tiny_clip():
    import open_clip

    open_clip.add_model_config(TINY)
    torch.manual_seed(0)
    model, preprocess, _ = open_clip.create_model_and_transforms("tiny-clip", pretrained=None)
    return model, preprocess, open_clip.get_tokenizer("tiny-clip")


def _train(model, batches_per_epoch, epochs: int):
    """AdamW steps over the loader; returns the loss of the first and last epoch's batches (means)."""
    import open_clip

    loss_fn, opt = open_clip.ClipLoss(), torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    model.train()
    per_epoch = []
    for epoch in range(epochs):
        losses = []
        for images, texts in batches_per_epoch(epoch):
            out = model(images, texts)
            if isinstance(out, dict):
                out = (out["image_features"], out["text_features"], out["logit_scale"])
            loss = loss_fn(*out[:3])   # (image features, text features, exp(logit_scale))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss))
        per_epoch.append(sum(losses) / len(losses))
    return per_epoch


def test_tiny_open_clip_trains_on_the_exported_webdataset_shards(exported_lake):
    """open_clip's WebDataset pipeline (get_wds_dataset's stages: decode pilrgb, rename jpg;png;.. ->
    image, txt -> text, preprocess, tokenizer, batch) over the shards the export stage wrote with Spark
    (export.run on export_lake, mapInPandas + the staging rename). Shards are read with
    webdataset's own tarfile_to_samples: open_clip_train's training-path reader
    (tarfile_to_samples_nothrow) raises KeyError 'fname' with webdataset 1.0.2."""
    import webdataset as wds
    from open_clip_train.data import get_dataset_size

    cfg, *_ = exported_lake
    folder = Path(cfg.lake.root) / "export" / "webdataset"
    shards = sorted(folder.glob("*.tar"))
    urls = f"{folder}/{{00000..{len(shards) - 1:05d}}}.tar"
    assert [p.name for p in shards] == [f"{i:05d}.tar" for i in range(len(shards))] and len(shards) > 1
    assert get_dataset_size(urls) == (sum(CLUSTER_SIZES), len(shards))   # every kept image, from sizes.json
    model, preprocess, tokenizer = _tiny_clip()
    pipeline = wds.DataPipeline(
        wds.SimpleShardList(urls), wds.shuffle(8, seed=0), wds.tarfile_to_samples(), wds.shuffle(100, seed=0),
        wds.decode("pilrgb"), wds.rename(image="jpg;png;jpeg;webp", text="txt"),
        wds.map_dict(image=preprocess, text=lambda text: tokenizer(text)[0]), wds.to_tuple("image", "text"),
        wds.batched(16, partial=False))

    losses = _train(model, lambda epoch: pipeline, epochs=10)
    assert losses[-1] < losses[0] - 0.25, losses


def test_parquet_reader_reads_the_export_once_over_ranks_and_workers(exported_lake):
    from torch.utils.data import DataLoader

    from realsyn_spark.loaders import ParquetImageText
    from realsyn_spark.tables import DATASET

    cfg, lake, *_ = exported_lake
    folder = f"{cfg.lake.root}/export/parquet"
    expected = {r.image_id: r for r in lake.read(DATASET).select("image_id", "text1").collect()}
    seen = []
    for rank in (0, 1):
        reader = ParquetImageText(folder, rank=rank, world_size=2, extra_columns=["image_id"],
                                  transform=lambda im: torch.tensor(im.size))
        loader = DataLoader(reader, batch_size=None, num_workers=2)
        rows = [(meta["image_id"], text, tuple(size.tolist())) for size, text, meta in loader]
        seen += rows
    assert sorted(r[0] for r in seen) == sorted(expected)            # exactly once, all ranks and workers
    assert all(text == expected[i].text1 and size == (120, 110) for i, text, size in seen)
    again = [m["image_id"] for _, _, m in ParquetImageText(folder, rank=0, world_size=1, extra_columns=["image_id"])]
    other = ParquetImageText(folder, rank=0, world_size=1, extra_columns=["image_id"])
    other.set_epoch(1)
    assert sorted(again) == sorted(expected) and [m["image_id"] for _, _, m in other] != again   # reshuffled


def test_parquet_reader_decodes_with_the_pipeline_helper_and_skips_bad_bytes(tmp_path):
    import io

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from realsyn_spark.loaders import ParquetImageText
    from udfs.pixels import decode_rgb

    rgba = np.zeros((30, 40, 4), np.uint8)
    rgba[:, 20:] = (200, 10, 10, 255)
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, "PNG")
    table = pa.table({"image_id": ["a", "b", "c"], "image_bytes": [buffer.getvalue(), b"not an image", None],
                      "text1": ["t a", "t b", "t c"], "text2": [None] * 3, "text3": [None] * 3,
                      "syn_text": ["s a", "s b", "s c"]})
    pq.write_table(table, tmp_path / "part-0.parquet")
    reader = ParquetImageText(str(tmp_path), text="random", shuffle=False, rank=0, world_size=1)
    samples = list(reader)
    assert len(samples) == 1 and reader.undecodable == 2
    image, text = samples[0]
    assert np.array_equal(np.asarray(image), np.asarray(decode_rgb(buffer.getvalue()))) and text in ("t a", "s a")


def test_tiny_open_clip_trains_on_the_parquet_reader(exported_lake):
    from torch.utils.data import DataLoader

    from realsyn_spark.loaders import ParquetImageText

    cfg, *_ = exported_lake
    model, preprocess, tokenizer = _tiny_clip()
    reader = ParquetImageText(f"{cfg.lake.root}/export/parquet", text="random", transform=preprocess,
                              tokenizer=tokenizer, rank=0, world_size=1)

    def batches(epoch):
        reader.set_epoch(epoch)
        return DataLoader(reader, batch_size=16, num_workers=0, drop_last=True)

    losses = _train(model, batches, epochs=10)
    assert losses[-1] < losses[0] - 0.25, losses


def test_row_groups_are_split_over_ranks_and_workers_exactly_once(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from torch.utils.data import DataLoader

    from realsyn_spark.loaders import ParquetImageText
    from tests.export_lake import _png

    ids = [f"i{n:03d}" for n in range(48)]
    for f in range(4):   # 4 files x 3 row groups of 4 rows
        part = ids[f * 12:(f + 1) * 12]
        table = pa.table({"image_id": part, "image_bytes": [_png((9, 9, 9), n) for n in range(len(part))],
                          "text1": part})
        pq.write_table(table, tmp_path / f"part-{f}.parquet", row_group_size=4)
    shares = []
    for rank in (0, 1):
        reader = ParquetImageText(str(tmp_path), rank=rank, world_size=2, transform=lambda im: 0)
        assert len(reader.pieces()) == 12
        shares.append([text for _, text in DataLoader(reader, batch_size=None, num_workers=2)])
    assert sorted(shares[0] + shares[1]) == ids and len(shares[0]) == len(shares[1]) == 24
