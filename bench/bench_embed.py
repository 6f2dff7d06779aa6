"""Images/s of the CLIP embedding UDF through Spark vs a bare single-process open_clip loop.

    python bench/bench_embed.py                                  # ViT-S-32, 2000 JPEGs of ~256 px, 2 threads
    python bench/bench_embed.py --model tiny-clip --images 4000  # the tests' tiny random-weight config
    python bench/bench_embed.py --device cuda --batch-size 256   # on a GPU machine

Both sides embed the same encoded JPEGs (smooth random content, 256 px on the short side, 256-384 px
wide) with the same model (random weights: no model hub needed) and the same number of CPU threads:

* bare loop: one process, torch.set_num_threads(--threads), decode + preprocess + forward per batch,
  sequentially, with open_clip's own preprocessing; model creation is not timed;
* Spark: local[--threads] (one task per core, one torch thread per task, as on a cluster), the images
  in a Parquet file, `udfs.clip_embed.image_embedder` through mapInPandas exactly as the embed stage
  runs it, results written to Spark's no-op sink. Run twice: the first run includes starting Python
  workers and loading the model in each; the second reuses them (steady state). Measured with the
  configured prefetch and with prefetch 0 (decode inline).

With --decode-paths (no Spark): `embed.decode` cpu (Pillow + open_clip transforms, the baseline) vs gpu
(batched torchvision decode_jpeg, nvJPEG on CUDA, + tensor preprocessing on the model's device), per model
in --models, on photo-sized JPEGs (--min-side..--max-side px, default 500-1000): images/s decode
included (prefetch as configured), decode-only and forward-only images/s, and decode's share of the time.
--tasks N runs N processes at once on the same device (several Spark tasks per GPU) and reports the sum.

    python bench/bench_embed.py --decode-paths --device cuda --models ViT-B-32,ViT-L-14 --batch-size 256 --images 4096
    python bench/bench_embed.py --decode-paths --device cpu --models tiny-clip,ViT-S-32 --images 256

With --no-spark (a GPU machine without Java/Spark), the UDF body `image_embedder(cfg)` is called
in-process on the same pandas frames Spark would hand it: that measures the executor code path
(prefetch thread, pinned memory, autocast) without the JVM.
The bare loop is timed before and after the Spark runs; the load average is printed, since a shared
machine slows a multi-threaded torch loop more than one-thread-per-task Spark workers.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def jpegs(n: int, size: int, seed: int = 0) -> list[bytes]:
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        width = int(size * rng.uniform(1.0, 1.5))
        base = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((width, size), Image.BICUBIC)
        detail = Image.fromarray(rng.integers(0, 40, (size, width, 3), dtype=np.uint8))
        img = Image.blend(img, detail, 0.15).filter(ImageFilter.SMOOTH)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=88)
        out.append(buf.getvalue())
    return out


def photos(n: int, min_side: int, max_side: int, seed: int = 0) -> list[bytes]:
    """Photo-sized JPEGs (each side uniform in [min_side, max_side]): smooth shapes plus sensor-like noise."""
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        width, height = (int(v) for v in rng.integers(min_side, max_side + 1, 2))
        base = Image.fromarray(rng.integers(0, 255, (9, 12, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
        detail = Image.fromarray(rng.integers(0, 50, (height, width, 3), dtype=np.uint8))
        img = Image.blend(base, detail, 0.12).filter(ImageFilter.SMOOTH)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=85)
        out.append(buf.getvalue())
    return out


def model_cfg(args):
    from realsyn_spark.config import EmbedConfig

    from importlib import resources

    config_path = None
    if args.model == "tiny-clip":
        config_path = str(resources.files("realsyn_spark").joinpath("resources/tiny-clip.json"))
    return EmbedConfig(model=args.model, pretrained=None, checkpoint_path=None, model_config_path=config_path,
                       allow_random_weights=True, device=args.device, batch_size=args.batch_size,
                       torch_threads=None, precision="auto", prefetch_batches=args.prefetch,
                       storage_dtype="float32")


def bare_loop(args, images: list[bytes]) -> tuple[float, np.ndarray]:
    import open_clip
    import torch
    from PIL import Image

    cfg = model_cfg(args)
    if cfg.model_config_path:
        open_clip.add_model_config(cfg.model_config_path)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(args.model, pretrained=None)
    model = model.eval().to(args.device)
    cuda = args.device.startswith("cuda")
    out = []
    with torch.inference_mode():  # warm-up batch, not timed
        model.encode_image(torch.stack([preprocess(Image.open(io.BytesIO(b)).convert("RGB"))
                                        for b in images[:args.batch_size]]).to(args.device))
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for lo in range(0, len(images), args.batch_size):
        pixels = torch.stack([preprocess(Image.open(io.BytesIO(b)).convert("RGB"))
                              for b in images[lo:lo + args.batch_size]]).to(args.device)
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=cuda):
            vec = model.encode_image(pixels).float()
        vec = torch.nn.functional.normalize(vec, dim=-1)
        out.append(vec.cpu().numpy())
    if cuda:
        torch.cuda.synchronize()
    return len(images) / (time.perf_counter() - start), np.concatenate(out)


def udf_runs(args, images: list[bytes]):
    """The mapInPandas body, called in-process on Arrow-batch-sized pandas frames (no Spark)."""
    import pandas as pd
    import torch

    from udfs.clip_embed import image_embedder

    torch.set_num_threads(args.threads)
    frames = [pd.DataFrame({"image_id": [f"img{i:07d}" for i in range(lo, min(lo + args.batch_size * 4, len(images)))],
                            "image_bytes": images[lo:lo + args.batch_size * 4]})
              for lo in range(0, len(images), args.batch_size * 4)]
    results, check = [], None
    for label, prefetch in (("first call (model load)", args.prefetch), ("warm", args.prefetch), ("warm, prefetch 0", 0)):
        cfg = model_cfg(args).model_copy(update={"prefetch_batches": prefetch, "torch_threads": args.threads})
        start = time.perf_counter()
        out = pd.concat(list(image_embedder(cfg)(iter(frames))))
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        results.append((f"{label}, prefetch {prefetch}" if "prefetch 0" not in label else label,
                        len(images) / (time.perf_counter() - start)))
        check = out.head(64)
    return results, check


def spark_runs(args, images: list[bytes]):
    import pandas as pd

    from realsyn_spark.config import load_config
    from realsyn_spark.session import local_session_builder
    from udfs.clip_embed import image_embedder

    work = Path(tempfile.mkdtemp(prefix="realsyn-bench-embed-"))
    cfg = load_config()
    spark = (local_session_builder(cfg, master=f"local[{args.threads}]")
             .config("spark.driver.memory", "2g").config("spark.sql.warehouse.dir", str(work / "wh"))
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    path = str(work / "images.parquet")
    frame = pd.DataFrame({"image_id": [f"img{i:07d}" for i in range(len(images))], "image_bytes": images})
    spark.createDataFrame(frame, "image_id string, image_bytes binary").repartition(args.threads * 4) \
        .write.mode("overwrite").parquet(path)
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(args.batch_size * 4))  # as the stage
    results = []
    for label, prefetch in (("cold (worker start + model load)", args.prefetch), ("warm", args.prefetch),
                            ("warm, prefetch 0", 0)):
        embed_cfg = model_cfg(args).model_copy(update={"prefetch_batches": prefetch})
        df = (spark.read.parquet(path).repartition(spark.sparkContext.defaultParallelism)
              .mapInPandas(image_embedder(embed_cfg), "image_id string, model_id string, embedding array<float>"))
        start = time.perf_counter()
        df.write.format("noop").mode("overwrite").save()
        results.append((f"{label}, prefetch {prefetch}" if "prefetch 0" not in label else label,
                        len(images) / (time.perf_counter() - start)))
    check = (spark.read.parquet(path).limit(64)
             .mapInPandas(image_embedder(model_cfg(args)), "image_id string, model_id string, embedding array<float>")
             .toPandas().sort_values("image_id"))
    # embed.storage_dtype: the same array<float> column written to Delta at float32 and float16 values
    for storage in ("float32", "float16"):
        target = str(work / f"delta_{storage}")
        (spark.read.parquet(path)
         .mapInPandas(image_embedder(model_cfg(args).model_copy(update={"storage_dtype": storage})),
                      "image_id string, model_id string, embedding array<float>")
         .coalesce(1).write.format("delta").mode("overwrite").save(target))
        values = spark.read.format("delta").load(target).selectExpr("sum(size(embedding))").first()[0]
        size = sum(f.stat().st_size for f in Path(target).glob("*.parquet"))
        results.append((f"Delta bytes per stored value, storage_dtype {storage}", size / values))
    spark.stop()
    return results, check


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _decode_only(bundle, images, args, decode: str) -> float:
    """Seconds to decode + preprocess every image into device batches, no forward."""
    from udfs.clip_embed import decoded_batches, prefetched
    from udfs.tensor_pixels import TensorDecoder, tensor_batches

    start = time.perf_counter()
    if decode == "gpu":
        decoder = TensorDecoder(bundle.tensor_spec, bundle.device, args.threads)
        for _, pixels, _ in prefetched(tensor_batches(enumerate(images), decoder, args.batch_size), args.prefetch):
            pass
        decoder.close()
    else:
        for _, pixels in prefetched(decoded_batches(enumerate(images), bundle.preprocess, args.batch_size,
                                                    pin=bundle.device.startswith("cuda")), args.prefetch):
            pixels.to(bundle.device, non_blocking=True)
    _sync(bundle.device)
    return time.perf_counter() - start


def _forward_only(bundle, images, args) -> float:
    """Seconds of the model alone on len(images) images (one decoded batch, repeated)."""
    from udfs.clip_embed import decoded_batches

    _, pixels = next(decoded_batches(enumerate(images[:args.batch_size]), bundle.preprocess, args.batch_size))
    pixels = pixels.to(bundle.device)
    bundle.forward(pixels)
    _sync(bundle.device)
    batches = max(1, len(images) // len(pixels))
    start = time.perf_counter()
    for _ in range(batches):
        bundle.forward(pixels)
    _sync(bundle.device)
    return (time.perf_counter() - start) * len(images) / (batches * len(pixels))


def _path_cfg(args, model: str, decode: str):
    return model_cfg(argparse.Namespace(**{**vars(args), "model": model})).model_copy(
        update={"decode": decode, "decode_threads": args.threads, "torch_threads": args.threads})


def _end_to_end(args, model: str, decode: str, images: list[bytes], barrier=None) -> tuple[float, np.ndarray]:
    import torch

    from udfs.clip_embed import load_clip

    bundle = load_clip(_path_cfg(args, model, decode))
    torch.set_num_threads(args.threads)
    bundle.embed_images(images[:args.batch_size], args.batch_size, 0, decode, args.threads)  # warm-up
    _sync(bundle.device)
    if barrier is not None:   # several tasks: all start timing together, after their model loads
        barrier.wait()
    start = time.perf_counter()
    kept, vectors = bundle.embed_images(images, args.batch_size, args.prefetch, decode, args.threads)
    _sync(bundle.device)
    assert len(kept) == len(images)
    return time.perf_counter() - start, vectors


def _task_worker(args, model, decode, images, queue, barrier):
    elapsed, _ = _end_to_end(args, model, decode, images, barrier)
    queue.put(elapsed)


def _several_tasks(args, model: str, decode: str, images: list[bytes]) -> float:
    """images/s of args.tasks processes embedding their share at once on the same device."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    queue, barrier = ctx.Queue(), ctx.Barrier(args.tasks)
    shares = [images[i::args.tasks] for i in range(args.tasks)]
    procs = [ctx.Process(target=_task_worker, args=(args, model, decode, share, queue, barrier)) for share in shares]
    for p in procs:
        p.start()
    times = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    return len(images) / max(times)


def decode_paths(args) -> None:
    from udfs.clip_embed import load_clip

    images = photos(args.images, args.min_side, args.max_side)
    print(f"{len(images)} JPEGs, sides {args.min_side}-{args.max_side} px, mean "
          f"{np.mean([len(b) for b in images]) / 1024:.0f} KiB; batch {args.batch_size}, prefetch {args.prefetch}, "
          f"{args.threads} threads, device {args.device}, random weights", flush=True)
    for model in args.models.split(","):
        rates, vectors = {}, {}
        # the two paths alternate for --rounds rounds: a shared machine's load then hits both alike
        for round_ in range(1, args.rounds + 1):
            for decode in ("cpu", "gpu"):
                bundle = load_clip(_path_cfg(args, model, decode))
                elapsed, vectors[decode] = _end_to_end(args, model, decode, images)
                decode_s = _decode_only(bundle, images, args, decode)
                forward_s = _forward_only(bundle, images, args)
                rates.setdefault(decode, []).append(len(images) / elapsed)
                print(f"round {round_}, {model} decode={decode}: {rates[decode][-1]:.1f} images/s decode included | "
                      f"decode only {len(images) / decode_s:.1f}/s, forward only {len(images) / forward_s:.1f}/s, "
                      f"decode share {decode_s / (decode_s + forward_s):.0%} (precision {bundle.precision}, "
                      f"load average {os.getloadavg()[0]:.1f})", flush=True)
                if args.tasks > 1:
                    print(f"round {round_}, {model} decode={decode}, {args.tasks} tasks at once on {args.device}: "
                          f"{_several_tasks(args, model, decode, images):.1f} images/s", flush=True)
        cosine = (vectors["cpu"] * vectors["gpu"]).sum(axis=1)
        best = {decode: max(values) for decode, values in rates.items()}
        print(f"{model}: best of {args.rounds} rounds, decode=cpu {best['cpu']:.1f} images/s, decode=gpu "
              f"{best['gpu']:.1f} images/s, ratio {best['gpu'] / best['cpu']:.2f}; per-image cosine of the two "
              f"paths' vectors min {cosine.min():.5f} mean {cosine.mean():.5f}", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=256, help="short side of the JPEGs in pixels")
    parser.add_argument("--model", default="ViT-S-32", help="open_clip model name, or tiny-clip")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prefetch", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-spark", action="store_true", help="call the UDF body in-process (no JVM)")
    parser.add_argument("--decode-paths", action="store_true", help="embed.decode cpu vs gpu, no Spark")
    parser.add_argument("--models", default="ViT-B-32,ViT-L-14", help="models for --decode-paths")
    parser.add_argument("--min-side", type=int, default=500)
    parser.add_argument("--max-side", type=int, default=1000)
    parser.add_argument("--tasks", type=int, default=1, help="--decode-paths: processes at once on the device")
    parser.add_argument("--rounds", type=int, default=2, help="--decode-paths: alternating rounds per path")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.decode_paths:
        decode_paths(args)
        return
    images = jpegs(args.images, args.size)
    print(f"{len(images)} JPEGs, short side {args.size} px, mean {np.mean([len(b) for b in images]) / 1024:.0f} KiB; "
          f"model {args.model} (random weights), batch {args.batch_size}, {args.threads} threads, {args.device}",
          flush=True)
    bare, bare_vectors = bare_loop(args, images)
    print(f"bare open_clip loop: {bare:.1f} images/s (load average {os.getloadavg()[0]:.1f})", flush=True)
    runs, check = udf_runs(args, images) if args.no_spark else spark_runs(args, images)
    bare_after, _ = bare_loop(args, images)
    print(f"bare open_clip loop, again after the UDF runs: {bare_after:.1f} images/s "
          f"(load average {os.getloadavg()[0]:.1f})")
    reference = (bare + bare_after) / 2
    where = "UDF body in-process" if args.no_spark else "Spark UDF"
    for label, rate in runs:
        if label.startswith("Delta bytes"):
            print(f"{label}: {rate:.2f}")
            continue
        print(f"{where}, {label}: {rate:.1f} images/s  ratio to the bare loop (mean of both) {rate / reference:.2f}")
    got = np.stack(check.embedding.to_numpy())
    ids = [int(i[3:]) for i in check.image_id]
    print(f"same vectors as the bare loop (first {len(ids)} images): max abs difference "
          f"{np.abs(got - bare_vectors[ids]).max():.2e}")


if __name__ == "__main__":
    main()
