"""Read the Parquet export with petastorm, in the trainer environment scripts/petastorm_env.sh builds.

    <env>/bin/python scripts/petastorm_read.py <export>/parquet [--expect N]

Petastorm's `make_batch_reader` reads plain Parquet (no Unischema needed); the image bytes column is
decoded to HxWx3 uint8 arrays by a TransformSpec before batching (binary columns cannot become tensors).
Prints one JSON line: rows read, distinct ids, image shapes seen, and whether petastorm's torch
DataLoader was used (only where torch is installed in that environment). Exit status 1 when --expect
is given and the count differs. Self-contained: it imports nothing from realsyn_spark (whose
dependencies this environment does not have), so the decode is the same rule written out: EXIF
orientation applied, transparency on white, 8-bit RGB.
"""
import argparse
import io
import json
import sys
import warnings

# petastorm 0.13.1 drives pyarrow 14's legacy dataset API: one FutureWarning per call, none actionable here.
warnings.filterwarnings("ignore", category=FutureWarning)


def decode(data: bytes):
    import numpy as np
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data)) as image:
        image = ImageOps.exif_transpose(image)
        if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
            rgba = image.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(white, rgba)
        return np.asarray(image.convert("RGB"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("parquet_dir")
    parser.add_argument("--expect", type=int)
    args = parser.parse_args(argv)

    import numpy as np
    import petastorm
    from petastorm import make_batch_reader
    from petastorm.transform import TransformSpec

    def transform(frame):
        frame["shape"] = [np.asarray(decode(b).shape, np.int32) if b is not None else np.zeros(3, np.int32)
                          for b in frame["image_bytes"]]
        return frame.drop(columns=["image_bytes"])

    spec = TransformSpec(transform, edit_fields=[("shape", np.int32, (3,), False)], removed_fields=["image_bytes"])
    url = args.parquet_dir if "://" in args.parquet_dir else "file://" + __import__("os").path.abspath(args.parquet_dir)
    ids, shapes, torch_loader = [], set(), False
    with make_batch_reader(url, schema_fields=["image_id", "image_bytes", "text1"], transform_spec=spec,
                           num_epochs=1, workers_count=2, shuffle_row_groups=False) as reader:
        try:
            from petastorm.pytorch import DataLoader

            torch_loader = True
            batches = ((b["image_id"], b["shape"].numpy()) for b in DataLoader(reader, batch_size=16))
        except ImportError:
            batches = ((b.image_id, b.shape) for b in reader)
        for batch_ids, batch_shapes in batches:
            ids += [i.decode() if isinstance(i, bytes) else str(i) for i in batch_ids]
            shapes.update(tuple(int(v) for v in s) for s in batch_shapes)
    print(json.dumps({"petastorm": petastorm.__version__, "rows": len(ids), "distinct_ids": len(set(ids)),
                      "shapes": sorted(shapes), "torch_dataloader": torch_loader}))
    return 1 if args.expect is not None and (len(ids) != args.expect or len(set(ids)) != args.expect) else 0


if __name__ == "__main__":
    sys.exit(main())
