"""CLIP embedding UDF pieces with the tiny random-weight model: cache, normalisation, model id, float16
storage, prefetching, and the Spark path end to end."""
import io
import os

import numpy as np
import pandas as pd
import pytest

from realsyn_spark.config import EmbedConfig
from tests.conftest import TINY_CLIP
from udfs import clip_embed
from udfs.retrieval import arrow_vectors, binary_vectors

# The typed section as the embed stage ships it to executors (no dicts, no second set of defaults).
CFG = EmbedConfig(model="tiny-clip", pretrained=None, checkpoint_path=None, model_config_path=TINY_CLIP,
                  allow_random_weights=True, device="cpu", batch_size=4, torch_threads=1,
                  precision="auto", prefetch_batches=2, storage_dtype="float32")


def _images(n=11, seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = Image.fromarray(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)).resize((160 + 8 * i, 120), Image.BILINEAR)
        buf = io.BytesIO()
        img.save(buf, "PNG" if i % 4 == 3 else "JPEG", quality=90)
        out.append(buf.getvalue())
    out.insert(5, b"not an image at all")
    return out


def test_model_cached_per_process_and_config():
    a = clip_embed.load_clip(CFG)
    assert clip_embed.load_clip(CFG.model_copy()) is a
    assert clip_embed.load_clip(CFG.model_copy(update={"batch_size": 99, "prefetch_batches": 0})) is a  # not model settings
    assert a.model_id == "tiny-clip:random-seed0" and a.random_weights and a.dim == 64


def test_model_id_names_weights():
    assert clip_embed.model_id_for(EmbedConfig(model="ViT-B-32", pretrained="openai"), False) == "ViT-B-32:openai"
    assert clip_embed.model_id_for(EmbedConfig(model="ViT-B-32", checkpoint_path="/ck/epoch_5.pt"), False) == \
        "ViT-B-32:file:epoch_5.pt"
    assert clip_embed.model_id_for(EmbedConfig(model="ViT-B-32", pretrained="openai"), True) == "ViT-B-32:random-seed0"


def test_local_checkpoint_loads_and_is_named(tmp_path):
    import torch

    reference = clip_embed.load_clip(CFG)
    path = tmp_path / "tiny-epoch3.pt"
    torch.save(reference.model.state_dict(), path)
    cfg = CFG.model_copy(update={"checkpoint_path": str(path), "allow_random_weights": False})
    bundle = clip_embed.load_clip(cfg)
    assert bundle is not reference and not bundle.random_weights
    assert bundle.model_id == "tiny-clip:file:tiny-epoch3.pt"
    images = _images(6)
    np.testing.assert_allclose(bundle.embed_images(images, 4)[1], reference.embed_images(images, 4)[1], atol=1e-6)


def test_vectors_are_unit_norm_and_bad_images_skipped():
    bundle = clip_embed.load_clip(CFG)
    images = _images()
    kept, vectors = bundle.embed_images(images, 4)
    assert kept == [i for i in range(len(images)) if i != 5]
    assert vectors.shape == (len(images) - 1, 64) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    texts = bundle.embed_texts(["a dog on a bench", "two cats", "a red car parked outside"], 2)
    assert texts.shape == (3, 64) and np.allclose(np.linalg.norm(texts, axis=1), 1, atol=1e-5)


def test_prefetch_path_equals_sequential_path():
    bundle = clip_embed.load_clip(CFG)
    images = _images()
    kept0, seq = bundle.embed_images(images, 4, prefetch=0)
    for depth in (1, 3):
        kept, pre = bundle.embed_images(images, 4, prefetch=depth)
        assert kept == kept0
        np.testing.assert_array_equal(pre, seq)


def test_prefetched_propagates_errors_and_stops_early():
    def failing():
        yield 1
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        list(clip_embed.prefetched(failing(), 2))
    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    it = clip_embed.prefetched(endless(), 2)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    it.close()  # joins the producer
    assert len(produced) <= 3 + 2 + 2
    assert list(clip_embed.prefetched(iter(range(5)), 0)) == list(range(5))


def test_float16_storage_is_exact_half_and_travels_as_half():
    bundle = clip_embed.load_clip(CFG)
    _, vectors = bundle.embed_images(_images(), 4)
    half = clip_embed.to_storage(vectors, "float16")
    assert half.dtype == np.float32
    np.testing.assert_array_equal(half.astype(np.float16).astype(np.float32), half)
    assert np.abs(half - vectors).max() < 1e-3
    assert np.allclose(np.linalg.norm(half, axis=1), 1, atol=2e-3)
    assert clip_embed.to_storage(vectors, "float32") is vectors
    # retrieval's shuffle carries exactly-half vectors as 2 bytes per value, losslessly
    packed = binary_vectors(half)
    assert len(packed[0].as_py()) == 2 * 64
    np.testing.assert_array_equal(arrow_vectors(packed, 64), half)
    packed32 = binary_vectors(vectors)
    assert len(packed32[0].as_py()) == 4 * 64
    np.testing.assert_array_equal(arrow_vectors(packed32, 64), vectors)


def test_autocast_choice():
    import torch

    assert clip_embed.autocast_dtype("cuda", "auto") is torch.float16
    assert clip_embed.autocast_dtype("cuda:1", "bf16") is torch.bfloat16
    assert clip_embed.autocast_dtype("cpu", "auto") is None
    assert clip_embed.autocast_dtype("cpu", "fp16") is None
    assert clip_embed.autocast_dtype("cuda", "fp32") is None


def test_spark_udf_matches_direct_embedding_and_reuses_model(spark):
    images = _images(23, seed=1)
    frame = pd.DataFrame({"image_id": [f"img{i:03d}" for i in range(len(images))], "image_bytes": images})
    df = spark.createDataFrame(frame, "image_id string, image_bytes binary").repartition(3)
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "5")
    try:
        for storage in ("float32", "float16"):
            cfg = CFG.model_copy(update={"storage_dtype": storage})
            got = (df.mapInPandas(clip_embed.image_embedder(cfg), "image_id string, model_id string, embedding array<float>")
                   .toPandas().sort_values("image_id"))
            bundle = clip_embed.load_clip(cfg)
            kept, expected = bundle.embed_images(images, 4)
            assert got.image_id.tolist() == [f"img{i:03d}" for i in kept]
            assert set(got.model_id) == {"tiny-clip:random-seed0"}
            # batches are formed differently across partitions: equal up to float rounding
            np.testing.assert_allclose(np.stack(got.embedding.to_numpy()), clip_embed.to_storage(expected, storage),
                                       atol=2e-3 if storage == "float16" else 1e-5)

        def who(batches):
            for b in batches:
                bundle = clip_embed.load_clip(CFG)
                yield pd.DataFrame({"pid": [os.getpid()] * len(b), "model": [id(bundle)] * len(b)})

        seen = spark.range(0, 40, numPartitions=8).mapInPandas(who, "pid long, model long").toPandas()
        assert (seen.groupby("pid").model.nunique() == 1).all()
    finally:
        spark.conf.unset("spark.sql.execution.arrow.maxRecordsPerBatch")


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_paths_match_cpu():
    cpu = clip_embed.load_clip(CFG)
    images = _images(37, seed=2)
    kept, reference = cpu.embed_images(images, 8)
    fp32 = clip_embed.load_clip(CFG.model_copy(update={"device": "cuda", "precision": "fp32"}))
    assert fp32.device == "cuda" and fp32 is not cpu
    np.testing.assert_allclose(fp32.embed_images(images, 8)[1], reference, atol=1e-4)
    for precision in ("auto", "bf16"):  # auto = fp16 autocast on CUDA
        bundle = clip_embed.load_clip(CFG.model_copy(update={"device": "cuda", "precision": precision}))
        kept0, seq = bundle.embed_images(images, 8, prefetch=0)
        kept2, pre = bundle.embed_images(images, 8, prefetch=2)   # pinned batches + background decode
        assert kept0 == kept2 == kept
        np.testing.assert_array_equal(pre, seq)
        np.testing.assert_allclose(seq, reference, atol=3e-2)
        assert np.allclose(np.linalg.norm(seq, axis=1), 1, atol=1e-4)


# -- tensor decode path (embed.decode: gpu), tested on CPU against the PIL/open_clip reference ---------

from udfs.pixels import apply_orientation, jpeg_header
from udfs.tensor_pixels import TensorDecoder, orient_tensor

# Stated tolerance of the tensor path vs open_clip's PIL path (tiny CLIP, random weights): per-image
# cosine of the two embeddings. The pixels differ by libjpeg DCT scaling (PIL drafts large JPEGs) and
# resize rounding only.
MIN_COSINE = 0.99
_INVERSE = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 8, 7: 7, 8: 6}


def _photo(width, height, seed):
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
    detail = Image.fromarray(rng.integers(0, 60, (height, width, 3), dtype=np.uint8))
    return Image.blend(base, detail, 0.2).filter(ImageFilter.SMOOTH)


def _encode(img, fmt, **params):
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def _rotated(img, orientation):
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = orientation
    return _encode(apply_orientation(img, _INVERSE[orientation]), "JPEG", quality=92, exif=exif.tobytes())


def _mixed_corpus():
    """Real-sized photos in what nvJPEG takes and what it does not, plus one broken JPEG."""
    images = [_encode(_photo(520 + 60 * i, 500 + 40 * (i % 3), i), "JPEG", quality=88) for i in range(5)]
    images.append(_encode(_photo(640, 480, 10), "JPEG", quality=85, progressive=True))
    images.append(_encode(_photo(600, 500, 11).convert("L"), "JPEG"))
    images.append(_encode(_photo(700, 520, 12).convert("CMYK"), "JPEG", quality=92))
    images.append(_encode(_photo(530, 610, 13), "PNG"))
    images.append(_encode(_photo(500, 540, 14), "WEBP", quality=90))
    images.append(_rotated(_photo(900, 560, 15), 6))
    images.append(_rotated(_photo(560, 900, 16), 3))
    images.append(_encode(_photo(1900, 1300, 17), "JPEG", quality=85))   # drafted by PIL, full decode in torch
    broken = _encode(_photo(600, 500, 18), "JPEG")
    images.append(broken[:len(broken) // 2])                               # valid header, scan data cut short
    return images


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orient_tensor_equals_pil_transpose(orientation):
    import torch
    from PIL import Image

    array = np.random.default_rng(orientation).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    expected = np.asarray(apply_orientation(Image.fromarray(array), orientation))
    got = orient_tensor(torch.from_numpy(array).permute(2, 0, 1), orientation).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(got, expected)


def test_tensor_path_decodes_every_orientation_upright():
    bundle = clip_embed.load_clip(CFG)
    upright = _photo(96, 64, 1)
    decoder = TensorDecoder(bundle.tensor_spec, "cpu", 1)
    try:
        ref_keys, reference = decoder.batch([(0, _encode(upright, "JPEG", quality=92))])
        keys, pixels = decoder.batch([(o, _rotated(upright, o)) for o in range(1, 9)])
    finally:
        decoder.close()
    assert keys == list(range(1, 9)) and decoder.routed["tensor"] == 9
    assert all(jpeg_header(_rotated(upright, o)).orientation == o for o in range(1, 9))
    diff = (pixels - reference).abs().mean(dim=(1, 2, 3))
    assert float(diff.max()) < 0.05, diff   # normalised units; a sideways image differs by ~1


def test_tensor_path_matches_pil_path_within_tolerance_and_routes_formats():
    bundle = clip_embed.load_clip(CFG)
    images = _mixed_corpus()
    kept_cpu, cpu = bundle.embed_images(images, 4, decode="cpu")
    kept_gpu, tensor = bundle.embed_images(images, 4, prefetch=2, decode="gpu", decode_threads=2)
    assert kept_cpu == kept_gpu == list(range(len(images) - 1))   # the broken JPEG is skipped on both
    cosine = (cpu * tensor).sum(axis=1)
    assert cosine.min() >= MIN_COSINE, cosine
    # and the pixels themselves agree (normalised units)
    decoder = TensorDecoder(bundle.tensor_spec, "cpu", 2)
    try:
        keys, pixels = decoder.batch(list(enumerate(images)))
    finally:
        decoder.close()
    reference = clip_embed.decoded_batches(enumerate(images), bundle.preprocess, len(images))
    ref_keys, ref_pixels = next(reference)
    assert keys == ref_keys
    assert float((pixels - ref_pixels).abs().mean()) < 0.03
    # baseline/progressive/grey JPEGs on the batched decoder; CMYK, PNG, WebP on PIL; the cut JPEG falls
    # back to PIL and fails there too
    assert decoder.routed == {"tensor": 10, "pil": 3, "fallback": 1, "failed": 1}


def test_decode_setting_resolves_per_device():
    bundle = clip_embed.load_clip(CFG)
    assert bundle.decode_path("auto") == "cpu" and bundle.decode_path("gpu") == "gpu"
    assert bundle.decode_path("cpu") == "cpu"


def test_udf_body_with_tensor_decode_matches_reference():
    images = _mixed_corpus()[:8]
    frames = [pd.DataFrame({"image_id": [f"i{k}" for k in range(lo, lo + 4)], "image_bytes": images[lo:lo + 4]})
              for lo in (0, 4)]
    out = pd.concat(list(clip_embed.image_embedder(CFG.model_copy(update={"decode": "gpu", "decode_threads": 2}))(iter(frames))))
    _, reference = clip_embed.load_clip(CFG).embed_images(images, 4, decode="cpu")
    assert out.image_id.tolist() == [f"i{k}" for k in range(8)]
    assert (np.stack(out.embedding.to_numpy()) * reference).sum(axis=1).min() >= MIN_COSINE


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_decode_matches_cpu_reference():
    images = _mixed_corpus()
    _, reference = clip_embed.load_clip(CFG).embed_images(images, 8, decode="cpu")
    gpu = clip_embed.load_clip(CFG.model_copy(update={"device": "cuda", "precision": "fp32"}))
    assert gpu.decode_path("auto") == "gpu"
    for prefetch in (0, 2):
        kept, vectors = gpu.embed_images(images, 8, prefetch=prefetch, decode="auto", decode_threads=2)
        # nvJPEG may decode the cut JPEG's first half where libjpeg refuses it: compare the rest
        good = len(images) - 1
        assert kept[:good] == list(range(good))
        assert (vectors[:good] * reference).sum(axis=1).min() >= MIN_COSINE
