#!/usr/bin/python3
"""An ImageNet-like image folder for bench/image_folder and bench/gpu's real-data group:
OUT/train/CLASSk/*.JPEG and OUT/val/CLASSk/*.JPEG, 10 classes, photo-sized JPEGs at quality
90 (500 x 375, every fifth one 375 x 500), about the bytes per pixel of ImageNet's photos:
a smooth random colour field, Fashion-MNIST garments (Debian's dataset-fashion-mnist) placed
on it at random sizes, and sensor-like noise.

    bench/image_folder/make_folder.py OUT [TRAIN_IMAGES (3000)] [VAL_IMAGES (500)]
"""
import gzip
import multiprocessing
import os
import sys

import numpy
from PIL import Image

FASHION = os.environ.get("DSHOST_TEST_FASHION_MNIST", "/usr/share/datasets/fashion-mnist")


def garments():
    with gzip.open(f"{FASHION}/train-images-idx3-ubyte.gz") as f:
        return numpy.frombuffer(f.read()[16:], dtype=numpy.uint8).reshape(-1, 28, 28)


SHIRTS = garments()


def photo(rng, shirts, width, height):
    field = rng.integers(0, 256, (6, 8, 3), dtype=numpy.uint8)
    canvas = Image.fromarray(field).resize((width, height), Image.BICUBIC)
    for _ in range(rng.integers(2, 6)):
        side = int(rng.integers(60, 260))
        garment = Image.fromarray(shirts[rng.integers(len(shirts))]).resize((side, side), Image.BICUBIC)
        tint = Image.new("RGB", (side, side), tuple(int(c) for c in rng.integers(0, 256, 3)))
        canvas.paste(tint, (int(rng.integers(0, width - side // 2)), int(rng.integers(0, height - side // 2))), garment)
    noisy = numpy.asarray(canvas, dtype=numpy.int16) + rng.normal(0, 12, (height, width, 3)).astype(numpy.int16)
    return Image.fromarray(numpy.clip(noisy, 0, 255).astype(numpy.uint8))


def write(job):
    out, part, i = job
    rng = numpy.random.default_rng([i, part == "val"])
    folder = f"{out}/{part}/class{i % 10}"
    os.makedirs(folder, exist_ok=True)
    size = (375, 500) if i % 5 == 4 else (500, 375)
    photo(rng, SHIRTS, *size).save(f"{folder}/{i:06d}.JPEG", quality=90)


def main(out, train=3000, val=500):
    jobs = [(out, part, i) for part, count in (("train", int(train)), ("val", int(val))) for i in range(count)]
    with multiprocessing.Pool() as pool:
        pool.map(write, jobs, chunksize=16)


if __name__ == "__main__":
    main(*sys.argv[1:])
