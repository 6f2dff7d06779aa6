"""Image captioning on executors: encoded image bytes -> a short caption from a Hugging Face image-to-text model.

Any model `AutoModelForImageTextToText` loads and `generate` drives (BLIP, GIT, Florence-2,
VisionEncoderDecoder such as ViT-GPT2), with `AutoProcessor` when the model ships a multimodal processor and
`AutoImageProcessor` + `AutoTokenizer` otherwise (a VisionEncoderDecoder checkpoint saves no processor).
One model per Python worker, configuration and device (`load_captioner`), on the GPU Spark assigned to the
task when there is one (fp16/bf16 there). Images are decoded by `udfs.pixels.decode_rgb` (the helper embed
and pHash use) and captioned `batch_size` at a time, so memory holds one Arrow batch of bytes and one batch of
pixels. A failure is per image: an undecodable image, a model error (the batch is retried image by image to
find the one that fails) or an empty output gives that image a `drop_reason`; the rest of the batch is kept.
"""
from __future__ import annotations

import logging
import threading
from typing import Iterable, Iterator

import pandas as pd

from udfs.pixels import decode_rgb
from udfs.worker import cuda_device, task_gpu, task_threads

log = logging.getLogger("realsyn.udfs")

CAPTIONED_SCHEMA = "request_hash string, caption string, drop_reason string"

_MODELS: dict[tuple, "Captioner"] = {}
_LOCK = threading.Lock()


def caption_device(cfg) -> str:
    """caption.device resolved in this task: the GPU Spark assigned to it, any GPU (local mode), or the CPU."""
    import torch

    if cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available()):
        return "cpu"
    address = task_gpu()
    if address is not None and address.isdigit() and int(address) < torch.cuda.device_count():
        return cuda_device(address)
    return "cuda"


def torch_dtype(dtype: str, device: str):
    """auto: float16 on CUDA, float32 on CPU; float16 on a CPU falls back to float32 (slow and lossy there)."""
    import torch

    cuda = device.startswith("cuda")
    if dtype == "auto":
        return torch.float16 if cuda else torch.float32
    if dtype == "float16" and not cuda:
        log.warning("caption.dtype float16 is not supported on CPU: running float32")
        return torch.float32
    return {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[dtype]


class Captioner:
    """A loaded image-to-text model: `caption(images) -> list[str]` for a batch of PIL images."""

    def __init__(self, cfg, path: str, device: str):
        from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

        self.cfg = cfg
        self.device = device
        self.dtype = torch_dtype(cfg.dtype, device)
        remote = {"trust_remote_code": cfg.trust_remote_code}
        processor = AutoProcessor.from_pretrained(path, **remote)
        if hasattr(processor, "image_processor"):       # a multimodal processor (BLIP, GIT, Florence-2)
            self.processor, self.image_processor = processor, None
            self.tokenizer = processor.tokenizer
        else:                                             # VisionEncoderDecoder: image processor + tokenizer
            self.processor = None
            self.image_processor = AutoImageProcessor.from_pretrained(path, **remote)
            self.tokenizer = AutoTokenizer.from_pretrained(path, **remote)
        self.model = AutoModelForImageTextToText.from_pretrained(path, dtype=self.dtype, **remote).eval().to(device)
        self.input_size = _input_size(self.processor.image_processor if self.processor else self.image_processor)

    def inputs(self, images: list) -> dict:
        if self.processor is not None:
            text = [self.cfg.prompt] * len(images) if self.cfg.prompt else None
            enc = self.processor(images=images, text=text, return_tensors="pt")
        elif self.cfg.prompt:
            raise ValueError("caption.prompt needs a model with a multimodal processor (BLIP, GIT, Florence-2)")
        else:
            enc = self.image_processor(images, return_tensors="pt")
        # Pixels in the model's dtype (fp16/bf16 on a GPU); token ids stay integers.
        return {k: (v.to(self.device, self.dtype) if v.is_floating_point() else v.to(self.device))
                for k, v in enc.items()}

    def caption(self, images: list) -> list[str]:
        import torch

        enc = self.inputs(images)
        with torch.inference_mode():
            out = self.model.generate(**enc, max_new_tokens=self.cfg.max_new_tokens, num_beams=self.cfg.num_beams,
                                      do_sample=False)
        prompt = enc.get("input_ids")
        # Decoder-only captioners (GIT) return the prompt tokens first: keep only what was generated.
        if prompt is not None and out.shape[1] >= prompt.shape[1] and torch.equal(out[:, :prompt.shape[1]], prompt):
            out = out[:, prompt.shape[1]:]
        return [" ".join(t.split()) for t in self.tokenizer.batch_decode(out.cpu(), skip_special_tokens=True)]


def _input_size(image_processor) -> int | None:
    """The model's input side, for decoding large JPEGs at a reduced scale (decode_rgb's draft_size)."""
    size = getattr(image_processor, "crop_size", None) or getattr(image_processor, "size", None)
    if isinstance(size, int):
        return size
    # A dict, or transformers 5's SizeDict (attributes height / width / shortest_edge, unset ones None).
    get = size.get if isinstance(size, dict) else (lambda k: getattr(size, k, None))
    sides = [v for v in (get("height"), get("width"), get("shortest_edge")) if isinstance(v, int)]
    return min(sides) if sides else None


def load_captioner(cfg, path: str) -> Captioner:
    """One model per Python worker, configuration and device: loaded by the first task, reused by the next."""
    import torch

    device = caption_device(cfg)
    key = (path, cfg.dtype, cfg.trust_remote_code, device)
    with _LOCK:
        if key not in _MODELS:
            _MODELS[key] = Captioner(cfg, path, device)
    torch.set_num_threads(cfg.torch_threads or task_threads())
    return _MODELS[key]


def caption_batch(captioner: Captioner, images: list) -> list[tuple[str | None, str | None]]:
    """(caption, drop_reason) per image. A batch that fails is retried image by image, so one bad image
    costs only its own caption."""
    try:
        texts = captioner.caption(images)
    except Exception as exc:  # noqa: BLE001 - isolate the failing image below
        if len(images) == 1:
            log.warning("captioner failed on an image: %s", exc)
            return [(None, "model_error")]
        return [r for image in images for r in caption_batch(captioner, [image])]
    return [(t, None) if t else (None, "empty_caption") for t in texts]


def caption_items(captioner: Captioner, items: Iterable[tuple[str, bytes]],
                  batch_size: int) -> Iterator[tuple[list[str], list[tuple[str | None, str | None]]]]:
    """(key, encoded image) pairs -> (keys, [(caption, drop_reason)]) per batch of at most batch_size."""
    keys, images, done = [], [], []
    for key, data in items:
        try:
            images.append(decode_rgb(data, draft_size=captioner.input_size))
            keys.append(key)
        except Exception as exc:  # noqa: BLE001 - an undecodable image is recorded, not fatal
            log.warning("image %s not decodable at caption time: %s", key, exc)
            done.append(key)
        if done:
            yield done, [(None, "undecodable")] * len(done)
            done = []
        if len(images) >= batch_size:
            yield keys, caption_batch(captioner, images)
            keys, images = [], []
    if images:
        yield keys, caption_batch(captioner, images)


def image_captioner(cfg, path: str):
    """mapInPandas body: (request_hash, image_bytes) -> (request_hash, caption, drop_reason).

    `cfg` is the typed `caption` section; `path` the model directory or hub id the driver resolved."""
    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        def items():
            for frame in batches:
                yield from zip(frame["request_hash"].tolist(), frame["image_bytes"].tolist())

        for keys, results in _lazy(items(), lambda: load_captioner(cfg, path), cfg.batch_size):
            yield pd.DataFrame({"request_hash": keys, "caption": [r[0] for r in results],
                                "drop_reason": [r[1] for r in results]})

    return run


def _lazy(items: Iterator, load, batch_size: int):
    """caption_items with the model loaded only when a partition has an image (empty tasks load nothing)."""
    first = next(items, None)
    if first is None:
        return
    import itertools

    yield from caption_items(load(), itertools.chain([first], items), batch_size)
