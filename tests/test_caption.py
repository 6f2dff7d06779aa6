"""Captioner stage (issue 11, item 1): a tiny random VisionEncoderDecoder built here captions a small lake on
real Spark; model id and request hash stored; a rerun captions nothing; a changed setting or model captions
again; an undecodable image is counted with its reason; generate reads the captions, else the fallback."""
from __future__ import annotations

import datetime
import io

import numpy as np
import pytest
from PIL import Image
from pyspark.sql import functions as F

from realsyn_spark.config import CaptionConfig, load_config
from realsyn_spark.stages import caption as caption_stage
from realsyn_spark.pipeline import run_stage
from realsyn_spark.tables import CAPTIONS, IMAGE_BLOBS, IMAGES, RETRIEVALS, RUN_LOG, SENTENCES, SYNTHETIC_TEXTS, Lake
from tests.stage_inputs import ensure_inputs
from tests.tiny_captioner import WORDS, build_tiny_captioner
from udfs.caption import caption_batch, load_captioner, torch_dtype
from udfs.pixels import decode_rgb


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(build_tiny_captioner(tmp_path_factory.mktemp("captioner") / "tiny", seed=0))


@pytest.fixture(scope="module")
def tiny_other(tmp_path_factory):
    return str(build_tiny_captioner(tmp_path_factory.mktemp("captioner") / "other", seed=1))


def _image(seed: int, fmt: str = "PNG", size=(48, 64)) -> bytes:
    rng = np.random.default_rng(seed)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(out, fmt)
    return out.getvalue()


BYTES = {f"img{i}": _image(i, "PNG" if i % 2 else "JPEG") for i in range(5)}
BYTES["img5"] = BYTES["img0"]            # the same photo found on another page
BYTES["img6"] = b"GIF89a this is not an image"
ALTS = {"img0": "a market", "img2": "a boat", "img6": "a broken picture"}


def _sha(data):
    import hashlib

    return hashlib.sha256(data).hexdigest()


def seed_lake(spark, lake, extra: dict | None = None):
    blobs = dict(BYTES, **(extra or {}))
    images = [(i, "doc", n, f"http://x/{i}", ALTS.get(i), _sha(b), 64, 48, None, None, "r", None, None)
              for n, (i, b) in enumerate(blobs.items())]
    images += [("img7", "doc", 90, "http://x/img7", None, None, None, None, None, None, "r", None, None),      # bytes deferred
               ("img8", "doc", 91, "http://x/img8", None, _sha(b"x"), 10, 10, "too_small", None, "r", "too_small", None)]   # dropped
    lake.overwrite(IMAGES, spark.createDataFrame(images, IMAGES.schema))
    now = datetime.datetime(2026, 1, 1)
    rows = [(f"http://x/{i}", "ok", b, _sha(b), 64, 48, "png", "inline", None, "r", now) for i, b in blobs.items()]
    rows += [("http://x/img7", "deferred", None, None, None, None, None, "url", None, "r", now),
             ("http://x/img8", "ok", b"x", _sha(b"x"), 10, 10, "png", "inline", None, "r", now)]
    lake.overwrite(IMAGE_BLOBS, spark.createDataFrame(rows, IMAGE_BLOBS.schema))


def _overrides(root, model, *more):
    return [f"lake.root={root}", f"caption.model={model}", "caption.batch_size=2", "caption.commit_batch_size=4",
            "caption.num_beams=2", "caption.max_new_tokens=8", "spark.shuffle_partitions=2", *more]


def _counters(spark, lake, run_id, stage="caption"):
    row = spark.read.format("delta").load(lake.location(RUN_LOG)).where(
        (F.col("run_id") == run_id) & (F.col("stage") == stage)).collect()[0]
    return row.counters, row.rows_in


def _captions(lake, model_id):
    return {r.image_id: r for r in lake.read(CAPTIONS).where(F.col("model_id") == model_id).collect()}


@pytest.fixture(scope="module")
def captioned(spark, tmp_path_factory, tiny):
    """One caption run over the seeded lake; the tests below continue on it in file order (each stage run
    is one test, so each stays within the per-test timeout on a loaded machine)."""
    root = tmp_path_factory.mktemp("caption-lake")
    cfg = load_config(overrides=_overrides(root, tiny))
    lake = Lake(spark, cfg.lake)
    seed_lake(spark, lake)
    run_stage(spark, cfg, "caption", "c1")
    return root, cfg, lake


def test_every_eligible_image_gets_the_model_caption(spark, captioned, tiny):
    _, cfg, lake = captioned
    counters, rows_in = _counters(spark, lake, "c1")
    model_id = caption_stage.captioner_id(cfg.caption)
    assert model_id.startswith(tiny + "#")
    stored = _captions(lake, model_id)
    assert set(stored) == {"img0", "img1", "img2", "img3", "img4", "img5", "img6"}   # img7: no bytes, img8: dropped
    # Every decodable image has a caption the model wrote: the same text as the model gives in-process.
    direct = load_captioner(cfg.caption, tiny)
    for image_id in ("img0", "img1", "img2", "img3", "img4"):
        text = stored[image_id].caption
        assert text and set(text.split()) <= set(WORDS), text
        assert stored[image_id].drop_reason is None
        assert direct.caption([decode_rgb(BYTES[image_id])]) == [text]
    assert stored["img5"].caption == stored["img0"].caption                          # same bytes, captioned once
    assert stored["img6"].caption is None and stored["img6"].drop_reason == "undecodable"
    assert counters["requests_to_model"] == 6 and counters["images_captioned"] == 6
    assert counters["dropped:undecodable"] == 1 and counters["no_image_bytes"] == 1
    assert rows_in == 8
    assert {r.params for r in stored.values()} == {caption_stage.generation_params(cfg.caption)}
    # Bounded commits: 7 images at commit_batch_size 4 were written in 2 appends.
    assert lake.history(CAPTIONS).where("operation = 'WRITE'").count() == 2


def test_rerun_captions_nothing(spark, captioned):
    _, cfg, lake = captioned
    run_stage(spark, cfg, "caption", "c2")
    counters, rows_in = _counters(spark, lake, "c2")
    # Only img7 is looked at again: it has no bytes yet, so it was never stored and waits for them.
    assert rows_in == 1 and counters["no_image_bytes"] == 1
    assert counters["requests_to_model"] == 0 and lake.read(CAPTIONS).count() == 7


def test_a_new_image_with_known_bytes_takes_the_stored_caption(spark, captioned):
    _, cfg, lake = captioned
    seed_lake(spark, lake, {"img9": BYTES["img1"]})
    run_stage(spark, cfg, "caption", "c3")
    counters, rows_in = _counters(spark, lake, "c3")
    assert rows_in == 2 and counters["reused_captions"] == 1 and counters["requests_to_model"] == 0
    stored = _captions(lake, caption_stage.captioner_id(cfg.caption))
    assert stored["img9"].caption == stored["img1"].caption


def test_a_changed_setting_captions_again(spark, captioned, tiny):
    root, _, lake = captioned
    beams = load_config(overrides=_overrides(root, tiny, "caption.num_beams=1"))
    run_stage(spark, beams, "caption", "c4")
    counters, _ = _counters(spark, lake, "c4")
    assert counters["requests_to_model"] == 6 and lake.read(CAPTIONS).count() == 16   # the old rows stay


def test_another_model_captions_again(spark, captioned, tiny_other):
    root, _, lake = captioned
    other = load_config(overrides=_overrides(root, tiny_other))
    run_stage(spark, other, "caption", "c5")
    counters, _ = _counters(spark, lake, "c5")
    assert counters["requests_to_model"] == 6
    assert len(_captions(lake, caption_stage.captioner_id(other.caption))) == 8


def _seed_retrievals(spark, lake):
    ids = [f"img{i}" for i in range(7)]
    sentences = [(f"s{i}", "doc", i, 0, f"Sentence number {i} about a street.", 6, None, None, "r", None, None)
                 for i in range(len(ids))]
    lake.overwrite(SENTENCES, spark.createDataFrame(sentences, SENTENCES.schema))
    lake.overwrite(RETRIEVALS, spark.createDataFrame(
        [(image_id, 1, f"s{i}", 0.5, 0, "v", "r") for i, image_id in enumerate(ids)], RETRIEVALS.schema))


def test_generate_uses_the_model_caption_else_the_fallback(spark, tmp_path, tiny):
    base = _overrides(tmp_path, tiny, "generate.backend=template", "generate.tags_per_image=0")
    cfg = load_config(overrides=base)
    lake = Lake(spark, cfg.lake)
    seed_lake(spark, lake)
    _seed_retrievals(spark, lake)
    ensure_inputs(lake, "generate")
    run_stage(spark, cfg, "caption", "g0")
    captions = _captions(lake, caption_stage.captioner_id(cfg.caption))
    run_stage(spark, cfg, "generate", "g1")
    texts = {r.image_id: r for r in lake.read(SYNTHETIC_TEXTS).collect()}
    for image_id in ("img0", "img1", "img3", "img5"):
        assert texts[image_id].caption == captions[image_id].caption
    assert texts["img6"].caption == "a broken picture"           # undecodable: its alt text
    counters, _ = _counters(spark, lake, "g1", "generate")
    assert counters["captions_from_model"] == 6 and counters["captions_from_alt"] == 1

    # No captioner: every image falls back (alt text where there is one), and the caption stage says so.
    off = load_config(overrides=base + ["caption.model=null"])
    run_stage(spark, off, "caption", "g3")
    assert _counters(spark, lake, "g3")[0] == {"captioner_disabled": 1}
    run_stage(spark, off, "generate", "g4")
    counters, _ = _counters(spark, lake, "g4", "generate")
    # img6 already had its alt text as caption: same prompt, same request, nothing to ask again; the six
    # whose model caption is gone are asked anew (two now with alt text, four with none).
    assert counters["captions_from_alt"] == 2 and counters["captions_from_none"] == 4
    after = {r.image_id: r for r in lake.read(SYNTHETIC_TEXTS).collect()}
    assert after["img6"].request_hash == texts["img6"].request_hash and after["img6"].run_id == "g1"
    assert all(after[i].caption != captions[i].caption for i in ("img0", "img1", "img3", "img5"))


def test_fallback_chain_alt_then_tags_then_none(spark):
    frame = spark.createDataFrame(
        [("m", "a caption", "an alt", ["dog"]), ("a", None, "an alt", ["dog"]), ("t", None, None, ["dog"]),
         ("n", None, None, [])], "id string, model_caption string, alt string, tags array<string>")

    def resolved(fallback):
        caption, source = caption_stage.caption_with_fallback(
            fallback, F.col("model_caption"), F.col("alt"), F.try_element_at("tags", F.lit(1)))
        return {r.id: (r.c, r.s) for r in frame.select("id", caption.alias("c"), source.alias("s")).collect()}

    assert resolved(["alt_text", "tags"]) == {"m": ("a caption", "model"), "a": ("an alt", "alt"),
                                              "t": ("a photo showing a dog", "tags"), "n": ("", "none")}
    assert resolved(["tags"])["a"] == ("a photo showing a dog", "tags")
    assert resolved(["tags", "alt_text"])["a"] == ("a photo showing a dog", "tags")
    assert resolved([]) == {"m": ("a caption", "model"), "a": ("", "none"), "t": ("", "none"), "n": ("", "none")}


def test_a_missing_model_fails_or_falls_back_by_setting(spark, tmp_path):
    missing = str(tmp_path / "no-such-model")
    cfg = load_config(overrides=[f"lake.root={tmp_path}", f"caption.model={missing}"])
    ensure_inputs(Lake(spark, cfg.lake), "caption")
    with pytest.raises(RuntimeError, match="neither a local directory nor cached"):
        run_stage(spark, cfg, "caption", "m1")
    fallback = load_config(overrides=[f"lake.root={tmp_path}", f"caption.model={missing}",
                                      "caption.on_missing_model=fallback"])
    run_stage(spark, fallback, "caption", "m2")
    assert _counters(spark, Lake(spark, fallback.lake), "m2")[0] == {"captioner_unavailable": 1}


class _Flaky:
    """Stand-in at the Captioner interface: fails on any batch holding a "bad" image, answers "" for "mute"."""
    def caption(self, images):
        if "bad" in images:
            raise RuntimeError("CUDA out of memory")
        return ["" if i == "mute" else f"caption of {i}" for i in images]


def test_one_failing_image_costs_only_its_own_caption():
    assert caption_batch(_Flaky(), ["a", "bad", "mute", "b"]) == [
        ("caption of a", None), (None, "model_error"), (None, "empty_caption"), ("caption of b", None)]


def test_dtype_and_bf16_on_cpu(tiny):
    import torch

    assert torch_dtype("auto", "cpu") == torch.float32 and torch_dtype("auto", "cuda:0") == torch.float16
    assert torch_dtype("float16", "cpu") == torch.float32 and torch_dtype("bfloat16", "cuda") == torch.bfloat16
    cfg = CaptionConfig(model=tiny, dtype="bfloat16", num_beams=1, max_new_tokens=6, device="cpu")
    captioner = load_captioner(cfg, tiny)
    assert captioner.model.dtype == torch.bfloat16
    texts = captioner.caption([decode_rgb(BYTES["img1"]), decode_rgb(BYTES["img2"])])
    assert len(texts) == 2 and all(t and set(t.split()) <= set(WORDS) for t in texts)
