"""CLIP (open_clip) embedding of images and texts inside executors.

`load_clip` caches one model per Python worker process (and device). Random-weight fallback is seeded,
so that every executor builds the *same* random model and the vectors stay comparable across tasks.

Images are decoded (upright 8-bit RGB, `udfs.pixels`) and preprocessed in the UDF in bounded batches,
by Pillow + open_clip's transforms (`decoded_batches`, `embed.decode: cpu`) or by batched nvJPEG and
tensor ops on the model's device (`udfs.tensor_pixels`, `embed.decode: gpu`, the default on CUDA),
optionally by a background thread a few batches ahead of the model (`prefetched`); on CUDA the batches are pinned and
copied asynchronously, the forward pass runs under fp16/bf16 autocast (`embed.precision`), and the task
uses the GPU Spark assigned to it. Vectors are L2-normalised and, with `embed.storage_dtype: float16`,
rounded to float16 values (see `to_storage`). docs/gpu.md has the cluster settings.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import numpy as np
import pandas as pd

from udfs.pixels import decode_rgb
from udfs.worker import cuda_device, task_gpu, task_threads

if TYPE_CHECKING:
    import torch

    from realsyn_spark.config import EmbedConfig

log = logging.getLogger("realsyn.udfs")

_MODELS: dict[str, "ClipBundle"] = {}
_LOCK = threading.Lock()
RANDOM_WEIGHTS_SEED = 0


@dataclass
class ClipBundle:
    model: object
    preprocess: Callable
    tokenizer: Callable
    model_id: str
    device: str
    random_weights: bool
    dim: int
    precision: str = "fp32"
    tensor_spec: object = None   # udfs.tensor_pixels.TensorPreprocess, None where the model's is unsupported

    def embed_images(self, images: Iterable[bytes], batch_size: int, prefetch: int = 0, decode: str = "cpu",
                     decode_threads: int | None = None) -> tuple[list[int], np.ndarray]:
        """Embed encoded images; returns the indices that decoded and their L2-normalised vectors."""
        kept, vectors = [], []
        for index, out in self.embed_image_batches(enumerate(images), batch_size, prefetch, decode, decode_threads):
            kept.extend(index)
            vectors.append(out)
        return kept, (np.concatenate(vectors) if vectors else np.zeros((0, self.dim), np.float32))

    def decode_path(self, decode: str) -> str:
        """embed.decode resolved for this bundle: "cpu" (Pillow + open_clip's transforms) or "gpu" (the
        tensor path on the model's device). auto = gpu on a CUDA device."""
        if decode == "auto":
            decode = "gpu" if self.device.startswith("cuda") else "cpu"
        if decode == "gpu" and self.tensor_spec is None:
            log.warning("model %s has a preprocessing the tensor path does not reproduce: decoding on CPU",
                        self.model_id)
            return "cpu"
        return decode

    def embed_image_batches(self, items: Iterable[tuple[object, bytes]], batch_size: int,
                            prefetch: int = 0, decode: str = "cpu",
                            decode_threads: int | None = None) -> Iterator[tuple[list, np.ndarray]]:
        """(key, encoded image) pairs -> (keys, L2-normalised vectors) per model batch.

        decode "cpu": `decoded_batches` (Pillow, open_clip's transforms: the reference). decode "gpu":
        `udfs.tensor_pixels` on the model's device (batched nvJPEG on CUDA; on a CPU device the same
        tensor ops, which is how they are tested). With prefetch > 0 decoding runs in a background thread,
        at most `prefetch` batches ahead, while the model embeds the current batch (Pillow, libjpeg and
        torch release the GIL while they work). Undecodable images are skipped.
        """
        if self.decode_path(decode) == "gpu":
            yield from self._embed_tensor_decoded(items, batch_size, prefetch, decode_threads)
            return
        cuda = self.device.startswith("cuda")
        batches = decoded_batches(items, self.preprocess, batch_size, pin=cuda)
        for keys, pixels in prefetched(batches, prefetch):
            yield keys, self.forward(pixels.to(self.device, non_blocking=cuda))

    def _embed_tensor_decoded(self, items, batch_size: int, prefetch: int, decode_threads: int | None):
        import torch

        from udfs.tensor_pixels import TensorDecoder, tensor_batches

        decoder = TensorDecoder(self.tensor_spec, self.device, decode_threads or task_threads())
        try:
            for keys, pixels, ready in prefetched(tensor_batches(items, decoder, batch_size), prefetch):
                if ready is not None:   # decoded on the producer's CUDA stream
                    current = torch.cuda.current_stream(pixels.device)
                    current.wait_event(ready)
                    pixels.record_stream(current)
                yield keys, self.forward(pixels)
        finally:
            decoder.close()

    def forward(self, pixels) -> np.ndarray:
        """Preprocessed pixels on the model's device -> L2-normalised vectors."""
        import torch

        with torch.inference_mode(), _autocast(self.device, self.precision):
            out = self.model.encode_image(pixels)
        return _normalise(out.float().cpu().numpy())

    def embed_texts(self, texts: list[str], batch_size: int) -> np.ndarray:
        import torch

        vectors = []
        for start in range(0, len(texts), batch_size):
            tokens = self.tokenizer(texts[start:start + batch_size]).to(self.device)
            with torch.inference_mode(), _autocast(self.device, self.precision):
                out = self.model.encode_text(tokens)
            vectors.append(_normalise(out.float().cpu().numpy()))
        return np.concatenate(vectors) if vectors else np.zeros((0, self.dim), np.float32)


def decoded_batches(items: Iterable[tuple[object, bytes]], preprocess: Callable, batch_size: int,
                    pin: bool = False) -> Iterator[tuple[list, "torch.Tensor"]]:
    """Decode + preprocess into (keys, pixel tensor) batches of at most batch_size images.

    Memory is bounded by one batch of pixels plus the image being decoded. A JPEG at least 4x the
    model input on both sides is decoded at a reduced DCT scale (1/2..1/8) that still leaves it 2x the
    input or more, so the preprocessing's antialiased resize still makes the final reduction: a huge
    photo never expands to full size in memory, and images up to 4x the input decode unchanged.
    """
    import torch

    keys, tensors = [], []
    size = _input_size(preprocess)
    for key, data in items:
        try:
            tensors.append(preprocess(decode_rgb(data, draft_size=size)))
            keys.append(key)
        except Exception as exc:  # an undecodable image is skipped, not fatal
            log.warning("image %s not decodable at embed time: %s", key, exc)
        if len(tensors) >= batch_size:
            pixels = torch.stack(tensors)
            yield keys, (pixels.pin_memory() if pin else pixels)
            keys, tensors = [], []
    if tensors:
        pixels = torch.stack(tensors)
        yield keys, (pixels.pin_memory() if pin else pixels)


def _input_size(preprocess: Callable) -> int | None:
    for t in getattr(preprocess, "transforms", []):
        size = getattr(t, "size", None)
        if isinstance(size, int):
            return size
        if isinstance(size, (tuple, list)) and size:
            return int(min(size))
    return None


_DONE = object()


def prefetched(iterable: Iterable, depth: int) -> Iterator:
    """Iterate `iterable` in a background thread, at most `depth` items ahead (depth 0: inline).

    An exception in the producer is re-raised in the consumer; if the consumer stops early, the
    producer is told to stop and is joined.
    """
    if depth <= 0:
        yield from iterable
        return
    import queue

    q: "queue.Queue" = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce():
        try:
            for item in iterable:
                while not stop.is_set():
                    try:
                        q.put((True, item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((True, _DONE))
        except BaseException as exc:  # handed to the consumer
            q.put((False, exc))

    worker = threading.Thread(target=produce, name="realsyn-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            ok, item = q.get()
            if not ok:
                raise item
            if item is _DONE:
                break
            yield item
    finally:
        stop.set()
        while worker.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                worker.join(timeout=0.1)


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


def to_storage(x: np.ndarray, storage_dtype: str) -> np.ndarray:
    """float16 storage: round to float16 values (kept as float32, the column type); else unchanged."""
    if storage_dtype == "float16":
        return x.astype(np.float16).astype(np.float32)
    return x


def _autocast(device: str, precision: str = "auto"):
    import contextlib

    import torch

    dtype = autocast_dtype(device, precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.split(":")[0], dtype=dtype)


def autocast_dtype(device: str, precision: str = "auto"):
    """auto: fp16 on CUDA, none on CPU; fp16/bf16 on CUDA; bf16 on CPU; fp32: none."""
    import torch

    cuda = device.startswith("cuda")
    if precision == "auto":
        return torch.float16 if cuda else None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        if cuda:
            return torch.float16
        log.warning("precision fp16 is not supported on CPU: running fp32")
    return None


# Executor code takes the typed `embed` section as it is (pydantic models pickle), so its defaults are
# the config's and nowhere else.
def model_id_for(cfg: EmbedConfig, random_weights: bool) -> str:
    if random_weights:
        return f"{cfg.model}:random-seed{RANDOM_WEIGHTS_SEED}"
    if cfg.checkpoint_path:
        return f"{cfg.model}:file:{os.path.basename(cfg.checkpoint_path)}"
    return f"{cfg.model}:{cfg.pretrained or 'none'}"


def _torch_threads(cfg: EmbedConfig) -> int:
    return cfg.torch_threads or task_threads()


def _device(cfg: EmbedConfig) -> str:
    import torch

    device = cfg.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        address = task_gpu()
        if address is not None and address.isdigit() and int(address) < torch.cuda.device_count():
            return cuda_device(address)
    return device


def load_clip(cfg: EmbedConfig) -> ClipBundle:
    """One model per worker process, configuration and device."""
    device = _device(cfg)
    key = json.dumps({**cfg.model_dump(include={"model", "pretrained", "checkpoint_path", "model_config_path",
                                                "allow_random_weights", "precision"}), "device": device},
                     sort_keys=True)
    with _LOCK:
        bundle = _MODELS.get(key)
        if bundle is None:
            bundle = _MODELS[key] = _create(cfg, device)
    import torch

    torch.set_num_threads(_torch_threads(cfg))
    return bundle


def _create(cfg: EmbedConfig, device: str) -> ClipBundle:
    import open_clip
    import torch

    if cfg.model_config_path:
        open_clip.add_model_config(cfg.model_config_path)
    weights = cfg.checkpoint_path or cfg.pretrained or None
    random_weights = weights is None
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(cfg.model, pretrained=weights)
    except Exception as exc:
        if not cfg.allow_random_weights:
            raise RuntimeError(
                f"cannot load CLIP weights {cfg.model!r}/{weights!r}: {exc}. Give a local checkpoint "
                "(embed.checkpoint_path) or set embed.allow_random_weights=true to run on random weights."
            ) from exc
        log.warning("CLIP weights %s/%s unavailable (%s): using seeded random weights", cfg.model, weights, exc)
        random_weights = True
    if random_weights:
        torch.manual_seed(RANDOM_WEIGHTS_SEED)
        model, _, preprocess = open_clip.create_model_and_transforms(cfg.model, pretrained=None)
    model = model.eval().to(device)
    from udfs.tensor_pixels import TensorPreprocess

    dim = int(model.text_projection.shape[1]) if getattr(model, "text_projection", None) is not None \
        else int(model.encode_text(open_clip.get_tokenizer(cfg.model)(["x"]).to(device)).shape[1])
    return ClipBundle(model, preprocess, open_clip.get_tokenizer(cfg.model), model_id_for(cfg, random_weights),
                      device, random_weights, dim, cfg.precision, TensorPreprocess.from_model(model))


def image_embedder(cfg: EmbedConfig) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """mapInPandas body: (image_id, image_bytes) -> (image_id, model_id, embedding).

    Batches of `batch_size` images flow across the Arrow input frames; with `prefetch_batches` > 0 a
    background thread decodes and preprocesses the next batches while the model runs.
    """
    batch_size, prefetch, storage = cfg.batch_size, cfg.prefetch_batches, cfg.storage_dtype
    decode, decode_threads = cfg.decode, cfg.decode_threads

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        bundle = load_clip(cfg)

        def items():
            for frame in batches:
                yield from zip(frame["image_id"].tolist(), frame["image_bytes"].tolist())

        for ids, vectors in bundle.embed_image_batches(items(), batch_size, prefetch, decode, decode_threads):
            yield pd.DataFrame({"image_id": ids, "model_id": bundle.model_id,
                                "embedding": list(to_storage(vectors, storage))})

    return run


def text_embedder(cfg: EmbedConfig, id_column: str) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """mapInPandas body: (<id_column>, text) -> (<id_column>, model_id, embedding)."""
    batch_size, storage = cfg.batch_size * 2, cfg.storage_dtype

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        bundle = load_clip(cfg)
        for frame in batches:
            vectors = bundle.embed_texts(frame["text"].astype(str).tolist(), batch_size)
            yield pd.DataFrame({id_column: frame[id_column].to_numpy(), "model_id": bundle.model_id,
                                "embedding": list(to_storage(vectors, storage))})

    return run
