"""CLIP image preprocessing as tensor ops on any torch device: the embed stage's GPU decode path.

JPEGs are decoded in one batched `torchvision.io.decode_jpeg(list, device=...)` call (nvJPEG on CUDA,
libjpeg-turbo on CPU), then turned upright, resized (shorter side, antialiased, the model's
interpolation), centre-cropped and normalised with the mean/std of open_clip's preprocess config, all
as tensor ops on the model's device. Images that call cannot take (PNG, WebP, GIF, ...; CMYK/YCCK,
12-bit, lossless or arithmetic JPEGs; very large JPEGs; any JPEG the batched call rejects) are decoded
by `udfs.pixels.decode_rgb` (Pillow, the CPU reference) in a small thread pool and then go through the
same tensor ops. Orientation comes from `udfs.pixels.jpeg_header` for the JPEGs (a marker scan, no
decode) and from Pillow for the rest, so both paths give upright pixels.

Nothing here needs CUDA: on a CPU device it is the same code, which is how its equivalence with
open_clip's PIL transforms is tested in CI (tests/test_embed.py).
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable, Iterator, Optional

import numpy as np

from udfs.pixels import decode_rgb, jpeg_header

log = logging.getLogger("realsyn.udfs")

# A JPEG above this many pixels is decoded by Pillow at a reduced DCT scale instead: a full-size decode
# of a 50 MP photo on the device would hold ~150 MB for one image of the batch.
MAX_TENSOR_DECODE_PIXELS = 4096 * 4096


@dataclass(frozen=True)
class TensorPreprocess:
    """open_clip's preprocess config (`open_clip.get_model_preprocess_cfg`) for the tensor path."""

    size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"

    @classmethod
    def from_model(cls, model) -> Optional["TensorPreprocess"]:
        """None when the model's preprocessing is one this module does not reproduce (then decode=cpu)."""
        import open_clip

        preprocess_cfg = open_clip.get_model_preprocess_cfg(model)
        size = preprocess_cfg.get("size")
        size = (size, size) if isinstance(size, int) else tuple(size)
        if preprocess_cfg.get("resize_mode", "shortest") not in ("shortest", "squash") \
                or preprocess_cfg.get("interpolation", "bicubic") not in ("bicubic", "bilinear"):
            return None
        return cls(size, tuple(preprocess_cfg["mean"]), tuple(preprocess_cfg["std"]), preprocess_cfg.get("interpolation", "bicubic"),
                   preprocess_cfg.get("resize_mode", "shortest"))


def orient_tensor(image, orientation: int):
    """CHW tensor turned upright for an EXIF orientation: the same pixels as udfs.pixels.apply_orientation."""
    import torch

    if orientation == 2:
        return image.flip(-1)
    if orientation == 3:
        return image.flip(-1, -2)
    if orientation == 4:
        return image.flip(-2)
    if orientation == 5:
        return image.transpose(-1, -2)
    if orientation == 6:
        return torch.rot90(image, -1, dims=(-2, -1))
    if orientation == 7:
        return image.transpose(-1, -2).flip(-1, -2)
    if orientation == 8:
        return torch.rot90(image, 1, dims=(-2, -1))
    return image


def resize_crop_normalise(images: list, spec: TensorPreprocess):
    """uint8 CHW tensors (any sizes, one device) -> float NCHW batch as open_clip's PIL transforms make it:
    Resize(shorter side, antialias) -> CenterCrop -> ToTensor (/255, after rounding to uint8 as PIL
    does) -> Normalize."""
    import torch
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    interpolation = InterpolationMode.BICUBIC if spec.interpolation == "bicubic" else InterpolationMode.BILINEAR
    height, width = spec.size
    out = []
    for image in images:
        if spec.resize_mode == "squash":
            image = TF.resize(image, [height, width], interpolation=interpolation, antialias=True)
        else:
            image = TF.resize(image, min(height, width), interpolation=interpolation, antialias=True)
            image = TF.center_crop(image, [height, width])
        out.append(image)
    batch = torch.stack(out).float().div_(255.0)
    mean = torch.tensor(spec.mean, device=batch.device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=batch.device).view(1, 3, 1, 1)
    return batch.sub_(mean).div_(std)


class TensorDecoder:
    """Decodes (key, bytes) batches into preprocessed pixel batches on `device`."""

    def __init__(self, spec: TensorPreprocess, device: str, cpu_threads: int = 2):
        self.spec, self.device = spec, device
        self.pool = ThreadPoolExecutor(max(1, cpu_threads), thread_name_prefix="realsyn-decode")
        self.routed = {"tensor": 0, "pil": 0, "fallback": 0, "failed": 0}

    def close(self) -> None:
        self.pool.shutdown(wait=True)

    def batch(self, chunk: list[tuple[object, bytes]]):
        """(keys that decoded, float NCHW pixels on the device, or None when none decoded)."""
        draft = max(self.spec.size)
        images: dict[int, object] = {}
        jpegs, cpu = [], []
        for i, (_, data) in enumerate(chunk):
            header = jpeg_header(data) if data is not None else None
            if header is not None and header.tensor_decodable \
                    and header.width * header.height <= MAX_TENSOR_DECODE_PIXELS:
                jpegs.append((i, header.orientation))
            else:
                cpu.append(i)
        futures = {i: self.pool.submit(_pil_tensor, chunk[i][1], draft) for i in cpu}
        self.routed["pil"] += len(cpu)
        for i, tensor in self._decode_jpegs(chunk, jpegs):
            if tensor is None:   # the batched decoder refused it: the PIL path decides
                self.routed["fallback"] += 1
                futures[i] = self.pool.submit(_pil_tensor, chunk[i][1], draft)
            else:
                self.routed["tensor"] += 1
                images[i] = tensor
        for i, future in futures.items():
            try:
                images[i] = future.result().to(self.device, non_blocking=True)
            except Exception as exc:  # an undecodable image is skipped, not fatal
                self.routed["failed"] += 1
                log.warning("image %s not decodable at embed time: %s", chunk[i][0], exc)
        order = sorted(images)
        if not order:
            return [], None
        return [chunk[i][0] for i in order], resize_crop_normalise([images[i] for i in order], self.spec)

    def _decode_jpegs(self, chunk, jpegs: list[tuple[int, int]]) -> Iterator[tuple[int, object]]:
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg

        if not jpegs:
            return
        raw = [torch.frombuffer(bytearray(chunk[i][1]), dtype=torch.uint8) for i, _ in jpegs]
        try:
            decoded = decode_jpeg(raw, mode=ImageReadMode.RGB, device=self.device)
        except Exception:   # one bad JPEG fails the whole batched call: retry one by one
            decoded = []
            for data in raw:
                try:
                    decoded.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device))
                except Exception:
                    decoded.append(None)
        for (i, orientation), image in zip(jpegs, decoded):
            yield i, (None if image is None else orient_tensor(image, orientation))


def _pil_tensor(data: bytes, draft: int):
    """The CPU reference decode (udfs.pixels.decode_rgb) as a uint8 CHW tensor."""
    import torch

    rgb = np.asarray(decode_rgb(data, draft_size=draft))
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))


def tensor_batches(items: Iterable[tuple[object, bytes]], decoder: TensorDecoder,
                   batch_size: int) -> Iterator[tuple[list, object, object]]:
    """(key, bytes) pairs -> (keys, pixels, ready event or None) per batch of at most batch_size inputs.

    On CUDA each batch is decoded and preprocessed on a side stream and an event marks when it is
    ready, so a prefetch thread running this generator overlaps batch n+1's decode with batch n's
    forward on the default stream; the consumer waits on the event before using the pixels.
    """
    import torch

    cuda = str(decoder.device).startswith("cuda")
    stream = torch.cuda.Stream(device=decoder.device) if cuda else None
    chunk: list = []

    def flush():
        if cuda:
            with torch.cuda.stream(stream):
                keys, pixels = decoder.batch(chunk)
                event = torch.cuda.Event()
                event.record(stream)
            return keys, pixels, event
        keys, pixels = decoder.batch(chunk)
        return keys, pixels, None

    for item in items:
        chunk.append(item)
        if len(chunk) >= batch_size:
            keys, pixels, event = flush()
            chunk = []
            if keys:
                yield keys, pixels, event
    if chunk:
        keys, pixels, event = flush()
        if keys:
            yield keys, pixels, event
